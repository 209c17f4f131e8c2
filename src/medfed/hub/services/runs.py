"""Runs at nodes: leasing, heartbeats, lease expiry and accepting an answer once.

Run states: pending → claimed → done | failed | refused. A node claims a pending run with
a lease (``lease_id``, ``lease_expires_at``); heartbeats extend the leases it holds. A
lease that expires is handed back to pending by the hub's sweeper (another claim bumps
``attempts``) until ``max_attempts``, then the run fails with the reason. An answer is
accepted once: the same lease posting again is a no-op, any other lease gets a
:class:`Conflict`. Ending the last run of a round hands over to
:func:`medfed.hub.services.tasks.finish_round` (an answer: through ``finish_round_soon``,
once per task in a batch of answers). The ``run.finish`` ledger entry holds the hash of
the bytes the node sent and, from nodes that send them, its keyed filter hash
(``filter``) and row-set fingerprint (``rowsets``); the rule's category stays in the run
row, for the stewards' query view.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased

from medfed.common.errors import BadRequest, Conflict, NotFound
from medfed.common.resources import RunAssignment, RunOutcome, RunStatus, TaskStatus
from medfed.common.timeutil import utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Dataset, Node, Run, Task
from medfed.hub.db.models_access import DiscoveryQuery
from medfed.hub.db.session import is_sqlite
from medfed.hub.dispatch import want_wake
from medfed.hub.services import task_nodes
from medfed.hub.services.access import entitlements
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.tasks import TERMINAL, finish_round, finish_round_soon
from medfed.ledger.entries import content_hash


class Claim(NamedTuple):
    """What a claim found: the assignment (None: nothing pending), and whether another
    pending run waited for the node beside it (a hint for its next poll)."""

    assignment: RunAssignment | None
    more: bool


#: another run and its task, for the claim's "more runs wait" test (made once: an alias
#: built per call costs more than the query)
_OTHER, _OTHER_TASK = aliased(Run), aliased(Task)


def _waiting(node_id: int, run: type[Run] = Run, task: type[Task] = Task) -> list[Any]:
    """The conditions of a run (``run``, joined to ``task``) that waits for ``node_id``: a
    pending run of a running task; one definition for the claim, its "more" test and
    :func:`has_work`."""
    return [
        run.node_id == node_id,
        run.status == RunStatus.pending.value,
        task.id == run.task_id,
        task.status == TaskStatus.running.value,
    ]


def claim_next(session: Session, *, node: Node, settings: HubSettings) -> Claim:
    """Lease the oldest pending run of ``node``.

    Runs whose lease ran out are handed back by the hub's sweeper
    (:func:`expire_leases`, every ``sweep_seconds``), not by each claim."""
    is_discovery = exists().where(DiscoveryQuery.task_id == Task.id)
    more = exists().where(*_waiting(node.id, _OTHER, _OTHER_TASK), _OTHER.id != Run.id)
    query = (
        # the dataset too: the grant reads it from the session; whether the task is a
        # discovery query and whether more runs wait, in the same statement
        select(Run, Task, Dataset, is_discovery, more)
        .join(Dataset, Dataset.id == Run.dataset_id)
        .where(*_waiting(node.id))  # the task joined by its condition
        .order_by(Run.id)
        .limit(1)
    )
    if not is_sqlite(session):
        query = query.with_for_update(skip_locked=True, of=Run)
    row = session.execute(query).first()
    if row is None:
        return Claim(None, more=False)
    run, task, dataset, discovery, others = row
    grant = entitlements.grant_for_run(
        session, run=run, task=task, node=node, settings=settings, discovery=bool(discovery)
    )
    if isinstance(grant, str):  # entitlement ended or revoked since the task was created
        _refuse(session, run=run, task=task, reason=grant, settings=settings)
        return claim_next(session, node=node, settings=settings)
    now = utcnow()
    run.status = RunStatus.claimed.value
    run.attempts += 1
    run.lease_id = secrets.token_hex(16)
    run.claimed_at = now
    run.lease_expires_at = now + timedelta(seconds=settings.lease_seconds)
    record(
        session,
        action="run.claim",
        actor=actor_of(node),
        objects={"run": run.id, "task": task.id, "dataset": dataset.id, "attempt": run.attempts},
    )
    # no wake-up of ``task:{id}``: a claim moves no waiter's answer (progress counts
    # answered runs; the waits answer on progress or the end), so nobody re-reads for it
    assignment = RunAssignment(
        run_id=run.id,
        task_id=task.id,
        project_id=task.project_id,
        round=run.round,
        algorithm=task.algorithm,
        algorithm_version=task.algorithm_version,
        params=task.params,
        state=task.state,
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        lease_id=run.lease_id,
        lease_expires_at=run.lease_expires_at,
        attempt=run.attempts,
        entitlement=grant.entitlement,
        discovery=grant.discovery,
        task_nodes=task_nodes.count(session, task),
    )
    return Claim(assignment, more=bool(others))


def has_work(session: Session, *, node_id: int) -> bool:
    """Whether a pending run of a running task waits for ``node_id`` (one read, no lock).

    A long poll's periodic re-check asks this on a read-only session before it tries
    :func:`claim_next` (a write transaction): an idle node's re-check then costs one
    indexed read and takes no write lock."""
    query = select(Run.id).where(*_waiting(node_id)).limit(1)
    return session.scalar(query) is not None


def _refuse(session: Session, *, run: Run, task: Task, reason: str, settings: HubSettings) -> None:
    """Answer a pending run ``refused`` at the hub (its entitlement no longer holds)."""
    run.status = RunStatus.refused.value
    run.error = reason
    run.finished_at = utcnow()
    session.flush()
    record(
        session,
        action="run.refuse",
        actor="hub",
        objects={"run": run.id, "task": task.id, "dataset": run.dataset_id},
        hashes={"error": content_hash(reason)},
    )
    want_wake(session, f"task:{task.id}")
    finish_round(session, task=task, settings=settings)


def extend_leases(
    session: Session, *, node: Node, run_ids: Sequence[int], settings: HubSettings
) -> tuple[list[int], list[int]]:
    """Heartbeat: extend the leases ``node`` still holds; report the ones it lost."""
    extended: list[int] = []
    lost: list[int] = []
    now = utcnow()
    for run_id in run_ids:
        run = session.get(Run, run_id)
        if run is None or run.node_id != node.id:
            lost.append(run_id)
            continue
        if run.status == RunStatus.claimed.value:
            run.lease_expires_at = now + timedelta(seconds=settings.lease_seconds)
            extended.append(run_id)
        else:
            lost.append(run_id)
    return extended, lost


def expire_leases(session: Session, *, settings: HubSettings) -> int:
    """Send runs whose lease ran out back to pending, or fail them after the last attempt."""
    due = select(Run.id).where(
        Run.status == RunStatus.claimed.value, Run.lease_expires_at < utcnow()
    )
    ids = list(session.scalars(due))  # ids only: every sweep asks, and almost always none
    if not ids:
        return 0
    expired = list(session.scalars(select(Run).where(Run.id.in_(ids)).order_by(Run.id)))
    for run in expired:
        run.lease_id = None
        run.lease_expires_at = None
        if run.attempts >= settings.max_attempts:
            run.status = RunStatus.failed.value
            run.error = (
                f"lease expired {run.attempts} times (node stopped answering); "
                f"max attempts is {settings.max_attempts}"
            )
            run.finished_at = utcnow()
            record(
                session,
                action="run.fail",
                actor="hub",
                objects={"run": run.id, "task": run.task_id, "attempt": run.attempts},
                hashes={"error": content_hash(run.error)},
            )
            task = session.get(Task, run.task_id)
            if task is not None:
                finish_round(session, task=task, settings=settings)
        else:
            run.status = RunStatus.pending.value
            record(
                session,
                action="run.expire",
                actor="hub",
                objects={"run": run.id, "task": run.task_id, "attempt": run.attempts},
            )
            want_wake(session, f"node:{run.node_id}")
    return len(expired)


def fail_overdue_runs(session: Session, *, settings: HubSettings) -> int:
    """Fail each pending or claimed run older than its algorithm's deadline; end its round.

    Deadlines count from the run's creation (``HubSettings.run_deadline``), so a run whose
    node never comes back, or never claims it, ends; :func:`finish_round` then fails the
    task with the reason (or goes on without it where the algorithm allows). The reason
    names the deadline and the run's state, nothing of the node's data.
    """
    shortest = min([settings.run_deadline_seconds, *settings.run_deadlines.values()])
    now = utcnow()
    query = (
        select(Run.id, Task.algorithm, Run.created_at)
        .join(Task, Task.id == Run.task_id)
        .where(
            Run.status.in_([RunStatus.pending.value, RunStatus.claimed.value]),
            Task.status == TaskStatus.running.value,
            Run.created_at < now - timedelta(seconds=shortest),
        )
        .order_by(Run.id)
    )
    overdue = [
        run_id
        for run_id, algorithm, created in session.execute(query)
        if created < now - timedelta(seconds=settings.run_deadline(algorithm))
    ]
    failed = 0
    for run_id in overdue:
        locked = select(Run).where(Run.id == run_id)
        if not is_sqlite(session):  # one hub worker fails a run; the others skip it
            locked = locked.with_for_update(skip_locked=True)
        run = session.scalar(locked)
        if run is None or run.status not in (RunStatus.pending.value, RunStatus.claimed.value):
            continue
        task = session.get(Task, run.task_id)
        assert task is not None
        deadline = settings.run_deadline(task.algorithm)
        state = "never claimed" if run.status == RunStatus.pending.value else "claimed"
        run.error = f"deadline: no answer within {deadline:g} s ({state})"
        run.status = RunStatus.failed.value
        run.lease_id = None
        run.lease_expires_at = None
        run.finished_at = now
        session.flush()
        record(
            session,
            action="run.fail",
            actor="hub",
            objects={"run": run.id, "task": run.task_id, "attempt": run.attempts},
            hashes={"error": content_hash(run.error)},
        )
        want_wake(session, f"task:{task.id}")
        want_wake(session, f"node:{run.node_id}")
        finish_round(session, task=task, settings=settings)
        failed += 1
    return failed


def post_outcome(
    session: Session,
    *,
    node: Node,
    run_id: int,
    outcome: RunOutcome,
    settings: HubSettings,
    body_sha256: str | None = None,
    arrays: bytes | None = None,
) -> Run:
    """Accept a node's answer once; ``body_sha256`` is the hash of the bytes it sent.

    ``arrays`` is the safetensors part of a binary outcome (``medfed.common.arrays``,
    already parsed by the route): stored once as an ``output`` blob, the run row keeps its
    SHA-256 in ``output_blob`` beside the small JSON part with its references.
    """
    query = select(Run).where(Run.id == run_id)
    if not is_sqlite(session):
        query = query.with_for_update()
    run = session.scalar(query)
    # the task by identity: a batch of answers to one task loads its row once
    task = session.get(Task, run.task_id) if run is not None else None
    if run is None or task is None or run.node_id != node.id:
        raise NotFound(f"run {run_id} not found")
    if run.status in TERMINAL:
        if run.lease_id == outcome.lease_id:
            return run  # the same answer again: accepted once, this is a no-op
        raise Conflict(f"run {run_id} is finished already; this lease is stale")
    if run.status != RunStatus.claimed.value or run.lease_id != outcome.lease_id:
        raise Conflict(f"run {run_id}: stale lease (the run was handed out again)")
    if outcome.status == "done":
        if outcome.output_status is None:
            raise BadRequest("a done run needs output_status 'ok' or 'suppressed'")
        if outcome.output_status == "ok" and outcome.output is None:
            raise BadRequest("an ok output needs its output")
        if outcome.output_status == "suppressed" and outcome.output is not None:
            raise BadRequest("a suppressed output carries no values")
    run.status = outcome.status
    run.output_status = outcome.output_status if outcome.status == "done" else None
    run.output = outcome.output if outcome.status == "done" else None
    run.output_blob = None
    if arrays is not None and run.output is not None:
        run.output_blob = _store_arrays(session, arrays, run=run, settings=settings)
    run.error = outcome.error
    run.duration_s = outcome.duration_s
    run.filter_hash = outcome.filter_hash
    run.rowset_fingerprint = outcome.rowset_fingerprint
    run.rule = outcome.rule  # the category, for the stewards' view only (never the ledger)
    run.finished_at = utcnow()
    session.flush()
    hashes = {"outcome": body_sha256 or content_hash(outcome.model_dump(mode="json"))}
    if outcome.filter_hash is not None:
        hashes["filter"] = outcome.filter_hash
    if outcome.rowset_fingerprint is not None:
        hashes["rowsets"] = outcome.rowset_fingerprint
    record(
        session,
        action="run.finish",
        actor=actor_of(node),
        objects={
            "run": run.id,
            "task": run.task_id,
            "dataset": run.dataset_id,
            # not whether the output was withheld: any signed-in user reads the ledger,
            # and which node withheld is told to no researcher
            "status": run.status,
        },
        hashes=hashes,
    )
    want_wake(session, f"task:{task.id}")
    finish_round_soon(session, task=task, settings=settings)
    return run


def _store_arrays(session: Session, data: bytes, *, run: Run, settings: HubSettings) -> str:
    """Write a binary output's arrays to the blob store (once per content); its SHA-256."""
    from medfed.hub.services.learning import blobs

    digest = blobs.store_for(settings).write_bytes(data)
    blobs.register(
        session,
        sha256=digest,
        size=len(data),
        kind="output",
        task_id=run.task_id,
        node_id=run.node_id,
    )
    return digest


def airlock_event(
    session: Session, *, node: Node, run_id: int, event: str, outputs_sha256: str
) -> None:
    """Record a node's airlock event (held, released, refused) on a run it holds claimed.

    The entry carries the ids and the hash of the held outputs, never the outputs; the
    run's outcome follows as ``run.finish`` once the node's steward decided."""
    run = session.get(Run, run_id)
    if run is None or run.node_id != node.id:
        raise NotFound(f"run {run_id} not found")
    if run.status != RunStatus.claimed.value:
        raise Conflict(f"run {run_id} is {run.status}, not held by this node")
    record(
        session,
        action="run.airlock",
        actor=actor_of(node),
        objects={"run": run.id, "task": run.task_id, "dataset": run.dataset_id, "event": event},
        hashes={"outputs": outputs_sha256},
    )
