"""A task's creation writes its rows with Core statements and keeps the session true to them.

Against the real hub app (SQLite and, where ``MEDFED_TEST_DATABASE_URL`` names a server,
PostgreSQL), through the service the submission route calls: the stored task's object
holds exactly what its row holds (every column), is in the session as persistent (a later
flush inserts nothing and the commit keeps one row), and a change made to it afterwards
(as a cohort's extra parameters are) reaches the row. A second task under the same
idempotency key is refused by the unique constraint at the insert, and nothing of that try
is kept. A round's checks read its runs as rows: a round that a quorum closes early still
ends its unfinished runs (``failed``, the quorum's reason) and fails the task with the
closed runs' status, as before.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hubtools import World, done, mean_output, statements
from medfed.algorithms.registry import get_algorithm
from medfed.hub.db.models import Task, User
from medfed.hub.services import tasks
from medfed.hub.services.tasks import _ROUND_RUNS

_COLUMNS = [column.key for column in sa.inspect(Task).columns]


def _create(world: World, session: Session, key: str | None = None) -> Task:
    researcher = session.get(User, world.researcher.id)
    assert researcher is not None
    return tasks.create_task(
        session,
        actor=researcher,
        project_id=world.project_id,
        algorithm="mean",
        dataset_refs=["cohort"],
        raw_params={"columns": ["age"]},
        settings=world.app.state.settings,
        idempotency_key=key,
        request_sha256="0" * 64 if key else None,
    )


def _row(session: Session, task_id: int) -> dict[str, Any]:
    table = Task.__table__
    found = session.connection().execute(sa.select(table).where(table.c.id == task_id)).one()
    return dict(found._mapping)


def _same(mine: Any, stored: Any) -> bool:
    if hasattr(mine, "tzinfo") and hasattr(stored, "tzinfo"):  # SQLite keeps no zone
        return bool(mine.replace(tzinfo=None) == stored.replace(tzinfo=None))
    return bool(mine == stored)


def _tasks(world: World) -> int:
    with world.app.state.sessionmaker() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Task)) or 0)


def test_the_stored_task_object_is_its_row_and_is_inserted_once(world: World) -> None:
    before = _tasks(world)
    with statements(world) as seen, world.app.state.sessionmaker() as session:
        task = _create(world, session)
        assert sa.inspect(task).persistent
        row = _row(session, task.id)
        assert set(row) == set(_COLUMNS)
        for column in _COLUMNS:
            assert _same(getattr(task, column), row[column]), column
        session.flush()
        assert not session.dirty and not session.new
        assert len(_inserts(seen)) == 1
        # a change to the object afterwards is written to the row
        task.params = {**task.params, "noted": True}
        session.commit()
    assert len(_inserts(seen)) == 1
    assert _tasks(world) == before + 1
    with world.app.state.sessionmaker() as session:
        stored = session.get(Task, task.id)
        assert stored is not None and stored.params["noted"] is True
        assert stored.status == "running" and stored.round == 0


def _inserts(seen: list[str]) -> list[str]:
    return [s for s in seen if s.lstrip().upper().startswith("INSERT INTO TASKS")]


def test_a_second_task_under_one_idempotency_key_fails_at_its_insert(world: World) -> None:
    with world.app.state.sessionmaker() as session:
        first = _create(world, session, key="same-key").id
        session.commit()
    with world.app.state.sessionmaker() as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(Task))
        with pytest.raises(IntegrityError):
            _create(world, session, key="same-key")
        session.rollback()
        assert session.scalar(sa.select(sa.func.count()).select_from(Task)) == before
        kept = session.get(Task, first)
        assert kept is not None and kept.idempotency_key == "same-key"


def test_a_round_closed_by_its_quorum_ends_the_unfinished_runs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs, a quorum of one, every dataset needed: node A's answer closes the round,
    node B's claimed run ends ``failed`` with the quorum's reason, and the task fails
    naming node B's run as closed (read after the close, not as it was before it)."""
    mean = type(get_algorithm("mean"))
    monkeypatch.setattr(mean, "quorum", lambda self, params, runs: 1)
    monkeypatch.setattr(mean, "requires_every_dataset", True)
    created = world.create_task()  # both nodes' ``cohort``
    first = world.claim(world.node_a)
    second = world.claim(world.node_b)
    assert first is not None and second is not None
    answer = done(first, mean_output(10, 300.0))
    assert world.post_outcome(world.node_a, first["run_id"], answer).status_code == 200
    task = world.task(created["id"])
    assert task["status"] == "failed"
    assert "(node-b failed: round closed: quorum reached)" in task["error"], task["error"]
    with world.app.state.sessionmaker() as session:
        runs = session.connection().execute(_ROUND_RUNS, {"task": created["id"], "round": 0})
        status = {row.id: (row.status, row.error) for row in runs}
    assert status[first["run_id"]] == ("done", None)
    assert status[second["run_id"]] == ("failed", "round closed: quorum reached")
