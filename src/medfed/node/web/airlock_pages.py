"""The steward's airlock pages: held script outputs, one item in full, release or refuse.

``GET /airlock`` lists the items waiting and those decided; ``GET /airlock/{id}`` shows
every output of the run with its verdict (the held ones in full, as the researcher's
script wrote them); ``POST /airlock/{id}/release`` and ``/refuse`` (with a reason) decide
it through :meth:`medfed.node.airlock.Airlock.decide`. The running agent then posts the
run's outcome and records the decision in its run log and the hub's ledger.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from medfed.node.airlock import Airlock
from medfed.node.web.session import CheckedSteward, PageRoute, StewardDep, redirect, render

__all__ = ["router"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/airlock")
def airlock(request: Request, steward: StewardDep) -> Response:
    items = Airlock(steward.config.data_dir).items()
    held = [i for i in items if i.status == "held"]
    decided = [i for i in reversed(items) if i.status != "held"]
    return render(request, "airlock.html", {"held": held, "decided": decided})


@router.get("/airlock/{item_id}")
def airlock_item(item_id: int, request: Request, steward: StewardDep) -> Response:
    item = Airlock(steward.config.data_dir).get(item_id)
    shown = {
        name: json.dumps(entry["data"], indent=2, ensure_ascii=False)
        for name, entry in item.outputs.items()
        if entry.get("data") is not None
    }
    return render(request, "airlock_item.html", {"item": item, "shown": shown})


@router.post("/airlock/{item_id}/release")
def release(item_id: int, steward: CheckedSteward) -> Response:
    Airlock(steward.config.data_dir).decide(item_id, "released")
    return redirect(f"/airlock/{item_id}")


@router.post("/airlock/{item_id}/refuse")
def refuse(
    item_id: int, steward: CheckedSteward, reason: Annotated[str, Form(max_length=2000)] = ""
) -> Response:
    Airlock(steward.config.data_dir).decide(item_id, "refused", reason=reason)
    return redirect(f"/airlock/{item_id}")
