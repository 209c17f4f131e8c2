"""A transaction serves, before its commit, the long polls it is about to wake.

Against the real hub app (SQLite and, where ``MEDFED_TEST_DATABASE_URL`` names a server,
PostgreSQL): a node whose long poll waits when a task is submitted gets its run from the
submission's transaction — the run is claimed (leased, its ledger entry written) the
moment the submission commits, before any poll could claim it — and the poll answers it;
a node without a waiting poll finds its run pending and claims it as before. A run handed
to a poll whose node has gone (its connection closed over real HTTP) lapses at once and
goes back out through the sweeper, to the node's next poll, as a lost claim does. The
answer that closes a round claims the next round's run of a node whose poll waits, in
the answer's own transaction (a bisection's second round, here). A
submission holding its answer for the task's end gets the ended task from the
transaction that ended it (read there, with the access check): it reads nothing itself.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from hubtools import (
    NodeInfo,
    World,
    done,
    ledger_claims,
    mean_output,
    statements,
    wait_listening,
)
from livehub import serve_app
from medfed.common.timeutil import aware, utcnow
from medfed.hub.app import _sweep_once
from medfed.hub.db.models import Run, Task
from medfed.hub.db.session import READ_ONLY
from medfed.hub.handoff import Handoffs


@pytest.fixture(autouse=True)
def settled(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    wait_listening(world)
    # a waiter re-reads every recheck_seconds (0.05 s in tests), unparked while it reads:
    # here the waits park once, so a transaction finds them however slow the machine
    settings = world.app.state.settings
    monkeypatch.setattr(settings, "recheck_seconds", 600.0)
    monkeypatch.setattr(settings, "long_poll_seconds", 120.0)
    while world.claim(world.node_a) is not None:  # nothing left from the set-up
        pass


def _parked(world: World, key: str, alive: Callable[[], bool]) -> None:
    handoffs: Handoffs = world.app.state.handoffs
    deadline = time.monotonic() + 60
    while handoffs.waiting(key) == 0:
        assert alive() and time.monotonic() < deadline, "the poll never parked"
        time.sleep(0.01)


def _polling(world: World, node: NodeInfo) -> tuple[threading.Thread, list[httpx.Response]]:
    """The node's long poll (30 s) in a thread, once it is parked; its answer, when it has
    one, in the list."""
    answered: list[httpx.Response] = []
    poll = threading.Thread(
        target=lambda: answered.append(
            world.api.get("/api/node/runs/next", params={"wait": 30}, headers=node.headers)
        )
    )
    poll.start()
    _parked(world, f"node:{node.id}", poll.is_alive)
    return poll, answered


def _runs(world: World, task_id: int) -> dict[int, Any]:
    """The task's runs by node, read through a connection of their own."""
    with world.app.state.engine.connect() as connection:
        rows = connection.execute(
            sa.select(Run.node_id, Run.status, Run.lease_id, Run.lease_expires_at).where(
                Run.task_id == task_id
            )
        ).all()
    return {row.node_id: row for row in rows}


def test_a_parked_poll_gets_its_run_claimed_in_the_submissions_transaction(
    world: World,
) -> None:
    poll, answered = _polling(world, world.node_a)

    # the runs as the submission's commit left them, before anybody was woken by it
    at_commit: list[dict[int, Any]] = []
    made: set[int] = set()

    def storing(session: Session, instance: object) -> None:
        if isinstance(instance, Task):  # the task stored (tasks.store_task) goes in
            made.add(id(session))

    def committed(session: Session) -> None:
        if id(session) in made:
            task_id = next(o.id for o in session.identity_map.values() if isinstance(o, Task))
            at_commit.append(_runs(world, task_id))

    hooks = (("after_attach", storing), ("after_commit", committed))
    for name, hook in hooks:
        sa.event.listen(Session, name, hook)
    try:
        task = world.create_task()  # runs on node A (its poll parked) and node B (none)
    finally:
        for name, hook in hooks:
            sa.event.remove(Session, name, hook)
    poll.join(60)
    assert not poll.is_alive()

    (runs,) = at_commit
    assert runs[world.node_a.id].status == "claimed"
    assert runs[world.node_b.id].status == "pending"  # no poll of node B waited
    got = answered[0]
    assert got.status_code == 200, got.text
    assignment = got.json()
    assert assignment["task_id"] == task["id"]
    assert assignment["lease_id"] == runs[world.node_a.id].lease_id
    assert assignment["attempt"] == 1
    assert assignment["task_nodes"] == 2  # counted in the transaction that made the task
    # the creator's answer shows the runs as made, before the hand-over
    assert {r["status"] for r in task["runs"]} == {"pending"}
    # node B claims its own run as before
    other = world.claim(world.node_b)
    assert other is not None and other["task_id"] == task["id"]
    # the hand-over wrote its claim to the ledger like any claim, by the node
    claims = ledger_claims(world, assignment["run_id"])
    assert [c["actor"] for c in claims] == [f"node:{world.node_a.id}"]


def test_the_answer_to_a_handed_run_asks_no_claim_where_the_claim_saw_no_more(
    world: World,
) -> None:
    """The handed claim saw no other run for node A: its answer with ``?next=true`` runs
    no claim (the poll noted "nothing" as of the submission's own wake-up) and answers
    ``next: null``; a run made after that still reaches node A's next claim."""
    poll, answered = _polling(world, world.node_a)
    task = world.create_task(datasets=[world.node_a.dataset_id])
    poll.join(60)
    assert not poll.is_alive()
    run = answered[0].json()
    assert run["task_id"] == task["id"]
    with statements(world) as seen:
        answer = world.api.post(
            f"/api/node/runs/{run['run_id']}/outcome",
            params={"next": "true"},
            json=done(run, mean_output(10, 300.0)),
            headers=world.node_a.headers,
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "done", "next": None}
    assert seen  # the answer's own statements were seen
    assert [s for s in seen if "AS more" in s] == []  # none is the claim's query
    later = world.create_task(datasets=[world.node_a.dataset_id])
    again = world.claim(world.node_a)
    assert again is not None and again["task_id"] == later["id"]


def test_a_run_handed_to_a_poll_whose_node_went_away_goes_back_out(world: World) -> None:
    with serve_app(world.app) as url:
        where = urlparse(url)
        conn = socket.create_connection((where.hostname, where.port), timeout=30)
        conn.sendall(
            (
                "GET /api/node/runs/next?wait=60 HTTP/1.1\r\n"
                f"Host: {where.hostname}:{where.port}\r\n"
                f"Authorization: Bearer {world.node_a.secret}\r\n\r\n"
            ).encode()
        )
        _parked(world, f"node:{world.node_a.id}", lambda: True)
        conn.close()  # the node goes away while its poll waits
        # a request answered after the close: the server's loop has taken the closed
        # connection's end of file (it was in the socket before this request's bytes)
        assert httpx.get(f"{url}/api/health", timeout=60).status_code == 200
        lease = world.app.state.settings.lease_seconds
        assert lease >= 20  # a lapse is told from the lease running out
        task = world.create_task()
        deadline = time.monotonic() + lease / 2
        while True:  # the handed claim is found abandoned and its lease ends now
            run = _runs(world, task["id"])[world.node_a.id]
            if run.status == "claimed" and aware(run.lease_expires_at) <= utcnow():
                break
            assert time.monotonic() < deadline, run
            time.sleep(0.02)
        _sweep_once(world.app)  # the sweeper's pass: the run is pending again
        assert _runs(world, task["id"])[world.node_a.id].status == "pending"
        again = world.claim(world.node_a)
        assert again is not None and again["task_id"] == task["id"]
        assert again["attempt"] == 2


def test_a_held_submission_gets_the_end_from_the_transaction_that_ended_it(
    world: World,
) -> None:
    views: list[bool] = []  # for each read of a task as a member sees it: read-only?

    def note(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "AS answered" in statement:  # tasks.checked_view (its access check included)
            views.append(bool(connection.get_execution_options().get(READ_ONLY)))

    body = {
        "project_id": world.project_id,
        "algorithm": "mean",
        "datasets": ["cohort"],
        "params": {"columns": ["age"]},
    }
    engine = world.app.state.engine
    sa.event.listen(engine, "before_cursor_execute", note)
    answered: list[httpx.Response] = []
    try:
        submit = threading.Thread(
            target=lambda: answered.append(
                world.api.post(
                    "/api/tasks",
                    params={"wait": 60},
                    json=body,
                    headers=world.researcher.headers,
                )
            )
        )
        submit.start()
        runs = []
        for node in (world.node_a, world.node_b):
            deadline = time.monotonic() + 60
            while (run := world.claim(node)) is None:
                assert submit.is_alive() and time.monotonic() < deadline
                time.sleep(0.01)
            runs.append((node, run))
        _parked(world, f"round:{runs[0][1]['task_id']}", submit.is_alive)
        for node, run in runs:
            output = mean_output(10, 300.0) if node is world.node_a else mean_output(30, 900.0)
            assert world.post_outcome(node, run["run_id"], done(run, output)).status_code == 200
        submit.join(60)
        assert not submit.is_alive()
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
    got = answered[0]
    assert got.status_code == 201, got.text
    task = got.json()
    assert task["status"] == "completed" and task["result"] is not None
    assert (
        task == world.api.get(f"/api/tasks/{task['id']}", headers=world.researcher.headers).json()
    )
    # one read of the task for its caller, in the answer's (writing) transaction; none of
    # its own (a read-only session) by the held submission
    assert views == [False]


def test_the_answer_that_closes_a_round_claims_the_next_for_a_waiting_poll(world: World) -> None:
    task = world.create_task("quantiles", params={"column": "age", "probs": [0.5]})
    first = {}
    for node in (world.node_a, world.node_b):
        run = world.claim(node)
        assert run is not None and run["task_id"] == task["id"] and run["round"] == 0
        first[node.id] = run
    # node B answers round 0 and then waits for round 1
    bounds = {"n": 40, "bounds": [20.0, 80.0], "lt": [], "le": []}
    answer_b = done(first[world.node_b.id], bounds)
    assert (
        world.post_outcome(world.node_b, first[world.node_b.id]["run_id"], answer_b).status_code
        == 200
    )
    poll, answered = _polling(world, world.node_b)

    # at each commit, node B's round-1 run as it was (from the first commit that made it)
    seen: list[str] = []

    def committed(session: Session) -> None:
        with world.app.state.engine.connect() as connection:
            status = connection.scalar(
                sa.select(Run.status).where(
                    Run.task_id == task["id"], Run.node_id == world.node_b.id, Run.round == 1
                )
            )
        if status is not None and not seen:
            seen.append(status)

    sa.event.listen(Session, "after_commit", committed)
    try:  # node A's answer closes round 0 and makes round 1
        answer_a = done(
            first[world.node_a.id], {"n": 30, "bounds": [10.0, 70.0], "lt": [], "le": []}
        )
        assert (
            world.post_outcome(world.node_a, first[world.node_a.id]["run_id"], answer_a).status_code
            == 200
        )
    finally:
        sa.event.remove(Session, "after_commit", committed)
    poll.join(60)
    assert not poll.is_alive()
    assert seen == ["claimed"]  # claimed by the transaction that made it
    got = answered[0]
    assert got.status_code == 200, got.text
    assert got.json()["task_id"] == task["id"] and got.json()["round"] == 1
