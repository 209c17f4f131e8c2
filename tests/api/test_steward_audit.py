"""The stewards' query audit: nodes send keyed hashes and a rule category with each
outcome, the ledger keeps the hashes, stewards see the queries on their data with the
differencing, subset and budget refusals flagged — and researchers see none of it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from hubtools import SQLITE_ONLY, NodeInfo, Person, World, done, make_person

pytestmark = SQLITE_ONLY

QUERIES = "/api/audit/queries"
FILTER = {
    "and": [
        {"column": "age", "op": ">=", "value": 50},
        {"column": "grade", "op": "in", "value": ["II", "III"]},
    ]
}
FILTER_HASH = "a" * 64
FINGERPRINT = "b" * 64


def steward(world: World, org: int, name: str = "stella") -> Person:
    return make_person(world.api, world.admin.headers, name, org, ["steward"])


def ledger(world: World) -> list[dict[str, Any]]:
    with world.app.state.sessionmaker() as session:
        rows = session.execute(sa.text("SELECT body FROM ledger_entries ORDER BY idx"))
        return [json.loads(body) for (body,) in rows]


def answer(world: World, node: NodeInfo, rule: str | None, n: int | None = None) -> int:
    run = world.claim(node)
    assert run is not None
    if n is None:
        body: dict[str, Any] = {
            "lease_id": run["lease_id"],
            "status": "done",
            "output_status": "suppressed",
        }
    else:
        body = done(run, {"n": n})
    body |= {"filter_hash": FILTER_HASH, "rowset_fingerprint": FINGERPRINT, "rule": rule}
    response = world.post_outcome(node, run["run_id"], body)
    assert response.status_code == 200, response.text
    return int(run["run_id"])


def counted_task(world: World) -> tuple[int, int, int]:
    """A count over both nodes: node A releases it, node B's differencing rule withholds."""
    task = world.create_task("count", params={"where": FILTER})
    run_a = answer(world, world.node_a, "none", 40)
    run_b = answer(world, world.node_b, "differencing")
    return int(task["id"]), run_a, run_b


def test_the_steward_sees_the_queries_on_their_data_with_refusals_flagged(world: World) -> None:
    task_id, run_a, run_b = counted_task(world)
    stella = steward(world, world.org_b)
    response = world.api.get(QUERIES, headers=stella.headers)
    assert response.status_code == 200, response.text
    entries = response.json()
    # only org B's dataset: node A's run is another organization's business
    assert [e["run_id"] for e in entries] == [run_b]
    entry = entries[0]
    assert entry["task_id"] == task_id and entry["project_id"] == world.project_id
    assert entry["project_name"] == "Project P" and entry["researcher"] == "rita"
    assert entry["algorithm"] == "count" and entry["dataset_name"] == "cohort"
    assert entry["node_name"] == "node-b"
    assert entry["filter_text"] == "age >= 50 and grade in ['II', 'III']"
    assert entry["filter_hash"] == FILTER_HASH and entry["rowset_fingerprint"] == FINGERPRINT
    assert entry["decision"] == "withheld" and entry["rule"] == "differencing"
    assert entry["flagged"] is True
    # per project, flagged only
    only = world.api.get(
        QUERIES, params={"project_id": world.project_id, "flagged": True}, headers=stella.headers
    )
    assert [e["run_id"] for e in only.json()] == [run_b]
    assert world.api.get(QUERIES, params={"project_id": 999}, headers=stella.headers).json() == []
    # the hub administrator sees every organization's runs
    every = world.api.get(QUERIES, headers=world.admin.headers).json()
    assert {e["run_id"] for e in every} == {run_a, run_b}
    released = next(e for e in every if e["run_id"] == run_a)
    assert released["decision"] == "released" and released["flagged"] is False
    # a steward may not ask for another organization's data
    other = world.api.get(QUERIES, params={"organization_id": world.org_a}, headers=stella.headers)
    assert other.status_code == 403


def test_the_ledger_entry_of_a_run_holds_the_hashes_and_never_the_rule(world: World) -> None:
    _, run_a, run_b = counted_task(world)
    finished = {e["objects"]["run"]: e for e in ledger(world) if e["action"] == "run.finish"}
    for run_id in (run_a, run_b):
        hashes = finished[run_id]["hashes"]
        assert hashes["filter"] == FILTER_HASH and hashes["rowsets"] == FINGERPRINT
    text = json.dumps([e for e in ledger(world) if e["action"] == "run.finish"])
    assert "differencing" not in text


def test_an_outcome_with_a_bad_hash_or_an_unknown_rule_is_refused(world: World) -> None:
    world.create_task("count", params={})
    run = world.claim(world.node_a)
    assert run is not None
    base = done(run, {"n": 40})
    for extra in ({"filter_hash": "xyz"}, {"rowset_fingerprint": "a" * 63}, {"rule": "why"}):
        response = world.post_outcome(world.node_a, run["run_id"], base | extra)
        assert response.status_code == 422, extra
    assert world.post_outcome(world.node_a, run["run_id"], base).status_code == 200  # old nodes


@pytest.mark.hub(project_query_budget=1)
def test_a_budget_refusal_is_flagged_for_the_stewards_of_the_data_asked_for(world: World) -> None:
    world.create_task("count", params={"where": FILTER})
    body = {
        "project_id": world.project_id,
        "algorithm": "count",
        "datasets": [world.node_b.dataset_id],
        "params": {"where": {"column": "age", "op": "<", "value": 30}},
    }
    refused = world.api.post("/api/tasks", json=body, headers=world.researcher.headers)
    assert refused.status_code == 429
    entries = world.api.get(QUERIES, headers=steward(world, world.org_b).headers).json()
    budget = [e for e in entries if e["rule"] == "budget"]
    assert len(budget) == 1 and budget[0]["flagged"] is True
    assert budget[0]["task_id"] is None and budget[0]["decision"] == "refused at the hub"
    assert budget[0]["filter_text"] == "age < 30" and budget[0]["researcher"] == "rita"
    # node A's steward sees no refusal: that request did not name node A's data
    org_a_view = world.api.get(QUERIES, headers=steward(world, world.org_a, "sam").headers).json()
    assert not [e for e in org_a_view if e["rule"] == "budget"]


def test_researchers_never_see_the_audit_or_a_rule(world: World) -> None:
    task_id, _, _ = counted_task(world)
    for person in (world.researcher, world.outsider, world.org_admin):
        assert world.api.get(QUERIES, headers=person.headers).status_code == 403
        page = world.api.get("/audit/queries", headers=person.headers, follow_redirects=False)
        assert page.status_code in (303, 403)  # bearer tokens are no web session
    task = world.task(task_id)
    assert task["status"] == "completed"
    assert (task["contributing_nodes"], task["withheld_nodes"]) == (1, 1)
    text = json.dumps(task)
    for word in ("differencing", "filter_hash", "rowset_fingerprint", FILTER_HASH, '"rule"'):
        assert word not in text, word
    assert all(r["output_status"] is None for r in task["runs"])
    listed = world.api.get(
        "/api/tasks", params={"project_id": world.project_id}, headers=world.researcher.headers
    )
    assert "differencing" not in listed.text and FILTER_HASH not in listed.text
