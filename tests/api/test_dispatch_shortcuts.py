"""What a run costs the hub less of: hinted polls and one round check per batch.

A node's poll that follows one that found nothing reads nothing until a wake-up of the
node's key arrives (``medfed.hub.dispatch.Notifier.known``); a claim notes whether more
runs wait. A run made without a wake-up (a lost notification) is found after the
listener's outage ends or the hint's age passes. A batch of answers to one task checks
its round once (``medfed.hub.services.tasks.defer_rounds``) and still completes it. An
answer posted with ``?next=true`` carries the node's next run (claimed in the answer's
own transaction; a refused answer claims nothing). A submit reads the task view it
answers with in the task's own transaction, before its commit, and begins no other. A
wait for the end alone is woken when a round closes, not by each answer, and checks the
caller's membership in the statement that reads the progress, on every pass.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from hubtools import World, done, ledger_claims, mean_output, statements, wait_listening
from medfed.common.resources import RunOutcome
from medfed.hub.api.routes import node_api
from medfed.hub.api.write_batches import WriteBatches
from medfed.hub.db.models import Node, Task
from medfed.hub.dispatch import Notifier
from medfed.hub.services import task_nodes
from medfed.hub.services import tasks as task_service


@pytest.fixture(autouse=True)
def settled(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    wait_listening(world)
    # a hint lasts 8 s; a loaded machine may take that long between two requests of a
    # test, so here hints last until a test says otherwise (one sets 0 below)
    monkeypatch.setattr(node_api, "RECHECK_CAP_SECONDS", 600.0)


def idle(world: World) -> None:
    """Poll node A until a poll found nothing (the first may claim, to renew last_seen)."""
    while world.claim(world.node_a) is not None:
        pass


def test_a_poll_after_one_that_found_nothing_reads_nothing(world: World) -> None:
    idle(world)
    with statements(world) as seen:
        assert world.claim(world.node_a) is None
    assert not [s for s in seen if "runs" in s]


def test_a_run_made_after_an_empty_poll_is_claimed_by_the_next(world: World) -> None:
    idle(world)
    task = world.create_task()  # its commit wakes node A's key
    claimed = world.claim(world.node_a)
    assert claimed is not None and claimed["task_id"] == task["id"]


def test_a_claim_notes_whether_more_runs_wait(world: World) -> None:
    notifier: Notifier = world.app.state.notifier
    key = f"node:{world.node_a.id}"
    idle(world)
    first, second = world.create_task(), world.create_task()
    claimed = world.claim(world.node_a)
    assert claimed is not None and claimed["task_id"] == first["id"]
    assert notifier.known(key, 600) is True
    claimed = world.claim(world.node_a)
    assert claimed is not None and claimed["task_id"] == second["id"]
    assert notifier.known(key, 600) is False
    with statements(world) as seen:
        assert world.claim(world.node_a) is None
    assert not [s for s in seen if "runs" in s]


def test_a_run_whose_wake_up_was_lost_is_found_after_an_outage_or_the_hint_age(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier: Notifier = world.app.state.notifier
    idle(world)
    with monkeypatch.context() as lost:
        lost.setattr(notifier, "wake", lambda keys: None)  # the notification never came
        first = world.create_task()
    assert world.claim(world.node_a) is None  # the hint stands in for the read
    notifier.wake_all()  # the listener is back: every hint is void
    claimed = world.claim(world.node_a)
    assert claimed is not None and claimed["task_id"] == first["id"]
    idle(world)
    with monkeypatch.context() as lost:
        lost.setattr(notifier, "wake", lambda keys: None)
        second = world.create_task()
    monkeypatch.setattr(node_api, "RECHECK_CAP_SECONDS", 0.0)  # every hint is too old
    claimed = world.claim(world.node_a)
    assert claimed is not None and claimed["task_id"] == second["id"]


def test_a_batch_of_answers_checks_the_round_once_and_completes_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = world.create_task()  # one run at each node
    runs = {node.id: world.claim(node) for node in (world.node_a, world.node_b)}
    checked: list[int] = []
    real = task_service.finish_round

    def counted(session: Any, **kwargs: Any) -> None:
        checked.append(kwargs["task"].id)
        real(session, **kwargs)

    monkeypatch.setattr(task_service, "finish_round", counted)
    settings = world.app.state.settings
    jobs = []
    with world.app.state.sessionmaker() as session:
        for node_id, run in runs.items():
            assert run is not None and run["task_id"] == task["id"]
            node = session.get(Node, node_id)
            assert node is not None
            outcome = RunOutcome.model_validate(done(run, mean_output(10, 400.0)))
            jobs.append(node_api._Answer(settings, node, run["run_id"], outcome, "0" * 64))
    batches = WriteBatches(world.app.state.sessionmaker, world.app.state.notifier)
    assert batches._write(jobs) == [(True, "done"), (True, "done")]
    assert batches.written == [2, 1]  # one transaction
    assert checked == [task["id"]]  # once for the batch, not once per answer
    assert world.task(task["id"])["status"] == "completed"


def answer(world: World, run: dict[str, Any], *, take_next: bool) -> Any:
    params = {"next": "true"} if take_next else {}
    return world.api.post(
        f"/api/node/runs/{run['run_id']}/outcome",
        params=params,
        json=done(run, mean_output(10, 400.0)),
        headers=world.node_a.headers,
    )


def test_an_answer_can_carry_the_nodes_next_run(world: World) -> None:
    idle(world)
    first, second = world.create_task(), world.create_task()
    claimed = world.claim(world.node_a)
    assert claimed is not None and claimed["task_id"] == first["id"]
    answered = answer(world, claimed, take_next=True)
    assert answered.status_code == 200
    body = answered.json()
    assert body["status"] == "done"
    handed = body["next"]
    assert handed["task_id"] == second["id"] and handed["attempt"] == 1
    last = answer(world, handed, take_next=True)
    assert last.status_code == 200 and last.json() == {"status": "done", "next": None}
    at_a = [
        r["status"]
        for r in world.all_runs(first["id"]) + world.all_runs(second["id"])
        if r["node_name"] == world.node_a.name
    ]
    assert at_a == ["done", "done"]
    # the claim it made is in the ledger like any other, by the node
    claims = ledger_claims(world, handed["run_id"])
    assert [c["actor"] for c in claims] == [f"node:{world.node_a.id}"]


def test_an_answer_without_next_answers_as_before(world: World) -> None:
    idle(world)
    world.create_task(), world.create_task()
    claimed = world.claim(world.node_a)
    assert claimed is not None
    answered = answer(world, claimed, take_next=False)
    assert answered.status_code == 200 and answered.json() == {"status": "done"}
    assert world.claim(world.node_a) is not None  # the second run still waits


def test_a_refused_answer_claims_nothing(world: World) -> None:
    idle(world)
    world.create_task(), world.create_task()
    claimed = world.claim(world.node_a)
    assert claimed is not None
    stale = {**claimed, "lease_id": "f" * 32}
    refused = answer(world, stale, take_next=True)
    assert refused.status_code == 409 and "next" not in refused.json()
    with world.app.state.sessionmaker() as session:
        waiting = session.scalar(
            sa.text("SELECT COUNT(*) FROM runs WHERE node_id = :n AND status = 'pending'"),
            {"n": world.node_a.id},
        )
    assert waiting == 1  # the other task's run was not handed out


def test_a_withheld_or_failed_answer_leaves_sql_null_in_the_output(world: World) -> None:
    """The answer's one-statement update binds None: the column holds SQL NULL (no row
    holds a JSON ``null`` that a query for missing outputs would miss)."""
    idle(world)
    world.create_task(), world.create_task()
    bodies = (
        {"status": "done", "output_status": "suppressed"},
        {"status": "failed", "error": "the node's store is away"},
    )
    answered = []
    for body in bodies:
        claimed = world.claim(world.node_a)
        assert claimed is not None
        response = world.post_outcome(
            world.node_a, claimed["run_id"], {"lease_id": claimed["lease_id"], **body}
        )
        assert response.status_code == 200, response.text
        answered.append(claimed["run_id"])
    with world.app.state.sessionmaker() as session:
        rows = session.execute(
            sa.text("SELECT id, output IS NULL FROM runs WHERE id IN (:a, :b) ORDER BY id"),
            {"a": answered[0], "b": answered[1]},
        ).all()
    assert [(run_id, bool(null)) for run_id, null in rows] == [(r, True) for r in answered]


def test_a_submit_answers_from_its_own_transaction(world: World) -> None:
    """After its commit the submit begins no second transaction to read its answer (on
    SQLite that would be a turn in the write lock's queue, behind the claim the commit
    woke): the session that made the task commits it and begins nothing after."""
    held: list[Session] = []  # kept alive: no other session takes a made one's id
    events: dict[int, list[str]] = {}
    made: set[int] = set()

    def note(session: Session, event: str) -> None:
        held.append(session)
        events.setdefault(id(session), []).append(event)

    def begun(session: Session, *_: Any) -> None:
        note(session, "begin")

    def committed(session: Session) -> None:
        note(session, "commit")

    def storing(session: Session, instance: object) -> None:
        if isinstance(instance, Task):  # the task stored (tasks.store_task) goes in
            note(session, "made")
            made.add(id(session))

    hooks = (("after_begin", begun), ("after_commit", committed), ("after_attach", storing))
    for name, hook in hooks:
        sa.event.listen(Session, name, hook)
    try:
        task = world.create_task()
    finally:
        for name, hook in hooks:
            sa.event.remove(Session, name, hook)
    assert task["runs"], task  # the answer lists the task's runs
    assert len(made) == 1
    (maker,) = made
    seen = events[maker]
    after = [e for e in seen[seen.index("made") :] if e != "made"]
    assert after == ["commit"], seen  # the task's transaction commits; none begins after


def test_a_wait_for_the_end_is_woken_by_the_end_not_by_each_answer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every answer wakes ``task:{id}`` (the progress followers); only the round's close,
    here the task's end, wakes ``round:{id}``, the key a wait with ``progress=false`` and a
    discovery count's wait subscribe to."""
    notifier: Notifier = world.app.state.notifier
    woken: list[set[str]] = []
    real = notifier.wake

    def noted(keys: Any) -> None:
        woken.append(set(keys))
        real(keys)

    monkeypatch.setattr(notifier, "wake", noted)
    task = world.create_task()
    a, b = world.claim(world.node_a), world.claim(world.node_b)
    assert a is not None and b is not None
    progress, end = f"task:{task['id']}", f"round:{task['id']}"
    woken.clear()
    assert world.post_outcome(world.node_a, a["run_id"], done(a, mean_output(10, 500.0))).is_success
    assert progress in set().union(*woken) and end not in set().union(*woken)
    woken.clear()
    assert world.post_outcome(world.node_b, b["run_id"], done(b, mean_output(30, 900.0))).is_success
    assert {progress, end} <= set().union(*woken)
    assert world.task(task["id"])["status"] == "completed"


def _answers(world: World, answers: list[tuple[Any, dict[str, Any], dict[str, Any]]]) -> list[Any]:
    """Answer jobs (node, run, body) as the route makes them, the nodes read once."""
    settings = world.app.state.settings
    jobs = []
    with world.app.state.sessionmaker() as session:
        for node_info, run, body in answers:
            node = session.get(Node, node_info.id)
            assert node is not None
            outcome = RunOutcome.model_validate(body)
            jobs.append(node_api._Answer(settings, node, run["run_id"], outcome, "0" * 64))
    return jobs


def _batches(world: World) -> WriteBatches:
    """The nodes' write queue as the app makes it (with its ``prepare``)."""
    return WriteBatches(
        world.app.state.sessionmaker, world.app.state.notifier, prepare=node_api._prepare
    )


def _run_row(world: World, run_id: int) -> Any:
    with world.app.state.sessionmaker() as session:
        return session.execute(
            sa.text("SELECT status, lease_id, output FROM runs WHERE id = :id"), {"id": run_id}
        ).one()


def test_a_batch_writes_its_answers_in_one_statement(world: World) -> None:
    task = world.create_task()
    a, b = world.claim(world.node_a), world.claim(world.node_b)
    assert a is not None and b is not None
    outputs = {a["run_id"]: mean_output(10, 400.0), b["run_id"]: mean_output(30, 900.0)}
    jobs = _answers(
        world,
        [
            (world.node_a, a, done(a, outputs[a["run_id"]])),
            (world.node_b, b, done(b, outputs[b["run_id"]])),
        ],
    )
    batches = _batches(world)
    with statements(world) as seen:
        assert batches._write(jobs) == [(True, "done"), (True, "done")]
    assert batches.written == [2, 1]
    updates = [s for s in seen if s.lstrip().upper().startswith("UPDATE RUNS")]
    assert len(updates) == 1, updates  # both answers, one statement
    reads = [s for s in seen if "FROM runs" in s and "runs.id IN" in s]
    assert len(reads) == 1, reads  # and their runs read (checked) once, not once each
    for run in (a, b):
        row = _run_row(world, run["run_id"])
        assert (row.status, row.lease_id) == ("done", run["lease_id"])
        stored = row.output if isinstance(row.output, dict) else json.loads(row.output)
        assert stored == outputs[run["run_id"]]
    assert world.task(task["id"])["status"] == "completed"


def test_a_stale_answer_in_a_batch_fails_alone_and_the_others_are_written(world: World) -> None:
    world.create_task()
    a, b = world.claim(world.node_a), world.claim(world.node_b)
    assert a is not None and b is not None
    stale = {**done(b, mean_output(30, 900.0)), "lease_id": "0" * 32}
    jobs = _answers(
        world,
        [(world.node_a, a, done(a, mean_output(10, 400.0))), (world.node_b, b, stale)],
    )
    outcomes = _batches(world)._write(jobs)
    assert outcomes[0] == (True, "done")
    assert outcomes[1][0] is False and "stale lease" in str(outcomes[1][1])
    assert _run_row(world, a["run_id"]).status == "done"
    assert _run_row(world, b["run_id"]).status == "claimed"  # nothing of the stale answer


def test_answers_to_one_run_in_a_batch_are_taken_in_their_order(world: World) -> None:
    """A malformed answer, then a valid one to the same run: as one after the other, the
    first is refused and the second written, though the batch writes the rest ahead."""
    for _ in range(2):
        world.create_task()
    a1, a2, b1 = world.claim(world.node_a), world.claim(world.node_a), world.claim(world.node_b)
    assert a1 is not None and a2 is not None and b1 is not None
    malformed = {**done(a1, mean_output(10, 400.0)), "output_status": None}
    jobs = _answers(
        world,
        [
            (world.node_a, a1, malformed),
            (world.node_a, a1, done(a1, mean_output(10, 400.0))),
            (world.node_a, a2, done(a2, mean_output(11, 410.0))),
            (world.node_b, b1, done(b1, mean_output(30, 900.0))),
        ],
    )
    outcomes = _batches(world)._write(jobs)
    assert outcomes[0][0] is False and "output_status" in str(outcomes[0][1])
    assert [o for o in outcomes[1:]] == [(True, "done")] * 3
    for run in (a1, a2, b1):
        assert _run_row(world, run["run_id"]).status == "done"


def test_a_wait_checks_access_on_every_pass_in_the_statement_that_reads_progress(
    world: World,
) -> None:
    """A wait for the end reads the task's progress and the caller's membership in one
    statement on each pass: a member answers with the task once it ends; a caller whose
    membership ended while the wait waited is refused (403) when it is woken, and is told
    nothing of the task."""
    task = world.create_task()
    url = f"/api/tasks/{task['id']}/wait"
    params = {"timeout": 30, "progress": "false"}
    with statements(world) as seen:
        first = world.api.get(
            url, params={**params, "timeout": 0}, headers=world.researcher.headers
        )
    assert first.status_code == 200 and first.json()["status"] == "running"
    # the pass (and the answer at the timeout): the task, the progress mark and the
    # membership in one statement, each time
    checks = [s for s in seen if "project_members" in s]
    assert checks, seen
    for checked in checks:
        assert "FROM tasks" in checked and "FROM runs" in checked and "count(*)" in checked
    answered: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: answered.setdefault(
            "response", world.api.get(url, params=params, headers=world.researcher.headers)
        )
    )
    waiter.start()
    notifier: Notifier = world.app.state.notifier
    deadline = time.monotonic() + 60
    while f"round:{task['id']}" not in notifier._waiters:  # its first pass done, waiting
        assert waiter.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    with world.app.state.sessionmaker() as session:  # the membership ends mid-wait
        session.execute(
            sa.text("DELETE FROM project_members WHERE project_id = :p AND user_id = :u"),
            {"p": world.project_id, "u": world.researcher.id},
        )
        session.commit()
    for node in (world.node_a, world.node_b):
        run = world.claim(node)
        assert run is not None
        assert world.post_outcome(node, run["run_id"], done(run, mean_output(10, 40.0))).is_success
    waiter.join(60)
    refused = answered["response"]
    assert refused.status_code == 403, refused.text
    assert "not a member" in refused.json()["detail"]
    assert "result" not in refused.text and "completed" not in refused.text


def test_a_new_tasks_node_count_is_kept_when_it_commits_not_before(world: World) -> None:
    """A task's creation knows its datasets' nodes: once it commits, its claims tell the
    node how many nodes the task has without reading the task's dataset list. A creation
    that rolls back keeps nothing (its id may be used again)."""
    task = world.create_task()  # a dataset on node A and one on node B
    with statements(world) as seen:
        run = world.claim(world.node_a)
    assert run is not None and run["task_nodes"] == 2
    assert not [s for s in seen if "SELECT tasks.dataset_ids" in s], seen
    with world.app.state.sessionmaker() as session:
        engine = session.get_bind()
        task_nodes.keep_at_commit(session, 10_000, 7)
        session.execute(sa.text("SELECT 1"))
        session.rollback()
    kept = task_nodes._KEPT.get(engine, {})
    assert 10_000 not in kept and kept.get(task["id"]) == 2
