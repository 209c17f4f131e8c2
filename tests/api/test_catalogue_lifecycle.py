"""The dataset lifecycle: the whole transition matrix per role, visibility and usability.

Datasets are registered by node-b (organization B) and moved through the real API; the
authors of a dataset are the stewards and admins of organization B, and the hub admin
(a superuser) may do everything.
"""

from __future__ import annotations

import pytest

from cataloguetools import in_state, move, register, state_of
from hubtools import SQLITE_ONLY, Person, World, bearer, grant_access, make_person
from medfed.hub.services.catalogue.lifecycle import MATRIX, State, Transition

pytestmark = SQLITE_ONLY  # lifecycle checks run before storage; tests/contract covers backends

STATES = [s.value for s in State]
TRANSITIONS = [t.value for t in Transition]
AUTHORS = {"superuser", "org_admin", "steward"}
ROLES = ["superuser", "org_admin", "steward", "dac", "other_admin", "researcher", "anonymous"]


def person(world: World, role: str) -> Person | None:
    if role == "superuser":
        return world.admin
    if role == "org_admin":
        return world.org_admin  # bert: admin of organization B, which holds node-b
    if role == "researcher":
        return world.researcher
    if role == "anonymous":
        return None
    org, roles = {
        "steward": (world.org_b, ["steward"]),
        "dac": (world.org_b, ["dac"]),
        "other_admin": (world.org_a, ["admin"]),  # an admin, but of another organization
    }[role]
    return make_person(world.api, world.admin.headers, f"{role}-user", org, roles)


def expected_state(state: str, transition: str) -> str | None:
    new = MATRIX.get((State(state), Transition(transition)))
    if new is None:
        return None
    if transition == "reactivate" and state == "invalidated":
        return "released"  # this dataset had not been published before
    return new.value


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("transition", TRANSITIONS)
@pytest.mark.parametrize("state", STATES)
def test_transition_matrix_per_role(world: World, state: str, transition: str, role: str) -> None:
    dataset_id = in_state(world, state)
    who = person(world, role)
    before = state_of(world, dataset_id)
    entries = world.count("ledger_entries")
    headers = who.headers if who is not None else {}
    response = move(world, headers, dataset_id, transition, reason="consent withdrawn")
    target = expected_state(state, transition)
    if role in AUTHORS and target is not None:
        assert response.status_code == 200, response.text
        assert response.json()["state"] == target
        assert state_of(world, dataset_id)["state"] == target
        assert world.count("ledger_entries") == entries + 1  # one audit entry per move
        return
    if role == "anonymous":
        assert response.status_code == 401, response.text
    elif role in AUTHORS:
        assert response.status_code == 409, response.text
        assert f"is {state}: cannot {transition}" in response.json()["detail"]
    else:
        assert response.status_code in (403, 404), response.text
        if response.status_code == 403:
            assert "steward or admin of the organization" in response.json()["detail"]
    after = state_of(world, dataset_id)
    assert after == before  # refused: nothing changed
    assert world.count("ledger_entries") == entries


def test_reactivation_returns_to_the_state_before_invalidation(world: World) -> None:
    published = in_state(world, "published")
    released = in_state(world, "released", name="other")
    for dataset_id in (published, released):
        assert move(world, world.org_admin.headers, dataset_id, "invalidate").status_code == 200
    assert move(world, world.org_admin.headers, published, "reactivate").json()["state"] == (
        "published"
    )
    record = move(world, world.org_admin.headers, released, "reactivate").json()
    assert record["state"] == "released" and record["invalidation_reason"] is None


def test_invalidation_needs_a_reason_and_changes_nothing_without(world: World) -> None:
    dataset_id = in_state(world, "released")
    response = world.api.post(
        f"/api/datasets/{dataset_id}/invalidate", json={"reason": "  "}, headers=world.admin.headers
    )
    assert response.status_code == 422 and "needs a reason" in response.json()["detail"]
    assert state_of(world, dataset_id)["state"] == "released"


# ------------------------------------------------------------------------ visibility


def _sees(world: World, who: Person | None, dataset_id: int) -> dict[str, bool]:
    headers = who.headers if who is not None else {}
    record = world.api.get(f"/api/catalogue/{dataset_id}", headers=headers).status_code == 200
    found = world.api.get("/api/catalogue", params={"limit": 200}, headers=headers).json()
    listed = dataset_id in {d["id"] for d in found["results"]}
    return {"record": record, "search": listed}


@pytest.mark.parametrize("state", STATES)
def test_visibility_per_state_and_user(world: World, state: str) -> None:
    dataset_id = in_state(world, state)
    if state in ("released", "published"):
        grant_access(
            world.api, world.admin.headers, world.researcher, world.project_id, [dataset_id]
        )
    outsider = world.outsider  # a researcher of organization B, not entitled
    views = {
        "anonymous": _sees(world, None, dataset_id),
        "outsider": _sees(world, outsider, dataset_id),
        "entitled": _sees(world, world.researcher, dataset_id),
        "author": _sees(world, world.org_admin, dataset_id),
        "superuser": _sees(world, world.admin, dataset_id),
    }
    # who may open the record (search leaves invalidated versions out for everyone)
    expected = {
        "draft": {"author", "superuser"},
        "released": {"entitled", "author", "superuser"},
        "published": {"anonymous", "outsider", "entitled", "author", "superuser"},
        "invalidated": {"author", "superuser"},
    }[state]
    assert {who for who, seen in views.items() if seen["record"]} == expected
    in_search = set() if state == "invalidated" else expected
    assert {who for who, seen in views.items() if seen["search"]} == in_search
    listed = world.api.get("/api/datasets", headers=outsider.headers).json()
    assert (dataset_id in {d["id"] for d in listed}) == ("outsider" in expected)


def test_anonymous_callers_see_published_datasets_only(world: World) -> None:
    published = in_state(world, "published")
    in_state(world, "released", name="hidden")
    found = world.api.get("/api/catalogue").json()
    assert [d["id"] for d in found["results"]] == [published]
    assert found["results"][0]["state"] == "published"
    assert world.api.get(f"/api/datasets/{published}/dcat").status_code == 200
    assert world.api.get("/api/datasets").status_code == 401  # the full list needs a login
    garbage = world.api.get("/api/catalogue", headers=bearer("mfu_not-a-token"))
    assert garbage.status_code == 401  # a token that is sent must be valid


# ----------------------------------------------------------------------- usability


def test_tasks_on_drafts_and_invalidated_datasets_are_refused(world: World) -> None:
    draft = register(world, world.node_a, "fresh")["id"]
    body = {"project_id": world.project_id, "algorithm": "mean", "params": {"columns": ["age"]}}
    tasks = world.count("tasks")
    response = world.api.post(
        "/api/tasks", json={**body, "datasets": [draft]}, headers=world.researcher.headers
    )
    assert response.status_code == 403
    assert "is draft: it has not been released yet" in response.json()["detail"]
    cohort = world.node_a.dataset_id
    assert (
        move(world, world.admin.headers, cohort, "invalidate", "wrong consent").status_code == 200
    )
    response = world.api.post(
        "/api/tasks", json={**body, "datasets": ["node-a/cohort"]}, headers=world.researcher.headers
    )
    assert response.status_code == 403
    assert "invalidated (wrong consent)" in response.json()["detail"]
    assert world.count("tasks") == tasks
    assert move(world, world.admin.headers, cohort, "reactivate").status_code == 200
    assert world.create_task(datasets=["node-a/cohort"])["dataset_ids"] == [cohort]


def test_released_metadata_is_frozen(world: World) -> None:
    draft = in_state(world, "draft")
    path = f"/api/datasets/{draft}/metadata"
    edited = world.api.patch(path, json={"title": "Study"}, headers=world.org_admin.headers)
    assert edited.status_code == 200 and edited.json()["title"] == "Study"
    refused = world.api.patch(path, json={"title": "x"}, headers=world.researcher.headers)
    assert refused.status_code == 404  # a researcher cannot see another organization's draft
    assert move(world, world.org_admin.headers, draft, "release").status_code == 200
    frozen = world.api.patch(path, json={"title": "Other"}, headers=world.org_admin.headers)
    assert frozen.status_code == 409 and "frozen" in frozen.json()["detail"]
    assert state_of(world, draft)["title"] == "Study"
