"""Entitlements enforced at the hub: task creation, run claims, and the signed statement.

Expiry is tested by moving the clock the entitlement service reads
(``medfed.common.timeutil.utcnow`` as imported there): our own clock, not a service.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hubtools import World, done, mean_output
from medfed.common.access_resources import SignedEntitlement
from medfed.hub.db.models import Run
from medfed.hub.services import runs
from medfed.hub.services.access import entitlements
from medfed.node.entitlements import verify_entitlement

pytestmark: list[object] = []  # claims and refusals: every backend


def _task(world: World, **extra: Any) -> Any:
    body = {"project_id": world.project_id, "algorithm": "mean", "datasets": ["cohort"]}
    body["params"] = {"columns": ["age"]}
    body.update(extra)
    return world.api.post("/api/tasks", json=body, headers=world.researcher.headers)


def _application_of(world: World, dataset_id: int) -> int:
    apps = world.api.get(
        "/api/access/applications",
        params={"project_id": world.project_id},
        headers=world.admin.headers,
    ).json()
    return next(a["id"] for a in apps if a["dataset_ids"] == [dataset_id])


def _revoke(world: World, dataset_id: int) -> None:
    app_id = _application_of(world, dataset_id)
    response = world.api.post(
        f"/api/access/applications/{app_id}/revoke",
        json={"comment": "consent withdrawn"},
        headers=world.admin.headers,
    )
    assert response.status_code == 200 and response.json()["state"] == "revoked", response.text


def test_a_project_without_entitlement_cannot_create_a_task(world: World) -> None:
    q = world.api.post("/api/projects", json={"name": "Q"}, headers=world.researcher.headers)
    before = world.count("tasks")
    response = world.api.post(
        "/api/tasks",
        json={"project_id": q.json()["id"], "algorithm": "count", "datasets": ["cohort"]},
        headers=world.researcher.headers,
    )
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert f"dataset {world.node_a.dataset_id} (cohort)" in detail
    assert "no entitlement" in detail
    assert world.count("tasks") == before


def test_an_expired_entitlement_refuses_tasks_when_the_clock_moves(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _task(world).status_code == 201
    later = datetime.now(UTC) + timedelta(days=400)
    monkeypatch.setattr(entitlements, "utcnow", lambda: later)  # the task's check
    monkeypatch.setattr(runs, "utcnow", lambda: later)  # the claim's
    response = _task(world)
    assert response.status_code == 403
    assert "expired on" in response.json()["detail"]
    # the run already queued is refused at claim time too
    assert world.claim(world.node_a) is None


def test_revocation_refuses_new_tasks_naming_the_dataset(world: World) -> None:
    _revoke(world, world.node_b.dataset_id)
    response = _task(world)
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert f"dataset {world.node_b.dataset_id} (cohort)" in detail and "revoked" in detail
    ents = world.api.get(
        "/api/access/entitlements",
        params={"project_id": world.project_id},
        headers=world.researcher.headers,
    ).json()
    assert sorted(e["status"] for e in ents) == ["active", "revoked"]


def test_a_run_already_queued_is_refused_after_revocation(world: World) -> None:
    task = _task(world).json()
    _revoke(world, world.node_b.dataset_id)
    assert world.claim(world.node_b) is None  # refused by the hub, not handed out
    after = world.task(task["id"])
    by_node = {r["node_id"]: r for r in after["runs"]}
    refused = by_node[world.node_b.id]
    assert refused["status"] == "refused" and "revoked" in refused["error"]
    # never leased: no attempt counted, no lease kept (PostgreSQL's claim leases the run in
    # the statement that finds it and hands the lease back on a refusal), no claim logged
    assert refused["attempts"] == 0
    with world.app.state.sessionmaker() as session:
        row = session.get(Run, refused["run_id"])
        assert row is not None
        assert (row.lease_id, row.claimed_at, row.lease_expires_at) == (None, None, None)
        claims = [
            json.loads(body)
            for (body,) in session.execute(sa.text("SELECT body FROM ledger_entries"))
            if json.loads(body)["action"] == "run.claim"
        ]
    assert refused["run_id"] not in [c["objects"]["run"] for c in claims]
    # node A's run is still handed out; once it answers, the task fails naming node B
    assignment = world.claim(world.node_a)
    assert assignment is not None and assignment["entitlement"] is not None
    answer = done(assignment, mean_output(40, 2000.0))
    assert world.post_outcome(world.node_a, assignment["run_id"], answer).status_code == 200
    final = world.task(task["id"])
    assert final["status"] == "failed" and "node-b refused" in final["error"]


def test_claim_carries_a_statement_the_node_can_verify(world: World) -> None:
    task = _task(world).json()
    assignment = world.claim(world.node_a)
    assert assignment is not None and assignment["discovery"] is False
    signed = SignedEntitlement.model_validate(assignment["entitlement"])
    st = signed.statement
    assert (st.project_id, st.dataset_id, st.dataset_name, st.node_id) == (
        world.project_id,
        world.node_a.dataset_id,
        "cohort",
        world.node_a.id,
    )
    hub_key = world.api.get("/api/ledger/keys", headers=world.node_a.headers).json()["hub_key"]
    check = {
        "hub_key": hub_key,
        "node_id": world.node_a.id,
        "project_id": task["project_id"],
        "dataset_id": world.node_a.dataset_id,
        "dataset_name": "cohort",
        "max_age_seconds": 600,
    }
    assert verify_entitlement(signed, now=datetime.now(UTC), **check) is None
    other = {**check, "node_id": world.node_b.id}
    assert "issued for node" in (verify_entitlement(signed, now=datetime.now(UTC), **other) or "")


def test_a_claim_checks_the_entitlement_at_its_own_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's query decides in SQL which entitlement is active at the claim's time:
    the statement carries exactly that entitlement's window, and before the window starts
    the run is refused, naming when it starts."""
    task = _task(world).json()
    held = world.api.get(
        "/api/access/entitlements",
        params={"project_id": world.project_id},
        headers=world.researcher.headers,
    ).json()
    window = {e["dataset_id"]: e for e in held}
    assignment = world.claim(world.node_a)
    assert assignment is not None
    statement = SignedEntitlement.model_validate(assignment["entitlement"]).statement
    mine = window[world.node_a.dataset_id]
    assert statement.entitlement_id == mine["id"]
    assert datetime.fromisoformat(statement.not_before) == datetime.fromisoformat(mine["starts_at"])
    assert datetime.fromisoformat(statement.not_after) == datetime.fromisoformat(mine["ends_at"])
    starts = datetime.fromisoformat(window[world.node_b.dataset_id]["starts_at"])
    earlier = starts - timedelta(seconds=1)
    monkeypatch.setattr(runs, "utcnow", lambda: earlier)
    monkeypatch.setattr(entitlements, "utcnow", lambda: earlier)
    assert world.claim(world.node_b) is None  # refused by the hub, not handed out
    runs_by_node = {r["node_id"]: r for r in world.task(task["id"])["runs"]}
    refused = runs_by_node[world.node_b.id]
    assert refused["status"] == "refused" and "starts on" in refused["error"]
