"""REMS applications through the real API: transitions allowed and refused per role.

The world already holds approved applications for project P (``build_world``); these
tests work with a second project Q of rita, which has no entitlement yet.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hubtools import COLUMNS, SQLITE_ONLY, Person, World, make_person
from medfed.hub.services.learning.blobs import store_for

pytestmark = SQLITE_ONLY

APPS = "/api/access/applications"


def _ends(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@pytest.fixture
def q(world: World) -> int:
    response = world.api.post(
        "/api/projects", json={"name": "Project Q"}, headers=world.researcher.headers
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@pytest.fixture
def dac_b(world: World) -> Person:
    return make_person(world.api, world.admin.headers, "dora", world.org_b, ["dac"])


def _draft(world: World, project_id: int, **extra: Any) -> dict[str, Any]:
    body = {
        "project_id": project_id,
        "datasets": [world.node_b.dataset_id],
        "title": "Tumour size by grade",
        "purpose": "describe tumour size by grade",
        "ethics_reference": "EC-2026-042",
        "intended_use": {"codes": ["HMB"]},
        "duration_days": 180,
        **extra,
    }
    response = world.api.post(APPS, json=body, headers=world.researcher.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _act(world: World, who: Person, app_id: int, action: str, body: Any = None) -> Any:
    return world.api.post(f"{APPS}/{app_id}/{action}", json=body, headers=who.headers)


def test_draft_submit_return_edit_resubmit_approve_keeps_every_event(
    world: World, q: int, dac_b: Person
) -> None:
    app = _draft(world, q)
    assert app["state"] == "draft" and app["organization_id"] == world.org_b
    assert _act(world, world.researcher, app["id"], "submit").json()["state"] == "submitted"
    returned = _act(world, dac_b, app["id"], "return", {"comment": "shorten to 90 days"})
    assert returned.status_code == 200 and returned.json()["state"] == "returned"
    edited = world.api.patch(
        f"{APPS}/{app['id']}", json={"duration_days": 90}, headers=world.researcher.headers
    )
    assert edited.status_code == 200 and edited.json()["duration_days"] == 90
    assert _act(world, world.researcher, app["id"], "submit").json()["state"] == "submitted"
    approved = _act(world, dac_b, app["id"], "approve", {"ends_at": _ends(60), "comment": "ok"})
    assert approved.status_code == 200, approved.text
    data = approved.json()
    assert data["state"] == "approved" and data["ends_at"] is not None
    events = [(e["event"], e["from_state"], e["to_state"], e["actor_id"]) for e in data["events"]]
    assert events == [
        ("create", None, "draft", world.researcher.id),
        ("submit", "draft", "submitted", world.researcher.id),
        ("return", "submitted", "returned", dac_b.id),
        ("edit", "returned", "returned", world.researcher.id),
        ("submit", "returned", "submitted", world.researcher.id),
        ("approve", "submitted", "approved", dac_b.id),
    ]
    assert data["events"][2]["comment"] == "shorten to 90 days"
    ents = world.api.get(
        "/api/access/entitlements", params={"project_id": q}, headers=world.researcher.headers
    ).json()
    assert [(e["dataset_id"], e["status"]) for e in ents] == [(world.node_b.dataset_id, "active")]
    # the DAC sees it too; an outsider of the project does not
    assert world.api.get(f"{APPS}/{app['id']}", headers=dac_b.headers).status_code == 200
    assert world.api.get(f"{APPS}/{app['id']}", headers=world.outsider.headers).status_code == 404


def test_refused_transitions_name_the_rule_and_change_nothing(
    world: World, q: int, dac_b: Person
) -> None:
    dac_a = make_person(world.api, world.admin.headers, "dan", world.org_a, ["dac"])
    app = _draft(world, q)
    path = f"{APPS}/{app['id']}"
    # a DAC cannot decide a draft; nobody may approve before submission
    response = _act(world, dac_b, app["id"], "approve", {"ends_at": _ends(30)})
    assert response.status_code == 404  # a draft is the applicant's own
    _act(world, world.researcher, app["id"], "submit")
    before = world.count("access_events")
    cases = [
        (world.researcher, "approve", {"ends_at": _ends(30)}, 403, "DAC member"),
        (dac_a, "approve", {"ends_at": _ends(30)}, 404, "not found"),  # not their data
        (dac_b, "approve", {"ends_at": _ends(400)}, 422, "after the 180 days"),
        (dac_b, "approve", {"ends_at": _ends(-1)}, 422, "not in the future"),
        (dac_b, "approve", {}, 422, "ends_at"),
        (dac_b, "return", {"comment": " "}, 422, "needs a comment"),
        (dac_b, "revoke", {}, 409, "cannot revoke"),
        (world.researcher, "submit", None, 409, "cannot submit"),
        (world.outsider, "close", {}, 404, "not found"),
        (dac_b, "frobnicate", {}, 404, "no action"),
    ]
    for who, action, body, code, needle in cases:
        response = _act(world, who, app["id"], action, body)
        assert response.status_code == code, (action, response.text)
        assert needle in response.json()["detail"], (action, response.text)
    assert world.count("access_events") == before
    assert world.api.get(path, headers=world.researcher.headers).json()["state"] == "submitted"
    # edits only while draft or returned
    edit = world.api.patch(path, json={"duration_days": 10}, headers=world.researcher.headers)
    assert edit.status_code == 409 and "only a draft or a returned" in edit.json()["detail"]
    # reject is final; the applicant can close drafts but not rejected ones
    assert _act(world, dac_b, app["id"], "reject", {"comment": "no"}).json()["state"] == "rejected"
    assert _act(world, world.researcher, app["id"], "close", {}).status_code == 409
    assert world.count("entitlements") == 2  # only the world's own grants


def test_bad_applications_store_nothing(world: World, q: int) -> None:
    before = world.count("access_applications")
    cases = [
        (
            {"datasets": [world.node_a.dataset_id, world.node_b.dataset_id]},
            422,
            "one application per organization",
        ),
        ({"datasets": [9999]}, 404, "dataset 9999"),
        ({"intended_use": {"codes": ["XYZ"]}}, 422, "unknown DUO code 'XYZ'"),
        ({"intended_use": {"codes": ["NCU"]}}, 422, "name the purpose"),
        ({"duration_days": 0}, 422, "duration_days"),
    ]
    for extra, code, needle in cases:
        body = {
            "project_id": q,
            "datasets": [world.node_b.dataset_id],
            "purpose": "p",
            "duration_days": 30,
            **extra,
        }
        response = world.api.post(APPS, json=body, headers=world.researcher.headers)
        assert response.status_code == code, response.text
        assert needle in response.json()["detail"]
    other = world.api.post(
        APPS,
        json={
            "project_id": q,
            "datasets": [world.node_b.dataset_id],
            "purpose": "p",
            "duration_days": 3,
        },
        headers=world.outsider.headers,
    )
    assert other.status_code == 403 and "not a member" in other.json()["detail"]
    no_ethics = _draft(world, q, ethics_reference="")
    response = _act(world, world.researcher, no_ethics["id"], "submit")
    assert response.status_code == 422 and "ethics approval reference" in response.json()["detail"]
    assert world.count("access_applications") == before + 1


def test_duo_mismatches_are_computed_at_submission_for_the_dac(
    world: World, q: int, dac_b: Person
) -> None:
    body = {"name": "cohort2", "columns": COLUMNS, "row_count": 100}
    registered = world.api.post("/api/node/datasets", json=body, headers=world.node_b.headers)
    assert registered.status_code == 200, registered.text
    dataset = registered.json()["id"]
    meta = world.api.patch(
        f"/api/datasets/{dataset}/metadata",
        json={"duo_codes": ["HMB", "NCU", "COL"]},
        headers=world.admin.headers,
    )
    assert meta.status_code == 200, meta.text
    if registered.json()["state"] == "draft":
        released = world.api.post(f"/api/datasets/{dataset}/release", headers=world.admin.headers)
        assert released.status_code == 200, released.text
    app = _draft(world, q, datasets=[dataset], intended_use={"codes": ["POA"], "commercial": True})
    assert app["mismatches"] == []  # computed at submission
    submitted = _act(world, world.researcher, app["id"], "submit").json()
    problems = submitted["mismatches"]
    assert len(problems) == 3, problems
    assert all(p.startswith(f"dataset {dataset} (cohort2): ") for p in problems)
    assert "POA" in problems[0] and "not allowed" in problems[0]
    assert any("NCU" in p and "commercial" in p for p in problems)
    assert any("COL" in p and "collaboration statement" in p for p in problems)
    due = world.api.get("/api/access/due", headers=dac_b.headers).json()
    assert [d["application"]["mismatches"] for d in due["pending"]] == [problems]


def test_ethics_file_is_stored_by_its_sha256(world: World, q: int) -> None:
    app = _draft(world, q)
    content = b"%PDF-1.4 ethics committee approval EC-2026-042"
    response = world.api.post(
        f"{APPS}/{app['id']}/ethics-file",
        files={"file": ("approval.pdf", content, "application/pdf")},
        headers=world.researcher.headers,
    )
    assert response.status_code == 200, response.text
    digest = hashlib.sha256(content).hexdigest()
    assert response.json()["ethics_file_sha256"] == digest
    assert response.json()["ethics_file_name"] == "approval.pdf"
    # in the hub's blob store (PostgreSQL's on PostgreSQL: every hub process sees it)
    assert store_for(world.app.state.settings).read(digest) == content


def test_due_view_lists_pending_with_age_and_entitlements_ending_soon(
    world: World, q: int, dac_b: Person
) -> None:
    app = _draft(world, q)
    _act(world, world.researcher, app["id"], "submit")
    due = world.api.get("/api/access/due", headers=dac_b.headers)
    assert due.status_code == 200
    pending = due.json()["pending"]
    assert [p["application"]["id"] for p in pending] == [app["id"]]
    assert 0 <= pending[0]["age_days"] < 0.1
    assert due.json()["ending"] == []  # the world's grants run for a year
    _act(world, dac_b, app["id"], "approve", {"ends_at": _ends(20)})
    due = world.api.get("/api/access/due", headers=dac_b.headers).json()
    assert due["pending"] == []
    assert [(e["project_id"], e["dataset_id"]) for e in due["ending"]] == [
        (q, world.node_b.dataset_id)
    ]
    refused = world.api.get("/api/access/due", headers=world.researcher.headers)
    assert refused.status_code == 403 and "role dac" in refused.json()["detail"]
