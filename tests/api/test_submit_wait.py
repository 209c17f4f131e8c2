"""``POST /api/tasks?wait=``: a submission whose answer is held until its task ends.

Against the real hub app (SQLite and, where ``MEDFED_TEST_DATABASE_URL`` names a server,
PostgreSQL): a task that ends within the wait is answered ended, with its result, by the
submission itself — the same view ``GET /api/tasks/{id}`` gives; one that does not is
answered running once the wait passes; a caller whose membership ends while the answer
is held is told no more than the creation told (the task was made: no refusal, no
result); a repeated submission (its ``Idempotency-Key``) is answered at once, not held;
a wait out of range is refused and makes no task.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from hubtools import World, done, mean_output, nodes_answering, wait_listening
from medfed.hub.dispatch import Notifier


@pytest.fixture(autouse=True)
def settled(world: World) -> None:
    wait_listening(world)


def _body(world: World) -> dict[str, Any]:
    return {
        "project_id": world.project_id,
        "algorithm": "mean",
        "datasets": ["cohort"],  # one dataset on node A, one on node B
        "params": {"columns": ["age"]},
    }


def _submit(world: World, wait: float, key: str | None = None) -> httpx.Response:
    headers = dict(world.researcher.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return world.api.post("/api/tasks", params={"wait": wait}, json=_body(world), headers=headers)


def _answer_both(world: World, client: Any = None) -> None:
    """Node A and node B each claim their run and answer it (a mean of ages)."""
    for node, output in (
        (world.node_a, mean_output(10, 300.0)),
        (world.node_b, mean_output(30, 1500.0)),
    ):
        deadline = time.monotonic() + 60
        while (run := world.claim(node)) is None:
            assert time.monotonic() < deadline, "the task's run never reached the node"
            time.sleep(0.01)
        assert world.post_outcome(node, run["run_id"], done(run, output)).status_code == 200


def _held(world: World) -> bool:
    """Whether a submission is holding its answer (subscribed to a task's end)."""
    notifier: Notifier = world.app.state.notifier
    return any(key.startswith("round:") for key in list(notifier._waiters))


def _in_thread(call: Any) -> tuple[threading.Thread, list[httpx.Response]]:
    answered: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answered.append(call()))
    thread.start()
    return thread, answered


def _until_held(world: World, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 60
    while not _held(world):
        assert thread.is_alive() and time.monotonic() < deadline, "the submission never held"
        time.sleep(0.01)


@pytest.fixture
def answering(world: World) -> Iterator[None]:
    """Both nodes long-poll in a thread of their own and answer (a mean of ages)."""
    outputs = {world.node_a.id: mean_output(10, 300.0), world.node_b.id: mean_output(30, 1500.0)}
    with nodes_answering(world, outputs):
        yield


@pytest.mark.usefixtures("answering")
def test_a_task_that_ends_within_the_wait_is_answered_ended_by_its_submission(
    world: World,
) -> None:
    submitted = _submit(world, wait=60)
    assert submitted.status_code == 201, submitted.text
    task = submitted.json()
    assert task["status"] == "completed"
    age = task["result"]["columns"]["age"]
    assert age["n"] == 40 and age["mean"] == pytest.approx(1800.0 / 40, abs=1e-12)
    # exactly what a member reads of the task afterwards
    read = world.api.get(f"/api/tasks/{task['id']}", headers=world.researcher.headers)
    assert read.status_code == 200 and read.json() == task
    assert not _held(world)  # the hold's subscription is gone with its answer


def test_a_task_still_running_when_the_wait_passes_is_answered_running(world: World) -> None:
    started = time.monotonic()
    submitted = _submit(world, wait=0.3)
    assert time.monotonic() - started >= 0.3
    assert submitted.status_code == 201, submitted.text
    task = submitted.json()
    assert task["status"] == "running" and task["result"] is None
    assert len(task["runs"]) == 2 and {r["status"] for r in task["runs"]} == {"pending"}
    assert not _held(world)
    # the task goes on; the answer held nothing back that /wait would not give
    _answer_both(world)
    ended = world.api.get(
        f"/api/tasks/{task['id']}/wait",
        params={"timeout": 30, "progress": "false"},
        headers=world.researcher.headers,
    )
    assert ended.status_code == 200 and ended.json()["status"] == "completed"


def test_a_held_submission_whose_membership_ends_is_told_no_more_than_its_creation(
    world: World,
) -> None:
    thread, answered = _in_thread(lambda: _submit(world, wait=60))
    _until_held(world, thread)
    with world.app.state.sessionmaker() as session:  # the membership ends mid-hold
        session.execute(
            sa.text("DELETE FROM project_members WHERE project_id = :p AND user_id = :u"),
            {"p": world.project_id, "u": world.researcher.id},
        )
        session.commit()
    _answer_both(world)  # the task ends: the hold wakes and finds no membership
    thread.join(60)
    (submitted,) = answered
    # the task was made (201), as it was made: running, no result, no refusal
    assert submitted.status_code == 201, submitted.text
    task = submitted.json()
    assert task["status"] == "running" and task["result"] is None
    assert "completed" not in submitted.text
    assert {r["status"] for r in task["runs"]} == {"pending"}  # as it was made
    refused = world.api.get(f"/api/tasks/{task['id']}", headers=world.researcher.headers)
    assert refused.status_code == 403


def test_a_repeated_submission_is_answered_at_once_not_held(world: World) -> None:
    key = str(uuid.uuid4())
    first = _submit(world, wait=0, key=key)
    assert first.status_code == 201 and first.json()["status"] == "running"
    thread, answered = _in_thread(lambda: _submit(world, wait=60, key=key))
    thread.join(45)  # a hold would last 60 s: the repeat is answered well before
    assert not thread.is_alive(), "the repeat was held"
    (again,) = answered
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "running"
    assert not _held(world)


def test_a_wait_out_of_range_is_refused_and_makes_no_task(world: World) -> None:
    before = world.count("tasks")
    for wait in (-1, 61, "soon"):
        response = world.api.post(
            "/api/tasks", params={"wait": wait}, json=_body(world), headers=world.researcher.headers
        )
        assert response.status_code == 422, response.text
        assert "wait" in response.text
    assert world.count("tasks") == before
