"""Query budgets: per project for statistical tasks (set by the DAC), per user and per
organization for discovery; a request over a budget is a 429 naming the reset time, and
the refusal is kept for the stewards (ledger entry, ``query_refusals``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hubtools import SQLITE_ONLY, Person, World, make_person
from medfed.common.errors import RateLimited
from medfed.hub.services.access.budgets import shown
from medfed.sdk.client import Client

pytestmark = SQLITE_ONLY

TASKS = "/api/tasks"


def budget_path(world: World) -> str:
    return f"/api/access/projects/{world.project_id}/query-budget"


def dac_of_org_b(world: World) -> Person:
    return make_person(world.api, world.admin.headers, "dana", world.org_b, ["dac"])


def task_body(world: World) -> dict[str, Any]:
    return {
        "project_id": world.project_id,
        "algorithm": "count",
        "datasets": ["cohort"],
        "params": {"where": {"column": "age", "op": ">=", "value": 50}},
    }


def ledger(world: World) -> list[dict[str, Any]]:
    with world.app.state.sessionmaker() as session:
        rows = session.execute(sa.text("SELECT body FROM ledger_entries ORDER BY idx"))
        return [json.loads(body) for (body,) in rows]


def test_the_projects_dac_sets_the_budget_and_others_may_not(world: World) -> None:
    api = world.api
    default = api.get(budget_path(world), headers=world.researcher.headers)
    assert default.status_code == 200, default.text
    assert default.json()["default"] is True and default.json()["query_budget"] == 200
    dana = dac_of_org_b(world)  # org B's DAC: the project applied to org B for data
    body = {"query_budget": 3, "window_hours": 12}
    done = api.put(budget_path(world), json=body, headers=dana.headers)
    assert done.status_code == 200, done.text
    state = done.json()
    assert (state["query_budget"], state["window_hours"], state["default"]) == (3, 12.0, False)
    assert state["used"] == 0 and state["left"] == 3
    assert any(e["action"] == "project.query_budget" for e in ledger(world))
    # the researcher (a member), an org admin, a DAC of an organization the project never
    # applied to: none of them may set it
    org_c = api.post("/api/organizations", json={"name": "Org C"}, headers=world.admin.headers)
    other_dac = make_person(api, world.admin.headers, "carl", org_c.json()["id"], ["dac"])
    for person in (world.researcher, world.org_admin, other_dac):
        refused = api.put(
            budget_path(world), json=body | {"query_budget": 1000}, headers=person.headers
        )
        assert refused.status_code == 403, (person.username, refused.text)
    # a non-member who is not one of its DACs does not see it either
    assert api.get(budget_path(world), headers=world.outsider.headers).status_code == 403
    assert api.get(budget_path(world), headers=dana.headers).json()["query_budget"] == 3
    # back to the hub's default
    reset = api.put(budget_path(world), json={"query_budget": None}, headers=dana.headers)
    assert reset.status_code == 200 and reset.json()["default"] is True
    bad = api.put(budget_path(world), json={"query_budget": -1}, headers=dana.headers)
    assert bad.status_code == 422
    missing = api.put(
        "/api/access/projects/999/query-budget", json=body, headers=world.admin.headers
    )
    assert missing.status_code == 404


def test_a_task_over_the_budget_is_429_with_the_reset_time_and_kept_for_stewards(
    world: World,
) -> None:
    api = world.api
    dana = dac_of_org_b(world)
    set_ = {"query_budget": 2, "window_hours": 1}
    assert api.put(budget_path(world), json=set_, headers=dana.headers).status_code == 200
    before = datetime.now(UTC)
    for _ in range(2):
        created = api.post(TASKS, json=task_body(world), headers=world.researcher.headers)
        assert created.status_code == 201, created.text
    tasks = world.count("tasks")
    refused = api.post(TASKS, json=task_body(world), headers=world.researcher.headers)
    assert refused.status_code == 429, refused.text
    body = refused.json()
    assert "query budget of project" in body["detail"] and "2 tasks per 1 h" in body["detail"]
    assert "set by its DAC" in body["detail"] and "next task is possible at" in body["detail"]
    resets = datetime.fromisoformat(body["resets_at"])
    assert before + timedelta(hours=1) <= resets + timedelta(seconds=1)
    assert resets <= datetime.now(UTC) + timedelta(hours=1)
    retry = int(refused.headers["Retry-After"])
    assert 0 < retry <= 3600
    assert world.count("tasks") == tasks  # no task stored
    assert world.count("query_refusals") == 1  # but the request is kept for the stewards
    refusal = [e for e in ledger(world) if e["action"] == "task.refuse"]
    assert len(refusal) == 1
    assert refusal[0]["objects"]["project"] == world.project_id
    assert refusal[0]["objects"]["rule"] == "budget"
    assert refusal[0]["actor"] == f"user:{world.researcher.id}"
    state = api.get(budget_path(world), headers=world.researcher.headers).json()
    assert (state["used"], state["left"]) == (2, 0)
    assert datetime.fromisoformat(state["resets_at"]) == resets
    # bad input is still a 422 that changes nothing, not a budget refusal
    bad = dict(task_body(world), params={"where": {"column": "nosuch", "op": "==", "value": 1}})
    assert api.post(TASKS, json=bad, headers=world.researcher.headers).status_code == 422
    assert world.count("query_refusals") == 1
    # the DAC raises it: tasks run again
    set_["query_budget"] = 3
    assert api.put(budget_path(world), json=set_, headers=dana.headers).status_code == 200
    again = api.post(TASKS, json=task_body(world), headers=world.researcher.headers)
    assert again.status_code == 201


@pytest.mark.hub(project_query_budget=1, project_query_window_hours=2)
def test_the_hubs_default_applies_until_a_dac_sets_one_and_the_sdk_names_the_reset(
    world: World,
) -> None:
    client = Client(
        "http://testserver", world.researcher.token, project=world.project_id, http_client=world.api
    )
    state = client.access.budget(world.project_id)
    assert (state.query_budget, state.window_hours, state.default) == (1, 2.0, True)
    client.tasks.submit("count", datasets=["cohort"], where="age >= 50")
    with pytest.raises(RateLimited) as caught:
        client.tasks.submit("count", datasets=["cohort"], where="age >= 60")
    error = caught.value
    assert error.status_code == 429
    assert "the hub's default" in error.message and "next task is possible at" in error.message
    assert error.resets_at is not None and error.resets_at > datetime.now(UTC)
    assert shown(error.resets_at) in error.message  # to the second, rounded up


def test_a_budget_of_zero_allows_no_task_and_names_no_reset(world: World) -> None:
    dana = dac_of_org_b(world)
    zero = {"query_budget": 0, "window_hours": 24}
    assert world.api.put(budget_path(world), json=zero, headers=dana.headers).status_code == 200
    refused = world.api.post(TASKS, json=task_body(world), headers=world.researcher.headers)
    assert refused.status_code == 429
    assert refused.json()["resets_at"] is None and "Retry-After" not in refused.headers
    assert "until a DAC raises it" in refused.json()["detail"]


@pytest.mark.hub(discovery_budget=5, discovery_org_budget=2)
def test_an_organizations_discovery_budget_is_shared_by_its_users(world: World) -> None:
    body = {"filters": [{"column": "age", "op": ">=", "value": 50}]}
    for node in (world.node_a, world.node_b):
        path = f"/api/datasets/{node.dataset_id}"
        if world.api.get(path, headers=world.admin.headers).json().get("state") == "draft":
            world.api.post(f"{path}/release", headers=world.admin.headers)
    first = world.api.post("/api/discovery/count", json=body, headers=world.outsider.headers)
    assert first.status_code == 201, first.text
    second = world.api.post("/api/discovery/count", json=body, headers=world.org_admin.headers)
    assert second.status_code == 201  # otto and bert: both of org B
    assert second.json()["budget_left"] == 0
    refused = world.api.post("/api/discovery/count", json=body, headers=world.outsider.headers)
    assert refused.status_code == 429
    assert "your organization's 2 queries" in refused.json()["detail"]
    assert refused.json()["resets_at"] is not None and int(refused.headers["Retry-After"]) > 0
    assert any(
        e["action"] == "discovery.refuse" and e["objects"]["organization"] == world.org_b
        for e in ledger(world)
    )
    # another organization's users keep their own budget
    own = world.api.post("/api/discovery/count", json=body, headers=world.researcher.headers)
    assert own.status_code == 201
