"""The node's steward pages: token sign-in, pending requests with source and diff, decisions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medfed.algorithms.learning.envelope import envelope_hash, training_envelope
from medfed.algorithms.learning.examples import TABULAR_LOGREG
from medfed.algorithms.learning.fedtrain import TrainParams
from medfed.algorithms.learning.plan import plan_hash
from medfed.common.errors import Refused
from medfed.node.config import NodeConfig
from medfed.node.plans import PlanApprovals
from medfed.node.web.app import create_app


def _envelope(source: str) -> dict[str, object]:
    params = {"plan": plan_hash(source), "initial_weights": "c" * 64, "columns": ["f0", "label"]}
    return training_envelope(TrainParams.model_validate(params), "cancer")


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def test_the_steward_reviews_and_decides_plan_requests_on_the_node_pages(tmp_path: Path) -> None:
    approvals = PlanApprovals(tmp_path)
    approvals.approve(_envelope(TABULAR_LOGREG), TABULAR_LOGREG, name="logreg")
    edited = TABULAR_LOGREG.replace("torch.sigmoid(", "torch.sigmoid(2 * ")
    request = _envelope(edited)
    who = {"project_id": 4, "task_id": 12, "entitlement": 7, "dataset": "cancer"}
    with pytest.raises(Refused):
        approvals.check(request, edited, name="logreg", who=who)
    digest = envelope_hash(request)

    client = TestClient(
        create_app(NodeConfig(hub_url="http://hub", insecure=True, secret="s", data_dir=tmp_path))
    )
    assert client.get("/plans", follow_redirects=False).headers["location"] == "/login?next=/plans"
    assert client.post("/login", data={"token": "wrong"}).status_code == 401
    token = (tmp_path / "web" / "steward.token").read_text().strip()
    listing = client.post("/login", data={"token": token, "next": "/plans"})
    assert listing.status_code == 200 and digest[:16] in listing.text

    page = client.get(f"/plans/{digest[:12]}")
    assert page.status_code == 200
    assert "pending" in page.text and "cancer" in page.text and "2 * model(x)" in page.text
    assert "+    return torch.sigmoid(2 * model(x))" in page.text.replace("&#39;", "'")
    assert '"initial_weights": "' + "c" * 64 in page.text.replace("&#34;", '"')

    refused = client.post(f"/plans/{digest}/approve", data={"reason": "x"})
    assert refused.status_code == 403 and digest not in approvals.decisions()  # no CSRF
    done = client.post(
        f"/plans/{digest}/approve", data={"reason": "IRB 2024-17", "csrf_token": _csrf(page.text)}
    )
    assert done.status_code == 200 and "approved" in done.text and "IRB 2024-17" in done.text
    assert approvals.decisions()[digest]["decision"] == "approved" and approvals.pending() == {}
    assert approvals.check(request, edited) == digest

    approvals.record_run(digest, task_id=12, run_id=99, round=1, phase="train")
    assert ">99<" in client.get(f"/plans/{digest}").text  # the history of what ran under it
    assert client.get("/plans/ffff").status_code == 404
