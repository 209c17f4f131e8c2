"""How many nodes hold a task's datasets (every claim tells the node): remembered per task.

A task's datasets are fixed at creation and a dataset never moves to another node, so the
count never changes: :func:`count` counts a task once (a one-dataset task: one node,
from its dataset list), then keeps the count per database (engine) and task id (the
newest 4,096 tasks); a claim of a 1,000-dataset task then needs no query with 1,000 ids
and reads no dataset list. Only committed tasks are claimed, so a kept count is never
that of a rolled-back task whose id is used again: a task's creation, which knows its
datasets' nodes, keeps its count once its transaction commits (:func:`keep_at_commit`), so
the claims of a new task need no query either (a claim in the creating transaction itself
reads the count it will keep).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

from sqlalchemy import Engine, distinct, event, func, select
from sqlalchemy.orm import Session

from medfed.hub.db.models import Dataset, Task
from medfed.hub.db.session import engine_of

_AT_COMMIT = "medfed.task_nodes_at_commit"

#: per engine (database), task id -> how many nodes hold its datasets
_KEPT: weakref.WeakKeyDictionary[Engine, OrderedDict[int, int]] = weakref.WeakKeyDictionary()
_MOST = 4096
_lock = threading.Lock()


def _keep(engine: Engine, task_id: int, counted: int) -> None:
    with _lock:
        kept = _KEPT.setdefault(engine, OrderedDict())
        kept[task_id] = counted
        while len(kept) > _MOST:
            kept.popitem(last=False)


def keep_at_commit(session: Session, task_id: int, counted: int) -> None:
    """Keep ``counted`` for the task ``task_id`` once the session's transaction commits
    (a rollback forgets it)."""
    session.info.setdefault(_AT_COMMIT, []).append((task_id, counted))


@event.listens_for(Session, "after_commit")
def _kept_at_commit(session: Session) -> None:
    made: list[tuple[int, int]] | None = session.info.pop(_AT_COMMIT, None)
    engine = engine_of(session) if made else None
    if made and engine is not None:
        for task_id, counted in made:
            _keep(engine, task_id, counted)


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, *_: object) -> None:
    session.info.pop(_AT_COMMIT, None)


def count(session: Session, task_id: int) -> int:
    """How many distinct nodes hold the datasets of the task ``task_id``: committed, or
    made in ``session``'s own transaction (a submission claiming for a waiting poll, whose
    count is not kept before the commit)."""
    for made_id, counted in session.info.get(_AT_COMMIT, ()):
        if made_id == task_id:
            return int(counted)
    engine = engine_of(session)
    with _lock:
        kept = _KEPT.get(engine) if engine is not None else None
        known = kept.get(task_id) if kept is not None else None
    if known is not None:
        return known
    dataset_ids = session.scalar(select(Task.dataset_ids).where(Task.id == task_id)) or []
    counted = (
        1  # one dataset is on one node
        if len(dataset_ids) == 1
        else int(
            session.scalar(
                select(func.count(distinct(Dataset.node_id))).where(Dataset.id.in_(dataset_ids))
            )
            or 0
        )
    )
    if engine is not None:
        _keep(engine, task_id, counted)
    return counted
