"""The steward's plan-request pages: pending requests, one request, decisions, history.

``GET /plans`` lists pending requests and decisions; ``GET /plans/{hash}`` shows one —
who asked (project, task, entitlement, dataset), the envelope, the source and its
unified diff against the plan's earlier approved version, and what ran under it;
``POST /plans/{hash}/approve`` and ``/reject`` decide with a reason. Each reads and
writes through :class:`medfed.node.plans.PlanApprovals` (the same code as the CLI).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from medfed.node.plans import PlanApprovals
from medfed.node.web.session import CheckedSteward, PageRoute, StewardDep, redirect, render

__all__ = ["router"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/plans")
def plans(request: Request, steward: StewardDep) -> Response:
    approvals = PlanApprovals(steward.config.data_dir)
    decisions = sorted(approvals.decisions().items(), key=lambda kv: kv[1]["at"], reverse=True)
    runs = {digest: len(approvals.history(digest)) for digest, _ in decisions}
    context = {"pending": sorted(approvals.pending().items()), "decisions": decisions, "runs": runs}
    return render(request, "plans.html", context)


@router.get("/plans/{digest}")
def plan_request(request: Request, steward: StewardDep, digest: str) -> Response:
    view = PlanApprovals(steward.config.data_dir).request(digest)
    envelope = json.dumps(view["envelope"], indent=2, sort_keys=True)
    return render(request, "plan_request.html", {"view": view, "envelope_json": envelope})


@router.post("/plans/{digest}/approve")
def approve(
    request: Request,
    steward: CheckedSteward,
    digest: str,
    reason: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    approved = PlanApprovals(steward.config.data_dir).decide(digest, "approved", reason=reason)
    return redirect(f"/plans/{approved}")


@router.post("/plans/{digest}/reject")
def reject(
    request: Request,
    steward: CheckedSteward,
    digest: str,
    reason: Annotated[str, Form(min_length=1, max_length=1000)],
) -> Response:
    rejected = PlanApprovals(steward.config.data_dir).decide(digest, "rejected", reason=reason)
    return redirect(f"/plans/{rejected}")
