"""Runs at nodes: leasing, heartbeats, lease expiry and accepting an answer once.

Run states: pending → claimed → done | failed | refused. A node claims a pending run with
a lease (``lease_id``, ``lease_expires_at``); heartbeats extend the leases it holds. A
lease that expires is handed back to pending by the hub's sweeper (another claim bumps
``attempts``) until ``max_attempts``, then the run fails with the reason. An answer is
accepted once: the same lease posting again is a no-op, any other lease gets a
:class:`Conflict`. A batch of answers is written ahead of its jobs in two statements
(:func:`write_answers`); on PostgreSQL a claim finds and leases its run in one. Ending
the last run of a round hands over to :func:`medfed.hub.services.tasks.finish_round` (an
answer: through ``finish_round_soon``, once per task in a batch of answers). The
``run.finish`` ledger entry holds the hash of the bytes the node sent and, from nodes
that send them, its keyed filter hash (``filter``) and row-set fingerprint
(``rowsets``); the rule's category stays in the run row, for the stewards' query view.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import Integer, Select, Table, bindparam, exists, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from medfed.common.errors import BadRequest, Conflict, NotFound
from medfed.common.resources import RunAssignment, RunOutcome, RunStatus, TaskStatus
from medfed.common.timeutil import utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Dataset, Node, Run, Task
from medfed.hub.db.models_access import DiscoveryQuery, Entitlement
from medfed.hub.db.session import execute_core, is_sqlite
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


#: the tables: the claim and the answer run Core statements (no ORM objects for the run)
_RUNS, _TASKS, _DATASETS, _DISCOVERY, _ENTITLEMENTS = (
    cast(Table, m.__table__) for m in (Run, Task, Dataset, DiscoveryQuery, Entitlement)
)


def _waiting(node_id: Any, run: Any = _RUNS.c, task: Any = _TASKS.c) -> list[Any]:
    """The conditions of a run (columns ``run``, joined to ``task``) that waits for
    ``node_id``: a pending run of a running task; one definition for the claim, its "more"
    test and :func:`has_work`."""
    return [
        run.node_id == node_id,
        run.status == RunStatus.pending.value,
        task.id == run.task_id,
        task.status == TaskStatus.running.value,
    ]


def _claim_query(postgres: bool) -> Select[Any]:
    """The oldest run waiting for node ``:node``, with what its assignment needs (task
    fields, dataset name, the project's entitlement active at ``:now``), whether its task
    is a discovery query and whether another run waits for the node beside it: one
    statement of columns, no ORM objects."""
    r, t, d = _RUNS.c, _TASKS.c, _DATASETS.c
    node = bindparam("node", type_=Integer)
    now = bindparam("now", type_=r.claimed_at.type)
    other, other_task = _RUNS.alias("other_run"), _TASKS.alias("other_task")
    active = _ENTITLEMENTS.alias("active")
    query = (
        select(
            r.id,
            r.task_id,
            r.round,
            r.attempts,
            t.project_id,
            t.algorithm,
            t.algorithm_version,
            t.params,
            t.state,
            d.id.label("dataset_id"),
            d.name.label("dataset_name"),
            d.manifest_root,
            active.c.id.label("entitlement_id"),
            active.c.starts_at.label("entitled_from"),
            active.c.ends_at.label("entitled_until"),
            exists().where(_DISCOVERY.c.task_id == t.id).label("discovery"),
            exists()
            .where(*_waiting(node, other.c, other_task.c), other.c.id != r.id)
            .label("more"),
        )
        .select_from(
            _RUNS.join(_TASKS, t.id == r.task_id)
            .join(_DATASETS, d.id == r.dataset_id)
            .outerjoin(active, active.c.id == entitlements.first_active(t.project_id, d.id, now))
        )
        .where(*_waiting(node))
        .order_by(r.id)
        .limit(1)
    )
    return query.with_for_update(skip_locked=True, of=_RUNS) if postgres else query


def _lease_values() -> dict[str, Any]:
    """What a lease writes: the run claimed under ``:lease`` until ``:expires``, one more
    attempt."""
    return {
        "status": RunStatus.claimed.value,
        "attempts": _RUNS.c.attempts + 1,
        "lease_id": bindparam("lease"),
        "claimed_at": bindparam("now"),
        "lease_expires_at": bindparam("expires"),
    }


def _claim_and_lease() -> Select[Any]:
    """PostgreSQL: the claim's query and the lease's update as one statement (a
    data-modifying ``WITH``: the update leases the row the query found and locked); the
    row as the query found it, before the lease (its ``attempts`` the earlier count)."""
    picked = _claim_query(True).cte("picked")
    leased = update(_RUNS).where(_RUNS.c.id == picked.c.id).values(_lease_values()).cte("leased")
    return select(picked).add_cte(leased)


#: built once per dialect: a statement object keeps its cache key, so a claim costs no
#: statement building (building it per call cost more than running it). SQLite (in
#: process: no round trip to save) finds the run, then leases it; PostgreSQL does both in
#: one statement, one round trip (a refused grant hands the lease back: :func:`_unlease`)
_CLAIM = _claim_query(False)
_CLAIM_AND_LEASE = _claim_and_lease()
_LEASE = update(_RUNS).where(_RUNS.c.id == bindparam("run")).values(_lease_values())


def _written(session: Session, run_id: int) -> None:
    """After a Core update of run ``run_id``: a copy the session holds reads it again."""
    held = session.identity_map.get(identity_key(Run, run_id))
    if held is not None:
        session.expire(held)


def claim_next(session: Session, *, node: Node, settings: HubSettings) -> Claim:
    """Lease the oldest pending run of ``node``: one query (the run, what its assignment
    needs, its grant's entitlement) and one update (on PostgreSQL one statement), a
    ledger entry.

    Runs whose lease ran out are handed back by the hub's sweeper
    (:func:`expire_leases`, every ``sweep_seconds``), not by each claim."""
    now = utcnow()
    lease_id = secrets.token_hex(16)
    expires = now + timedelta(seconds=settings.lease_seconds)
    leased = not is_sqlite(session)
    query = _CLAIM_AND_LEASE if leased else _CLAIM
    lease = {"node": node.id, "now": now, "lease": lease_id, "expires": expires}
    row = execute_core(session, query, lease).first()
    if row is None:
        return Claim(None, more=False)
    grant = entitlements.grant_for_run(
        session,
        project_id=row.project_id,
        dataset=entitlements.DatasetRef(row.dataset_id, row.dataset_name, row.manifest_root),
        node_id=node.id,
        settings=settings,
        discovery=bool(row.discovery),
        active=None
        if row.entitlement_id is None
        else entitlements.ActiveWindow(row.entitlement_id, row.entitled_from, row.entitled_until),
        now=now,
    )
    if leased:
        _written(session, row.id)
    if isinstance(grant, str):  # entitlement ended or revoked since the task was created
        run, task = session.get(Run, row.id), session.get(Task, row.task_id)
        assert run is not None and task is not None
        if leased:
            _unlease(run, attempts=row.attempts)
        _refuse(session, run=run, task=task, reason=grant, settings=settings)
        return claim_next(session, node=node, settings=settings)
    attempt = row.attempts + 1
    if not leased:
        execute_core(
            session, _LEASE, {"run": row.id, "lease": lease_id, "now": now, "expires": expires}
        )
        _written(session, row.id)
    record(
        session,
        action="run.claim",
        actor=actor_of(node),
        objects={"run": row.id, "task": row.task_id, "dataset": row.dataset_id, "attempt": attempt},
    )
    # no wake-up of ``task:{id}``: a claim moves no waiter's answer (progress counts
    # answered runs; the waits answer on progress or the end), so nobody re-reads for it
    assignment = RunAssignment(
        run_id=row.id,
        task_id=row.task_id,
        project_id=row.project_id,
        round=row.round,
        algorithm=row.algorithm,
        algorithm_version=row.algorithm_version,
        params=row.params,
        state=row.state,
        dataset_id=row.dataset_id,
        dataset_name=row.dataset_name,
        lease_id=lease_id,
        lease_expires_at=expires,
        attempt=attempt,
        entitlement=grant.entitlement,
        discovery=grant.discovery,
        task_nodes=task_nodes.count(session, row.task_id),
    )
    return Claim(assignment, more=bool(row.more))


_LAPSE = (
    update(_RUNS)
    .where(
        _RUNS.c.id == bindparam("run"),
        _RUNS.c.lease_id == bindparam("lease"),
        _RUNS.c.status == RunStatus.claimed.value,
    )
    .values(lease_expires_at=bindparam("now"))
)


def lapse_lease(session: Session, *, run_id: int, lease_id: str) -> None:
    """End a lease now (a claim handed to a poll whose node had gone): the sweeper hands
    the run back out on its next pass (:func:`expire_leases`), as if the lease ran out.
    Nothing happens where the lease is no longer the run's."""
    session.execute(_LAPSE, {"run": run_id, "lease": lease_id, "now": utcnow()})
    _written(session, run_id)


def _unlease(run: Run, *, attempts: int) -> None:
    """Hand back the lease a claim's statement took (the grant was refused): the run as it
    was before the claim."""
    run.status = RunStatus.pending.value
    run.attempts = attempts
    run.lease_id = None
    run.claimed_at = None
    run.lease_expires_at = None


def has_work(session: Session, *, node_id: int) -> bool:
    """Whether a pending run of a running task waits for ``node_id`` (one read, no lock).

    A long poll's periodic re-check asks this on a read-only session before it tries
    :func:`claim_next` (a write transaction): an idle node's re-check then costs one
    indexed read and takes no write lock."""
    query = select(_RUNS.c.id).where(*_waiting(node_id)).limit(1)
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


#: what the checks of an answer read of its run (who holds it, under which lease, for
#: which task); Core, built once
_HOLDER = select(
    _RUNS.c.id,
    _RUNS.c.status,
    _RUNS.c.lease_id,
    _RUNS.c.node_id,
    _RUNS.c.task_id,
    _RUNS.c.dataset_id,
)
#: the answer's read of its run (locked on PostgreSQL), for the checks
_ANSWERED = _HOLDER.where(_RUNS.c.id == bindparam("run"))
_ANSWERED_LOCKED = _ANSWERED.with_for_update()
#: what an answer writes to its run (the update's ``new_*`` values)
_ANSWERED_COLUMNS = (
    "status",
    "output_status",
    "output",
    "output_blob",
    "error",
    "duration_s",
    "filter_hash",
    "rowset_fingerprint",
    "rule",
    "finished_at",
)
#: the answer's write, only where the node still holds the run under this lease: for many
#: answers at once (an ``executemany``, so no ``RETURNING``) ...
_ANSWER_MANY = (
    update(_RUNS)
    .where(
        _RUNS.c.id == bindparam("run"),
        _RUNS.c.node_id == bindparam("node"),
        _RUNS.c.status == RunStatus.claimed.value,
        _RUNS.c.lease_id == bindparam("lease"),
    )
    .values({column: bindparam(f"new_{column}") for column in _ANSWERED_COLUMNS})
)
#: ... and for one, returning what its ledger entry needs
_ANSWER = _ANSWER_MANY.returning(_RUNS.c.task_id, _RUNS.c.dataset_id)
#: a batch's answered runs, read (locked on PostgreSQL) before their answers are written
_HELD = _HOLDER.where(_RUNS.c.id.in_(bindparam("runs", expanding=True)))
_HELD_LOCKED = _HELD.with_for_update()
#: ``session.info`` key: (run id, lease id) → its run as :func:`write_answers` read it
#: (task, dataset) where it wrote the answer, None where the answer matched nothing;
#: until that answer's job takes it
_WRITTEN_AHEAD = "medfed.runs.written_ahead"


def write_answers(session: Session, answers: Sequence[tuple[int, int, RunOutcome]]) -> None:
    """Write a batch's answers (node id, run id, outcome) ahead of their jobs, in two
    statements for the batch: one read of their runs (locked on PostgreSQL; SQLite's
    transaction holds the write lock), and one ``executemany`` of the answer's update for
    those whose run this node still holds under this lease (psycopg sends them in one
    pipeline). Each answer's :func:`post_outcome` then takes its row (or learns it matched
    nothing, and checks why) instead of writing it: a batch of n answers costs two round
    trips, not n.

    Left to their jobs: an answer that needs checks first (:func:`_problem`), and every
    answer to a run whose first answer in the batch is one of those or comes again, so
    the answers to one run are taken in their jobs' order as before. Nothing is done for
    fewer than two."""
    seen: set[int] = set()
    ahead: list[dict[str, Any]] = []
    for node_id, run_id, outcome in answers:
        if run_id in seen:
            ahead = [a for a in ahead if a["run"] != run_id]
            continue
        seen.add(run_id)
        if _problem(outcome) is None:
            ahead.append(_answer_values(node_id, run_id, outcome))
    if len(ahead) < 2:
        return
    query = _HELD if is_sqlite(session) else _HELD_LOCKED
    runs = {"runs": [a["run"] for a in ahead]}
    held = {row.id: row for row in execute_core(session, query, runs)}
    matched = [
        a
        for a in ahead
        if (run := held.get(a["run"])) is not None
        and (run.node_id, run.status, run.lease_id)
        == (a["node"], RunStatus.claimed.value, a["lease"])
    ]
    if matched:
        session.connection().execute(_ANSWER_MANY, matched)
    written = {a["run"] for a in matched}
    for run_id in written:
        _written(session, run_id)
    session.info[_WRITTEN_AHEAD] = {
        (a["run"], a["lease"]): held[a["run"]] if a["run"] in written else None for a in ahead
    }


def _answer_values(node_id: int, run_id: int, outcome: RunOutcome) -> dict[str, Any]:
    """The parameters of :data:`_ANSWER` for an answer."""
    done = outcome.status == "done"
    return {
        "run": run_id,
        "node": node_id,
        "lease": outcome.lease_id,
        "new_status": outcome.status,
        "new_output_status": outcome.output_status if done else None,
        "new_output": outcome.output if done else None,
        "new_output_blob": None,
        "new_error": outcome.error,
        "new_duration_s": outcome.duration_s,
        "new_filter_hash": outcome.filter_hash,
        "new_rowset_fingerprint": outcome.rowset_fingerprint,
        # the category, for the stewards' view only (never the ledger)
        "new_rule": outcome.rule,
        "new_finished_at": utcnow(),
    }


def _problem(outcome: RunOutcome) -> str | None:
    """What makes ``outcome`` unacceptable whatever the run's state, or None."""
    if outcome.status != "done":
        return None
    if outcome.output_status is None:
        return "a done run needs output_status 'ok' or 'suppressed'"
    if outcome.output_status == "ok" and outcome.output is None:
        return "an ok output needs its output"
    if outcome.output_status == "suppressed" and outcome.output is not None:
        return "a suppressed output carries no values"
    return None


def post_outcome(
    session: Session,
    *,
    node: Node,
    run_id: int,
    outcome: RunOutcome,
    settings: HubSettings,
    body_sha256: str | None = None,
    arrays: bytes | None = None,
) -> str:
    """Accept a node's answer once; the run's status after it. ``body_sha256`` is the hash
    of the bytes it sent.

    ``arrays`` is the safetensors part of a binary outcome (``medfed.common.arrays``,
    already parsed by the route): stored once as an ``output`` blob, the run row keeps its
    SHA-256 in ``output_blob`` beside the small JSON part with its references. A valid
    JSON answer is one statement (or none: :func:`write_answers` wrote it with its
    batch's others): an update that holds only while the node still holds the run under
    that lease; where it matched nothing, or the answer needs checks first
    (a malformed one, arrays to store), the run is read and checked in order (not found,
    the same answer again: a no-op, a stale lease, then the answer itself). The task is
    loaded by identity (a batch of answers to one task reads that row once).
    """
    done = outcome.status == "done"
    output = outcome.output if done else None
    problem = _problem(outcome)
    binary = arrays is not None and output is not None
    values = _answer_values(node.id, run_id, outcome)
    ahead: dict[tuple[int, str], Any] = session.info.get(_WRITTEN_AHEAD, {})
    written = None
    if (run_id, outcome.lease_id) in ahead:  # written with the batch's others
        written = ahead.pop((run_id, outcome.lease_id))
    elif problem is None and not binary:
        written = execute_core(session, _ANSWER, values).first()
    if written is None:
        query = _ANSWERED if is_sqlite(session) else _ANSWERED_LOCKED
        run = execute_core(session, query, {"run": run_id}).first()
        if run is None or run.node_id != node.id:
            raise NotFound(f"run {run_id} not found")
        if run.status in TERMINAL:
            if run.lease_id == outcome.lease_id:
                return str(run.status)  # the same answer again: accepted once, a no-op
            raise Conflict(f"run {run_id} is finished already; this lease is stale")
        if run.status != RunStatus.claimed.value or run.lease_id != outcome.lease_id:
            raise Conflict(f"run {run_id}: stale lease (the run was handed out again)")
        if problem is not None:
            raise BadRequest(problem)
        if binary:
            assert arrays is not None
            values["new_output_blob"] = _store_arrays(
                session, arrays, task_id=run.task_id, node_id=run.node_id, settings=settings
            )
        written = execute_core(session, _ANSWER, values).one()  # the row is held: it matches
    task = session.get(Task, written.task_id)
    if task is None:
        raise NotFound(f"run {run_id} not found")
    _written(session, run_id)
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
            "run": run_id,
            "task": written.task_id,
            "dataset": written.dataset_id,
            # not whether the output was withheld: any signed-in user reads the ledger,
            # and which node withheld is told to no researcher
            "status": outcome.status,
        },
        hashes=hashes,
    )
    want_wake(session, f"task:{task.id}")
    finish_round_soon(session, task=task, settings=settings)
    return outcome.status


def _store_arrays(
    session: Session, data: bytes, *, task_id: int, node_id: int, settings: HubSettings
) -> str:
    """Write a binary output's arrays to the blob store (once per content); its SHA-256."""
    from medfed.hub.services.learning import blobs

    digest = blobs.store_for(settings).write_bytes(data)
    blobs.register(
        session, sha256=digest, size=len(data), kind="output", task_id=task_id, node_id=node_id
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
