"""One checkpointer across hub workers on PostgreSQL (the advisory lock in ``make_checkpoint``).

Two apps made by ``create_app`` on one PostgreSQL database stand for two hub workers, each
with its own engine and pool; each runs the app's own checkpoint job (``_checkpoint_once``)
in a thread while a third thread keeps appending ledger entries. Without the lock both
workers sign the same size and one insert fails with ``UniqueViolation
"ledger_checkpoints_pkey"``; with it no job fails and the checkpoints are consecutive:
sizes strictly increasing in the order they were made, each root the tree's root at that
size and each signature valid under the hub key.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from medfed.hub.app import _checkpoint_once, create_app
from medfed.hub.config import HubSettings
from medfed.hub.db.models import LedgerCheckpoint
from medfed.hub.services import ledger
from medfed.ledger.checkpoint import public_b64, verify_signature

PG_ENV = "MEDFED_TEST_DATABASE_URL"

pytestmark = [
    pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} names no PostgreSQL"),
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
    pytest.mark.postgres,
]

ROUNDS = 150


@pytest.fixture
def second_worker(hub_settings: HubSettings, hub_app: FastAPI) -> Iterator[FastAPI]:
    app = create_app(hub_settings)
    try:
        yield app
    finally:
        app.state.engine.dispose()


def _append(app: FastAPI, n: int = 1) -> None:
    with app.state.sessionmaker() as session:
        for _ in range(n):
            ledger.record(session, action="test.tick", actor="hub", objects={})
        session.commit()


def test_two_workers_checkpoint_one_at_a_time(hub_app: FastAPI, second_worker: FastAPI) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(3)
    writing = threading.Event()

    def worker(app: FastAPI) -> None:
        start.wait()
        try:
            for _ in range(ROUNDS):
                _checkpoint_once(app)
        except BaseException as exc:  # the test reports any failure
            errors.append(exc)

    def writer() -> None:
        start.wait()
        while not writing.is_set():
            _append(hub_app)

    threads = [threading.Thread(target=worker, args=(app,)) for app in (hub_app, second_worker)]
    appender = threading.Thread(target=writer)
    for thread in (*threads, appender):
        thread.start()
    for thread in threads:
        thread.join()
    writing.set()
    appender.join()
    assert errors == []

    _checkpoint_once(second_worker)  # the last head is signed too
    with hub_app.state.sessionmaker() as session:
        rows = list(session.query(LedgerCheckpoint).order_by(LedgerCheckpoint.time))
        assert len(rows) >= 2
        sizes = [r.size for r in rows]
        assert sizes == sorted(set(sizes))  # made in order, none twice
        assert sizes[-1] == ledger.size(session)
        public = public_b64(hub_app.state.ledger_key)
        for row in rows:
            assert row.root == ledger.root_at(session, row.size).hex()
            signed = ledger.as_checkpoint(session, row)
            assert verify_signature(public, signed, signed.signature)


def test_a_worker_without_the_lock_skips_its_turn(hub_app: FastAPI, second_worker: FastAPI) -> None:
    _append(hub_app, 3)
    key = hub_app.state.ledger_key
    with hub_app.state.sessionmaker() as first, second_worker.state.sessionmaker() as second:
        made = ledger.make_checkpoint(first, key=key)
        assert made is not None  # the first worker holds the lock until it commits
        assert ledger.make_checkpoint(second, key=key) is None
        second.rollback()
        first.commit()
        assert ledger.make_checkpoint(second, key=key) is None  # it sees the new checkpoint
        second.rollback()
    _append(hub_app)
    with second_worker.state.sessionmaker() as second:
        following = ledger.make_checkpoint(second, key=key)
        assert following is not None and following.size == made.size + 1
        second.commit()
