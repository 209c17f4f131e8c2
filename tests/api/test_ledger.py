"""The hub's audit log on a real database: one entry per state change, in its transaction.

Tampering with one stored entry is caught and named; proofs served by the hub verify with
the independent RFC 9162 reference in ``tests/rfc9162.py``. A transaction holds the log's
head only for its append (PostgreSQL); an entry is checked where it is recorded and keeps
what it was given.
"""

from __future__ import annotations

import itertools
import json
import os
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from hubdatabases import PG_ENV
from hubtools import SQLITE_ONLY, World, done, mean_output
from medfed.common.errors import BadRequest, Conflict
from medfed.hub.db.session import make_engine, make_sessionmaker
from medfed.hub.services import accounts
from medfed.hub.services import ledger as ledger_service
from medfed.ledger.entries import canonical
from medfed.ledger.merkle import leaf_hash
from medfed.sdk import audit
from medfed.sdk.client import Client
from rfc9162 import mth, reference_verify_inclusion


def entries(world: World) -> list[dict[str, Any]]:
    with world.app.state.sessionmaker() as session:
        rows = session.execute(sa.text("SELECT body FROM ledger_entries ORDER BY idx"))
        return [json.loads(body) for (body,) in rows]


def checkpoint(world: World) -> int:
    with world.app.state.sessionmaker() as session:
        row = ledger_service.make_checkpoint(session, key=world.app.state.ledger_key)
        session.commit()
        return row.size if row is not None else ledger_service.size(session)


def sdk(world: World) -> Client:
    return Client("http://testserver", world.admin.token, http_client=world.api)


def run_mean_task(world: World) -> int:
    task = world.create_task()
    for node in (world.node_a, world.node_b):
        run = world.claim(node)
        assert run is not None
        response = world.post_outcome(node, run["run_id"], done(run, mean_output(10, 400.0)))
        assert response.status_code == 200, response.text
    assert world.task(task["id"])["status"] == "completed"
    return int(task["id"])


def test_every_state_change_has_its_entry_and_every_entry_its_change(world: World) -> None:
    task_id = run_mean_task(world)
    log = entries(world)
    actions = [e["action"] for e in log]
    for action in (
        "user.create",
        "auth.login",
        "organization.create",
        "project.create",
        "node.create",
        "dataset.register",
        "task.create",
        "run.claim",
        "run.finish",
        "result.release",
    ):
        assert action in actions, action
    assert actions.count("run.finish") == 2
    tables = {
        "organization": "organizations",
        "user": "users",
        "project": "projects",
        "node": "nodes",
        "dataset": "datasets",
        "task": "tasks",
        "run": "runs",
        "token": "api_tokens",
    }
    with world.app.state.sessionmaker() as session:
        for entry in log:
            assert entry["actor"].split(":")[0] in {"hub", "user", "node"}
            for kind, table in tables.items():
                if kind in entry["objects"]:
                    found = session.scalar(
                        sa.text(f"SELECT COUNT(*) FROM {table} WHERE id = :id"),
                        {"id": entry["objects"][kind]},
                    )
                    assert found == 1, (entry, kind)
    released = [e for e in log if e["action"] == "result.release"]
    assert released[-1]["objects"]["task"] == task_id
    # no personal data: the user names never appear in the log
    text = json.dumps(log)
    assert "rita" not in text and "otto" not in text


def test_a_failed_action_leaves_no_entry(world: World) -> None:
    before = entries(world)
    duplicate = world.api.post(
        "/api/projects", json={"name": "Project P"}, headers=world.researcher.headers
    )
    assert duplicate.status_code == 409
    bad_task = world.api.post(
        "/api/tasks",
        json={
            "project_id": world.project_id,
            "algorithm": "mean",
            "datasets": ["cohort"],
            "params": {"columns": ["nosuch"]},
        },
        headers=world.researcher.headers,
    )
    assert bad_task.status_code == 422
    # a change that recorded its entry and then failed in the same transaction
    with world.app.state.sessionmaker() as session:
        accounts.create_organization(session, actor=None, name="Rolled Back")
        with pytest.raises(Conflict):
            accounts.create_organization(session, actor=None, name="Rolled Back")
        session.rollback()
    assert entries(world) == before
    with world.app.state.sessionmaker() as session:
        assert ledger_service.size(session) == len(before)
        assert (
            session.scalar(sa.text("SELECT COUNT(*) FROM organizations WHERE name = 'Rolled Back'"))
            == 0
        )


def test_hub_proofs_verify_with_the_independent_reference(world: World) -> None:
    run_mean_task(world)
    size = checkpoint(world)
    client = sdk(world)
    head = client.ledger.checkpoint()
    assert head.size == size
    bodies = [e.body.encode() for e in client.ledger.entries()]
    assert mth(bodies[:size]).hex() == head.root
    for index in range(size):
        proof = client.ledger.inclusion(index, size)
        assert proof.leaf == leaf_hash(bodies[index]).hex()
        hashes = [bytes.fromhex(h) for h in proof.proof]
        assert reference_verify_inclusion(
            leaf_hash(bodies[index]), index, size, hashes, bytes.fromhex(head.root)
        )
    report = audit.verify(client.ledger)
    assert report.ok, report.problems


def _tamper(world: World, statements: list[tuple[str, dict[str, Any]]]) -> None:
    with world.app.state.sessionmaker() as session:
        for sql, params in statements:
            session.execute(sa.text(sql), params)
        session.commit()


def _body(world: World, index: int) -> str:
    with world.app.state.sessionmaker() as session:
        return str(
            session.scalar(sa.text("SELECT body FROM ledger_entries WHERE idx = :i"), {"i": index})
        )


@pytest.mark.parametrize("kind", ["edit", "delete", "reorder"])
def test_tampering_with_one_stored_entry_is_caught_and_named(world: World, kind: str) -> None:
    run_mean_task(world)
    size = checkpoint(world)
    bad = size // 2
    if kind == "edit":
        body = _body(world, bad).replace('"actor":"', '"actor":"x', 1)
        _tamper(
            world, [("UPDATE ledger_entries SET body = :b WHERE idx = :i", {"b": body, "i": bad})]
        )
    elif kind == "delete":
        _tamper(world, [("DELETE FROM ledger_entries WHERE idx = :i", {"i": bad})])
    else:
        first, second = _body(world, bad), _body(world, bad + 3)
        _tamper(
            world,
            [
                ("UPDATE ledger_entries SET body = :b WHERE idx = :i", {"b": second, "i": bad}),
                ("UPDATE ledger_entries SET body = :b WHERE idx = :i", {"b": first, "i": bad + 3}),
            ],
        )
    report = audit.verify(sdk(world).ledger)
    assert not report.ok
    assert report.first_bad_index == bad, report.problems


@pytest.mark.skipif(
    not os.environ.get(PG_ENV), reason=f"{PG_ENV} names no PostgreSQL (SQLite has one writer)"
)
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_a_transaction_holds_the_ledger_head_only_for_its_append(world: World) -> None:
    """Two hub processes' transactions that both write entries queue only for the append:
    one that recorded an entry and is still open does not hold the head, so another
    records, appends and commits past it without waiting (a lock timeout of 2 s proves it:
    holding the head from the first entry, the second would time out); the first then
    appends after it, the chain links and every entry's time is its append's."""
    before = len(entries(world))
    first = world.app.state.sessionmaker()
    try:
        ledger_service.record(first, action="test.first", actor="hub", objects={"n": 1})
        first.execute(sa.text("SELECT 1"))  # the transaction is open on its connection
        with world.app.state.sessionmaker() as second:
            second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            ledger_service.record(second, action="test.second", actor="hub", objects={"n": 2})
            second.commit()  # would raise LockNotAvailable if ``first`` held the head
        first.commit()
    finally:
        first.close()
    log = entries(world)
    assert [e["action"] for e in log[before:]] == ["test.second", "test.first"]
    assert [e["index"] for e in log] == list(range(len(log)))
    for earlier, later in itertools.pairwise(log):
        assert later["prev"] == leaf_hash(canonical(earlier)).hex()
        assert datetime.fromisoformat(later["time"]) >= datetime.fromisoformat(earlier["time"])
    report = audit.verify(sdk(world).ledger)
    assert report.ok, report.problems


def test_a_bad_entry_is_refused_where_it_is_recorded(world: World) -> None:
    """An entry is checked when it is recorded, not at the commit: the caller's own
    request gets the error, and nothing is appended."""
    before = len(entries(world))
    with world.app.state.sessionmaker() as session:
        with pytest.raises(BadRequest, match="actor must be a pseudonymous id"):
            ledger_service.record(session, action="test.bad", actor="alice", objects={})
        with pytest.raises(BadRequest, match="object 'who' must be ids"):
            ledger_service.record(session, action="test.bad", actor="hub", objects={"who": 1.5})
        session.commit()
    assert len(entries(world)) == before


def test_an_entry_keeps_what_it_was_given(world: World) -> None:
    """The entry is written at the commit, with what ``record`` was given: a change the
    caller makes to its own list or dict afterwards does not reach the log."""
    datasets, hashes = [1, 2], {"schema": "a" * 64}
    with world.app.state.sessionmaker() as session:
        ledger_service.record(
            session, action="test.kept", actor="hub", objects={"datasets": datasets}, hashes=hashes
        )
        datasets.append(3)
        hashes["schema"] = "b" * 64
        session.commit()
    last = entries(world)[-1]
    assert (last["action"], last["objects"], last["hashes"]) == (
        "test.kept",
        {"datasets": [1, 2]},
        {"schema": "a" * 64},
    )


def _head_reads(engine: sa.Engine) -> list[str]:
    """The statements that read the ledger head on ``engine``, from now on."""
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "ledger_head" in statement:
            seen.append(statement)

    return seen


@SQLITE_ONLY
def test_an_append_starts_from_the_head_it_committed_and_an_old_one_is_read_again(
    world: World,
) -> None:
    """On SQLite (one writing process) an append starts from the head the process last
    committed: no read of the head. Another writer on the same file (a second engine: the
    CLI, another process) moves the head; the next append's guess is then old, its update
    of the head matches no row, and it reads the head and appends after the other's
    entries. The log stays one chain and verifies."""
    engine = world.app.state.engine
    sessions = world.app.state.sessionmaker
    before = len(entries(world))
    with sessions() as session:
        ledger_service.record(session, action="test.one", actor="hub", objects={"n": 1})
        session.commit()
    reads = _head_reads(engine)
    with sessions() as session:
        ledger_service.record(session, action="test.two", actor="hub", objects={"n": 2})
        session.commit()
    assert reads == []  # the head this process committed
    other = make_engine(str(engine.url))
    try:
        with make_sessionmaker(other)() as session:
            for n in (3, 4):
                ledger_service.record(session, action="test.other", actor="hub", objects={"n": n})
            session.commit()
    finally:
        other.dispose()
    with sessions() as session:
        ledger_service.record(session, action="test.three", actor="hub", objects={"n": 5})
        session.commit()
    assert len(reads) == 1  # the guess was old: read, then appended after the other's
    with sessions() as session:
        ledger_service.record(session, action="test.four", actor="hub", objects={"n": 6})
        session.commit()
    assert len(reads) == 1  # and the head it then committed is the next guess
    log = entries(world)
    assert [e["action"] for e in log[before:]] == [
        "test.one",
        "test.two",
        "test.other",
        "test.other",
        "test.three",
        "test.four",
    ]
    assert [e["index"] for e in log] == list(range(len(log)))
    for earlier, later in itertools.pairwise(log):
        assert later["prev"] == leaf_hash(canonical(earlier)).hex()
    report = audit.verify(sdk(world).ledger)
    assert report.ok, report.problems


@SQLITE_ONLY
def test_a_rolled_back_append_leaves_the_next_guess_right(world: World) -> None:
    """A transaction that appended (its head update matched) and then rolled back leaves
    the head where it was; the next append starts from the last committed head and the
    log has no gap."""
    sessions = world.app.state.sessionmaker
    with sessions() as session:
        ledger_service.record(session, action="test.kept", actor="hub", objects={"n": 1})
        session.commit()
    before = len(entries(world))
    with sessions() as session:
        ledger_service.record(session, action="test.dropped", actor="hub", objects={"n": 2})
        ledger_service.flush_pending(session)  # appended in the transaction
        session.rollback()
    reads = _head_reads(world.app.state.engine)
    with sessions() as session:
        ledger_service.record(session, action="test.after", actor="hub", objects={"n": 3})
        session.commit()
    assert reads == []  # the guess was the committed head, not the rolled-back one
    log = entries(world)
    assert [e["action"] for e in log[before:]] == ["test.after"]
    assert [e["index"] for e in log] == list(range(len(log)))
    report = audit.verify(sdk(world).ledger)
    assert report.ok, report.problems
