"""Bad input gets a 4xx whose ``detail`` names the problem, and nothing is stored.

Task requests are checked in full (project, algorithm, datasets, parameters, filter
against every dataset's columns) before anything is written; a node's dataset
registration is checked before it touches the catalogue.
"""

from __future__ import annotations

from typing import Any

import pytest

from hubtools import COLUMNS, SQLITE_ONLY, World

pytestmark = SQLITE_ONLY  # these checks run before storage; tests/contract covers backends

DROP = object()  # a case's marker for "leave this field out of the body"


def where(f: Any) -> dict[str, Any]:
    return {"params": {"columns": ["age"], "where": f}}


def histogram(**params: Any) -> dict[str, Any]:
    return {"algorithm": "histogram", "params": {"column": "age", "bins": [0, 50, 100], **params}}


TASK_CASES: list[tuple[str, dict[str, Any], int, list[str]]] = [
    # id, changes to a valid ``mean of age`` request, status, fragments of ``detail``
    ("unknown-column", {"params": {"columns": ["weight"]}}, 422, ["unknown column 'weight'"]),
    ("mean-of-string", {"params": {"columns": ["grade"]}}, 422, ["'grade' is string, not numeric"]),
    ("column-twice", {"params": {"columns": ["age", "age"]}}, 422, ["named twice"]),
    ("missing-columns", {"params": {}}, 422, ["columns", "Field required"]),
    ("unknown-parameter", {"params": {"columns": ["age"], "colums": 1}}, 422, ["colums"]),
    ("params-not-object", {"params": [1, 2]}, 422, ["params"]),
    ("bad-operator", where({"column": "age", "op": "~", "value": 1}), 422, ["operator '~'"]),
    ("empty-and", where({"and": []}), 422, ["'and' must be a non-empty list"]),
    ("and-with-more-keys", where({"and": [], "or": []}), 422, ["only key"]),
    ("filter-not-object", where("age > 3"), 422, ["expected an object, got str"]),
    ("in-without-list", where({"column": "grade", "op": "in", "value": "A"}), 422, ["list"]),
    ("unknown-filter-column", where({"column": "w", "op": ">", "value": 1}), 422, ["column 'w'"]),
    (
        "string-vs-integer",
        where({"column": "age", "op": ">", "value": "old"}),
        422,
        ["column 'age' is integer", "'old'"],
    ),
    (
        "number-vs-string",
        where({"column": "grade", "op": "==", "value": 3}),
        422,
        ["column 'grade' is string", "3"],
    ),
    ("unknown-dataset-name", {"datasets": ["nowhere"]}, 404, ["dataset 'nowhere' not found"]),
    ("unknown-dataset-id", {"datasets": [999]}, 404, ["dataset 999 not found"]),
    ("unknown-node-dataset", {"datasets": ["node-z/cohort"]}, 404, ["'node-z/cohort'"]),
    ("one-unknown-of-two", {"datasets": ["node-a/cohort", "ghost"]}, 404, ["'ghost'"]),
    ("empty-datasets", {"datasets": []}, 422, ["datasets"]),
    ("dataset-not-a-ref", {"datasets": [{"id": 1}]}, 422, ["datasets"]),
    ("unknown-algorithm", {"algorithm": "meen"}, 422, ["unknown algorithm 'meen'", "mean"]),
    ("empty-algorithm", {"algorithm": ""}, 422, ["algorithm"]),
    ("missing-algorithm", {"algorithm": DROP}, 422, ["algorithm", "Field required"]),
    ("missing-datasets", {"datasets": DROP}, 422, ["datasets", "Field required"]),
    ("missing-project", {"project_id": DROP}, 422, ["project_id", "Field required"]),
    ("unknown-project", {"project_id": 999}, 404, ["project 999 not found"]),
    ("bins-decreasing", histogram(bins=[50, 20]), 422, ["bins", "strictly increasing"]),
    ("bins-equal", histogram(bins=[1, 1, 2]), 422, ["strictly increasing (1.0 then 1.0)"]),
    ("bins-one-edge", histogram(bins=[10]), 422, ["bins", "at least 2"]),
    ("bins-not-numbers", histogram(bins=["a", "b"]), 422, ["bins"]),
    ("bins-missing", {"algorithm": "histogram", "params": {"column": "age"}}, 422, ["bins"]),
    ("histogram-of-string", histogram(column="grade"), 422, ["'grade'", "not numeric"]),
]


def task_body(world: World, changes: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_id": world.project_id,
        "algorithm": "mean",
        "datasets": ["cohort"],
        "params": {"columns": ["age"]},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


@pytest.mark.parametrize(
    ("changes", "status", "fragments"),
    [pytest.param(c, s, f, id=i) for i, c, s, f in TASK_CASES],
)
def test_bad_task_request_is_rejected_naming_the_problem_and_stores_nothing(
    world: World, changes: dict[str, Any], status: int, fragments: list[str]
) -> None:
    world.create_task()  # a task that is stored, so "nothing more" is not "nothing at all"
    before = (world.count("tasks"), world.count("runs"))
    response = world.api.post(
        "/api/tasks", json=task_body(world, changes), headers=world.researcher.headers
    )
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for fragment in fragments:
        assert fragment in detail, detail
    assert (world.count("tasks"), world.count("runs")) == before


def test_valid_request_after_bad_ones_is_stored(world: World) -> None:
    """The baseline of the cases above: the unchanged request is accepted."""
    response = world.api.post(
        "/api/tasks", json=task_body(world, {}), headers=world.researcher.headers
    )
    assert response.status_code == 201, response.text
    assert (world.count("tasks"), world.count("runs")) == (1, 2)


def test_malformed_json_body_is_422(world: World) -> None:
    response = world.api.post(
        "/api/tasks",
        content=b'{"project_id": 1,',
        headers={**world.researcher.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "JSON" in response.json()["detail"]
    assert world.count("tasks") == 0


# ------------------------------------------------------------------ dataset registration


REGISTRATION_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("empty-columns", {"columns": []}, ["columns", "at least 1"]),
    ("missing-columns", {"columns": DROP}, ["columns", "Field required"]),
    (
        "bad-type",
        {"columns": [{"name": "age", "type": "blob"}]},
        ["columns.0.type", "'integer'"],
    ),
    ("column-without-name", {"columns": [{"type": "integer"}]}, ["columns.0.name"]),
    ("column-empty-name", {"columns": [{"name": "", "type": "integer"}]}, ["columns.0.name"]),
    ("duplicate-column", {"columns": [*COLUMNS, COLUMNS[0]]}, ["columns", "'age'", "twice"]),
    ("missing-name", {"name": DROP}, ["name", "Field required"]),
    ("bad-name", {"name": "../etc"}, ["name", "pattern"]),
    ("negative-row-count", {"row_count": -1}, ["row_count"]),
]


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [pytest.param(c, f, id=i) for i, c, f in REGISTRATION_CASES],
)
def test_bad_dataset_registration_is_422_and_changes_nothing(
    world: World, changes: dict[str, Any], fragments: list[str]
) -> None:
    headers = world.admin.headers
    before = world.api.get("/api/datasets", headers=headers).json()
    body = {"name": "cohort", "description": "changed", "columns": COLUMNS, "row_count": 7}
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not DROP}
    response = world.api.post("/api/node/datasets", json=body, headers=world.node_a.headers)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for fragment in fragments:
        assert fragment in detail, detail
    assert world.api.get("/api/datasets", headers=headers).json() == before


# ------------------------------------------------------------------------ node outcomes


OUTCOME_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("done-without-output-status", {"output_status": DROP}, ["output_status 'ok' or 'suppressed'"]),
    ("ok-without-output", {"output": DROP}, ["an ok output needs its output"]),
    ("suppressed-with-values", {"output_status": "suppressed"}, ["carries no values"]),
    ("unknown-status", {"status": "finished"}, ["status", "'done'"]),
    ("unknown-output-status", {"output_status": "partial"}, ["output_status"]),
    ("output-not-object", {"output": [1, 2]}, ["output"]),
    ("missing-lease", {"lease_id": DROP}, ["lease_id", "Field required"]),
]


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [pytest.param(c, f, id=i) for i, c, f in OUTCOME_CASES],
)
def test_bad_outcome_is_422_and_leaves_the_run_claimed(
    world: World, changes: dict[str, Any], fragments: list[str]
) -> None:
    task = world.create_task(datasets=["node-a/cohort"])
    assignment = world.claim(world.node_a)
    assert assignment is not None
    good = {
        "lease_id": assignment["lease_id"],
        "status": "done",
        "output_status": "ok",
        "output": {"rows": 5, "n": {"age": 5}, "stats": {"age": {"sum": 50.0}}},
    }
    body = {k: v for k, v in {**good, **changes}.items() if v is not DROP}
    response = world.post_outcome(world.node_a, assignment["run_id"], body)
    assert response.status_code == 422, response.text
    for fragment in fragments:
        assert fragment in response.json()["detail"], response.json()["detail"]
    (run,) = world.task(task["id"])["runs"]
    assert (run["status"], run["output_status"]) == ("claimed", None)

    accepted = world.post_outcome(world.node_a, assignment["run_id"], good)
    assert accepted.status_code == 200  # the lease still holds: a correct answer goes in
    assert world.task(task["id"])["status"] == "completed"
