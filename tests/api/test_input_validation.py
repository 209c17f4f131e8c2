"""Input validation at the edge, on SQLite and PostgreSQL: ids beyond the database range
and control characters answer 422 with the one error model, and change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from hubtools import World, bearer

BIG = 2**31  # one past PostgreSQL's INTEGER
HUGE = 10**20  # past SQLite's 64-bit INTEGER too

# (who, method, path, json body): every row must answer 422
OVERFLOW: list[tuple[str, str, str, Any]] = [
    ("researcher", "GET", f"/api/tasks/{BIG}", None),
    ("researcher", "GET", f"/api/tasks/{HUGE}", None),
    ("researcher", "GET", "/api/tasks/0", None),
    ("researcher", "GET", f"/api/tasks/{BIG}/wait", None),
    ("researcher", "GET", f"/api/tasks?project_id={HUGE}", None),
    ("researcher", "GET", f"/api/projects/{BIG}", None),
    ("researcher", "GET", f"/api/discovery/queries/{HUGE}", None),
    ("researcher", "GET", f"/api/access/applications/{BIG}", None),
    ("researcher", "GET", f"/api/datasets/{HUGE}/versions", None),
    ("anonymous", "GET", f"/api/catalogue/{HUGE}", None),
    ("admin", "DELETE", f"/api/tokens/{BIG}", None),
    ("node", "POST", f"/api/node/runs/{HUGE}/outcome", {"lease_id": "x", "status": "done"}),
    ("researcher", "POST", "/api/tasks", {"project_id": BIG, "algorithm": "mean"}),
    (
        "researcher",
        "POST",
        "/api/tasks",
        {"project_id": 1, "algorithm": "mean", "datasets": [HUGE], "params": {}},
    ),
    (
        "admin",
        "POST",
        "/api/users",
        {"username": "z", "password": "p" * 12, "organization_id": BIG},
    ),
]

NUL = "a\x00b"
# (who, method, path, json body) with a NUL or another control character somewhere
CONTROL: list[tuple[str, str, str, Any]] = [
    ("anonymous", "POST", "/api/auth/login", {"username": NUL, "password": "x"}),
    ("anonymous", "POST", "/api/auth/login", {"username": "rita", "password": NUL}),
    ("researcher", "POST", "/api/projects", {"name": NUL}),
    ("researcher", "POST", "/api/projects", {"name": "bell\x07"}),
    ("researcher", "GET", "/api/catalogue?q=a%00b", None),
    ("researcher", "GET", "/api/datasets/a%00b", None),
    ("admin", "POST", "/api/organizations", {"name": NUL}),
    (
        "researcher",
        "POST",
        "/api/tasks",
        {"project_id": 1, "algorithm": "mean", "datasets": ["cohort"], "params": {"c": NUL}},
    ),
    ("node", "POST", "/api/node/datasets", {"name": NUL, "columns": [], "row_count": 1}),
]


def _headers(world: World, who: str) -> dict[str, str]:
    if who == "anonymous":
        return {}
    if who == "node":
        return bearer(world.node_a.secret)
    person = world.admin if who == "admin" else world.researcher
    return person.headers


def _counts(world: World) -> tuple[int, int, int]:
    admin = world.admin.headers
    return (
        len(world.api.get("/api/projects", headers=admin).json()),
        len(world.api.get("/api/organizations", headers=admin).json()),
        len(world.api.get("/api/users", headers=admin).json()),
    )


def _check_error_body(body: Any) -> None:
    assert isinstance(body["detail"], str) and body["detail"]
    for item in body.get("errors") or []:
        assert isinstance(item["loc"], list) and isinstance(item["msg"], str)


@pytest.mark.parametrize(("who", "method", "path", "body"), OVERFLOW)
def test_ids_beyond_the_database_range_answer_422(
    world: World, who: str, method: str, path: str, body: Any
) -> None:
    before = _counts(world)
    response = world.api.request(method, path, json=body, headers=_headers(world, who))
    assert response.status_code == 422, response.text
    _check_error_body(response.json())
    assert _counts(world) == before


@pytest.mark.parametrize(("who", "method", "path", "body"), CONTROL)
def test_control_characters_answer_422(
    world: World, who: str, method: str, path: str, body: Any
) -> None:
    before = _counts(world)
    response = world.api.request(method, path, json=body, headers=_headers(world, who))
    assert response.status_code == 422, response.text
    _check_error_body(response.json())
    assert "control character" in response.json()["detail"]
    assert _counts(world) == before


def test_the_web_login_form_refuses_a_nul(world: World) -> None:
    response = world.api.post("/login", data={"username": NUL, "password": "x", "csrf_token": "t"})
    assert response.status_code == 422
    assert "control character" in response.json()["detail"]


def test_a_nul_in_a_result_is_refused_and_the_run_stays_claimed(world: World) -> None:
    world.create_task()
    assignment = world.claim(world.node_a)
    assert assignment is not None
    body = {
        "lease_id": assignment["lease_id"],
        "status": "done",
        "output_status": "ok",
        "output": {"label": NUL},
    }
    response = world.post_outcome(world.node_a, assignment["run_id"], body)
    assert response.status_code == 422
    runs = world.all_runs(assignment["task_id"])
    assert [r["status"] for r in runs if r["run_id"] == assignment["run_id"]] == ["claimed"]


def test_validation_errors_list_each_problem_where_the_schema_says(world: World) -> None:
    response = world.api.post("/api/tasks", json={"algorithm": 3}, headers=world.researcher.headers)
    assert response.status_code == 422
    body = response.json()
    _check_error_body(body)
    assert ["body", "project_id"] in [e["loc"] for e in body["errors"]]
    schema = world.api.get("/openapi.json").json()
    documented = schema["paths"]["/api/tasks"]["post"]["responses"]["422"]
    assert documented["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    for status in ("401", "403", "404", "409", "413", "429", "503"):
        assert status in schema["paths"]["/api/tasks"]["post"]["responses"]
