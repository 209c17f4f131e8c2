"""Node claims and answers on SQLite (``medfed.hub.api.write_batches.WriteBatches``).

Jobs write rows into a real SQLite database (the hub's engine settings: WAL, ``BEGIN
IMMEDIATE``); the tests check the order jobs ran in, how many transactions committed
them, that a failing job's error reaches its own caller only and writes nothing, and that
a job whose request went away (cancelled, or ``wanted`` false) is not run.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from medfed.common.errors import Conflict
from medfed.hub.api.write_batches import WriteBatches
from medfed.hub.db.session import make_engine, make_sessionmaker


@pytest.fixture
def batches(tmp_path: Path) -> WriteBatches:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (name TEXT)"))
    return WriteBatches(make_sessionmaker(engine), None)


def rows(batches: WriteBatches) -> list[str]:
    with batches._sessions() as session:
        return list(session.scalars(sa.text("SELECT name FROM t ORDER BY rowid")))


def writes(name: str, ran: list[str], gate: threading.Event | None = None) -> Any:
    def job(session: Session) -> str:
        if gate is not None:
            assert gate.wait(10)
        ran.append(name)
        session.execute(sa.text("INSERT INTO t (name) VALUES (:n)"), {"n": name})
        if name.startswith("bad"):
            raise Conflict(f"{name}: stale lease")
        return name

    return job


def test_jobs_queue_answers_first_and_share_one_transaction(batches: WriteBatches) -> None:
    ran: list[str] = []

    async def scenario() -> list[Any]:
        gate = threading.Event()
        first = asyncio.ensure_future(batches.run(WriteBatches.CLAIM, writes("first", ran, gate)))
        await asyncio.sleep(0.05)  # "first" is being written, alone
        claims = [
            asyncio.ensure_future(batches.run(WriteBatches.CLAIM, writes(f"claim{i}", ran)))
            for i in range(3)
        ]
        answer = asyncio.ensure_future(batches.run(WriteBatches.ANSWER, writes("answer", ran)))
        gone = asyncio.ensure_future(batches.run(WriteBatches.ANSWER, writes("gone", ran)))

        async def away() -> bool:
            return False

        left = asyncio.ensure_future(
            batches.run(WriteBatches.CLAIM, writes("left", ran), wanted=away)
        )
        await asyncio.sleep(0.05)
        gone.cancel()
        gate.set()
        return await asyncio.gather(first, *claims, answer, left)

    results = asyncio.run(scenario())
    assert results == ["first", "claim0", "claim1", "claim2", "answer", None]
    assert ran == ["first", "answer", "claim0", "claim1", "claim2"]
    assert rows(batches) == ran
    assert batches.written == [5, 2]  # "first" alone, then the other four in one commit


def test_a_failing_job_fails_alone_and_writes_nothing(batches: WriteBatches) -> None:
    ran: list[str] = []

    async def scenario() -> list[Any]:
        gate = threading.Event()
        first = asyncio.ensure_future(batches.run(WriteBatches.ANSWER, writes("first", ran, gate)))
        await asyncio.sleep(0.05)
        queued = [
            asyncio.ensure_future(batches.run(WriteBatches.ANSWER, writes(name, ran)))
            for name in ("ok1", "bad", "ok2")
        ]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *queued, return_exceptions=True)

    first, ok1, bad, ok2 = asyncio.run(scenario())
    assert (first, ok1, ok2) == ("first", "ok1", "ok2")
    assert isinstance(bad, Conflict) and str(bad) == "bad: stale lease"
    assert rows(batches) == ["first", "ok1", "ok2"]  # the batch rolled back, then one by one
    # the batch ran ok1 and bad before it failed; then each ran again in its own transaction
    assert ran == ["first", "ok1", "bad", "ok1", "bad", "ok2"]
    assert batches.written == [3, 3]


def test_a_failing_wanted_check_runs_the_job(batches: WriteBatches) -> None:
    ran: list[str] = []

    async def broken() -> bool:
        raise RuntimeError("the connection's state cannot be read")

    async def scenario() -> Any:
        return await batches.run(WriteBatches.CLAIM, writes("claim", ran), wanted=broken)

    assert asyncio.run(scenario()) == "claim"
    assert rows(batches) == ["claim"]


class Escape(BaseException):
    """Not an :class:`Exception`: what a job may raise that ``except Exception`` misses."""


def test_a_job_that_escapes_fails_its_batch_instead_of_hanging_it(
    batches: WriteBatches,
) -> None:
    ran: list[str] = []

    def escapes(session: Session) -> None:
        session.execute(sa.text("INSERT INTO t (name) VALUES ('escaped')"))
        raise Escape()

    async def scenario() -> list[Any]:
        waiting = [
            asyncio.ensure_future(batches.run(WriteBatches.CLAIM, escapes)),
            asyncio.ensure_future(batches.run(WriteBatches.CLAIM, writes("second", ran))),
        ]
        _, pending = await asyncio.wait(waiting, timeout=10)
        assert not pending  # nobody is left waiting on the batch
        return [future.exception() for future in waiting]

    errors = asyncio.run(scenario())
    assert all(isinstance(e, RuntimeError) and "Escape" in str(e) for e in errors)
    assert rows(batches) == []  # nothing of the batch was written
