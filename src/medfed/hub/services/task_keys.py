"""Idempotency keys of task submissions (``Idempotency-Key`` on ``POST /api/tasks``).

How it runs: the route checks the header (:func:`check_idempotency_key`), then looks for
the task the same user created with the same key (:func:`submitted`) before validating
anything; a match with the same request hash is answered as it is (200), one with another
hash is a 422. A miss goes on to :func:`medfed.hub.services.tasks.create_task`, which
stores the key and hash with the task under a unique (user, key) constraint; the loser of
a race fails that constraint and the route answers it with the winner.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from medfed.common.errors import BadRequest
from medfed.hub.db.models import Task, User
from medfed.hub.services.projects import get_project

#: the longest ``Idempotency-Key`` accepted (Stripe's limit)
MAX_IDEMPOTENCY_KEY = 255


def check_idempotency_key(key: str) -> str:
    """``key`` if it is 1 to 255 printable ASCII characters, else a clear 422."""
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not all(" " <= c <= "~" for c in key):
        raise BadRequest(
            f"the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII "
            "characters (a UUID is a good one)"
        )
    return key


#: built once: every submission with a key asks it (plain columns: a miss, the usual
#: answer, loads no task)
_SUBMITTED = select(Task.id, Task.request_sha256, Task.project_id).where(
    Task.created_by == bindparam("user"), Task.idempotency_key == bindparam("key")
)


def submitted(session: Session, *, actor: User, key: str, request_sha256: str) -> Task | None:
    """The task ``actor`` created earlier with Idempotency-Key ``key`` (None if none).

    Keys are scoped per user and kept as long as the task (at least 24 h: tasks are
    never deleted). The same key with another body is a client error (422), never a
    silent second task or a silent answer to a different question.
    """
    found = session.execute(_SUBMITTED, {"user": actor.id, "key": key}).first()
    if found is None:
        return None
    if found.request_sha256 != request_sha256:
        raise BadRequest(
            f"Idempotency-Key '{key}' was already used for task {found.id} with a different "
            "request body; send a new key for a new task"
        )
    get_project(session, project_id=found.project_id, user=actor)  # still a member
    task = session.get(Task, found.id)
    assert task is not None  # tasks are not deleted
    return task
