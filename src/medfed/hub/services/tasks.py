"""Tasks: creation (everything validated before anything is stored) and round aggregation.

Creating a task draws on its project's query budget (``access.budgets``: 429 with the
reset time once used up). A submission may carry an ``Idempotency-Key``: stored with the
task under a unique (user, key) constraint, so a retried request finds the task the first
one made (:func:`medfed.hub.services.task_keys.submitted`) and two racing requests make
one task.

Each round has one run per dataset (leased to nodes by ``medfed.hub.services.runs``).
When the last run of a round ends, :func:`finish_round` (same transaction) calls the
algorithm's aggregate step (a batch of answers written in one transaction asks once per
task, just before its commit: :func:`defer_rounds`, :func:`finish_round_soon`,
:func:`finish_deferred`): it finishes the task, starts the next round, or fails the
task — when any node refused (the reasons name each node's rule: a pooled result that
silently leaves out a hospital would mislead) or when fewer than ``min_nodes`` nodes gave
an unsuppressed answer. Runs that failed (a node that stopped answering) are left out if
enough others answered; the researcher sees each node's status.

Algorithms may declare a quorum (``Algorithm.quorum``: the round proceeds as soon as that
many runs are done, the rest closed as failed, and fewer fail the task), a round timeout
(``Algorithm.round_timeout``: :func:`close_overdue_rounds`, called by the hub's sweeper,
closes what is unfinished), client sampling (``Algorithm.participants``) and a hub context
for their aggregate step (``uses_hub_context``: blobs and privacy budget, learning).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, func, insert, select
from sqlalchemy.orm import Session, defer, make_transient_to_detached

from medfed.algorithms.base import Algorithm, Finished, NodeOutput
from medfed.algorithms.registry import get_algorithm
from medfed.common.errors import Forbidden, MedfedError, NotFound
from medfed.common.resources import RunStatus, TaskStatus
from medfed.common.timeutil import utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Dataset, Node, ProjectMember, Run, Task, User
from medfed.hub.db.session import execute_core, is_sqlite
from medfed.hub.dispatch import want_wake
from medfed.hub.services import cohorts, task_nodes
from medfed.hub.services import datasets as dataset_service
from medfed.hub.services.access import budgets, entitlements
from medfed.hub.services.catalogue import lifecycle
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.outputs import payload_of
from medfed.hub.services.projects import checked_limits, get_project
from medfed.ledger.entries import content_hash

log = logging.getLogger(__name__)

TERMINAL = {RunStatus.done.value, RunStatus.failed.value, RunStatus.refused.value}


def create_task(
    session: Session,
    *,
    actor: User,
    project_id: int,
    algorithm: str,
    dataset_refs: Sequence[int | str],
    raw_params: dict[str, Any],
    settings: HubSettings | None = None,
    idempotency_key: str | None = None,
    request_sha256: str | None = None,
) -> Task:
    """Validate everything and check the project's query budget, then store the task and
    its first round of runs (``settings``: the hub's, else those of the app's session).

    ``idempotency_key`` and ``request_sha256`` are stored with the task (see
    :mod:`medfed.hub.services.task_keys`); a second task with the same key of the same
    user fails the unique constraint (``IntegrityError`` at flush or commit) — the route
    answers it with the first.
    """
    project = checked_limits(session, project_id=project_id, user=actor)
    alg = get_algorithm(algorithm)
    loaded = _preload(session, [int(r) for r in dataset_refs if isinstance(r, int) or r.isdigit()])
    found = dataset_service.resolve(session, dataset_refs)
    del loaded
    lifecycle.require_usable(session, found)
    entitlements.require_entitled(session, project_id=project_id, datasets=found)
    cohort = cohorts.task_cohort(
        session, project_id=project_id, algorithm=alg.name, raw_params=raw_params, datasets=found
    )  # a saved cohort and its variables, when named (medfed.hub.services.cohorts)
    params = alg.parse_params(cohort.params)
    alg.validate(params, cohort.schemas([dataset_service.schema_of(d) for d in found]))
    budgets.require_task_budget(
        session,
        actor=actor,
        project=project,
        alg=alg,
        params=params.model_dump(mode="json", by_alias=True),
        found=found,
        settings=settings,
    )
    task = store_task(
        session,
        project_id=project_id,
        actor=actor,
        alg=alg,
        params=params,
        found=found,
        idempotency_key=idempotency_key,
        request_sha256=request_sha256,
    )
    if cohort.extra:
        task.params = {**task.params, **cohort.extra}
    record(
        session,
        action="task.create",
        actor=actor_of(actor),
        objects={
            "task": task.id,
            "project": project_id,
            "algorithm": f"{alg.name}@{alg.version}",
            "datasets": task.dataset_ids,
        },
        hashes={"params": content_hash(task.params)},
    )
    _create_runs(session, task, _participating(alg, params, task, found))
    return task


def store_task(
    session: Session,
    *,
    project_id: int,
    actor: User,
    alg: Algorithm[Any],
    params: Any,
    found: Sequence[Dataset],
    idempotency_key: str | None = None,
    request_sha256: str | None = None,
) -> Task:
    """Insert a running task (already validated); the caller records and runs it.

    One Core insert, and the task goes into the session as if it had been loaded (every
    column given, so the object holds what the row holds): the ORM's flush of a new
    object cost several times the statement. A second task with the same idempotency
    key fails here (``IntegrityError``), as a flush would."""
    values: dict[str, Any] = {
        "project_id": project_id,
        "created_by": actor.id,
        "algorithm": alg.name,
        "algorithm_version": alg.version,
        "params": params.model_dump(mode="json", by_alias=True),
        "dataset_ids": [d.id for d in found],
        "status": TaskStatus.running.value,
        "round": 0,
        "state": {},
        "result": None,
        "error": None,
        "created_at": utcnow(),
        "finished_at": None,
        "idempotency_key": idempotency_key,
        "request_sha256": request_sha256,
    }
    task = Task(id=execute_core(session, _INSERT_TASK, values).scalar_one(), **values)
    make_transient_to_detached(task)  # persistent once added: no insert at the next flush
    session.add(task)
    task_nodes.keep_at_commit(session, task.id, len({d.node_id for d in found}))
    return task


#: a task's row, given whole (built once)
_INSERT_TASK = insert(cast(Table, Task.__table__)).returning(Task.__table__.c.id)


def start_runs(session: Session, task: Task, found: Sequence[Dataset]) -> None:
    """Create the first round's runs of a stored task (and wake the nodes at commit)."""
    _create_runs(session, task, found)


def _preload(session: Session, dataset_ids: Sequence[int]) -> list[Dataset]:
    """Load these datasets in one query: while the caller holds the list (the session's
    identity map keeps objects only weakly), lookups by id find them in the session
    instead of asking the database once per dataset."""
    if len(dataset_ids) < 2:
        return []
    return list(session.scalars(select(Dataset).where(Dataset.id.in_(dataset_ids))))


def _participating(
    alg: Algorithm[Any], params: Any, task: Task, found: Sequence[Dataset]
) -> list[Dataset]:
    """The datasets the algorithm samples for the task's round (all unless it samples)."""
    chosen = set(alg.participants(params, task.round, task.state or {}, [d.id for d in found]))
    return [d for d in found if d.id in chosen]


_RUNS = cast(Table, Run.__table__)
#: a round's runs (built once: every task and round asks it)
_INSERT_RUNS = insert(_RUNS)


def _create_runs(session: Session, task: Task, found: Sequence[Dataset]) -> None:
    """Insert the round's runs in one Core statement (an executemany, no per-object flush
    and no ORM bulk bookkeeping: nothing in the session holds the new rows)."""
    if not found:
        return
    now = utcnow()
    execute_core(  # the task row first (flushed)
        session,
        _INSERT_RUNS,
        [
            {
                "task_id": task.id,
                "node_id": d.node_id,
                "dataset_id": d.id,
                "round": task.round,
                "status": RunStatus.pending.value,
                "attempts": 0,
                "created_at": now,
            }
            for d in found
        ],
    )
    for node_id in {d.node_id for d in found}:
        want_wake(session, f"node:{node_id}")


def get_task(session: Session, *, task_id: int, user: User) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    get_project(session, project_id=task.project_id, user=user)
    return task


def list_tasks(session: Session, *, user: User, project_id: int) -> list[Task]:
    get_project(session, project_id=project_id, user=user)
    return list(
        session.scalars(select(Task).where(Task.project_id == project_id).order_by(Task.id))
    )


#: a row of any columns (attribute access by column name)
AnyRow = Row[*tuple[Any, ...]]

#: a task's runs with their nodes' names, statuses only (outputs can be megabytes), as
#: plain rows (no ORM objects: every task read and every wait's answer asks it); built once
_RUNS_OF = (
    select(
        Run.id,
        Run.node_id,
        Run.dataset_id,
        Run.round,
        Run.status,
        Run.output_status,
        Run.attempts,
        Run.error,
        Node.name.label("node_name"),
    )
    .join(Node, Node.id == Run.node_id)
    .where(Run.task_id == bindparam("task"))
    .order_by(Run.round, Run.id)
)


def runs_of(session: Session, task_id: int) -> Sequence[AnyRow]:
    """The task's runs (:data:`_RUNS_OF`'s columns), this transaction's changes included."""
    session.flush()
    return session.connection().execute(_RUNS_OF, {"task": task_id}).all()


#: how many of a task's first round's runs have ended (a scalar subquery of the two
#: statements below, built once: every wait asks one of them on each wake-up)
_ENDED_IN_FIRST_ROUND = (
    select(func.count())
    .select_from(Run)
    .where(
        Run.task_id == bindparam("task"),
        Run.round
        == select(func.min(Run.round)).where(Run.task_id == bindparam("task")).scalar_subquery(),
        Run.status.not_in([RunStatus.pending.value, RunStatus.claimed.value]),
    )
    .scalar_subquery()
)
_STATUS = select(Task.status, Task.round, _ENDED_IN_FIRST_ROUND).where(Task.id == bindparam("task"))
#: what a member sees of a task (:class:`~medfed.common.resources.TaskPublic`; not its
#: state, a model's megabytes, nor its idempotency key), its first round's ended runs and
#: whether the user is a member of its project: one plain row
_CHECKED_VIEW = select(
    Task.id,
    Task.project_id,
    Task.algorithm,
    Task.algorithm_version,
    Task.params,
    Task.dataset_ids,
    Task.status,
    Task.round,
    Task.result,
    Task.error,
    Task.created_at,
    Task.finished_at,
    _ENDED_IN_FIRST_ROUND.label("answered"),
    select(ProjectMember.id)
    .where(ProjectMember.project_id == Task.project_id, ProjectMember.user_id == bindparam("user"))
    .exists()
    .label("member"),
).where(Task.id == bindparam("task"))


def progress_of(session: Session, *, task_id: int) -> tuple[str, int] | None:
    """The task's status and :func:`~medfed.common.resources.progress_mark`, from one small
    query (no run rows loaded); None if there is no such task. No access check: callers
    answer with :func:`get_task`, which checks it."""
    row = session.connection().execute(_STATUS, {"task": task_id}).first()
    if row is None:
        return None
    status, round_, answered = row
    return status, round_ * 100_000 + int(answered or 0)


def checked_view(session: Session, *, task_id: int, user: User) -> tuple[AnyRow, int]:
    """The task as a member of its project sees it (a row of :data:`_CHECKED_VIEW`) and its
    :func:`~medfed.common.resources.progress_mark`, in one statement with the access check
    of :func:`get_task` (the same refusals), without loading the task or its runs."""
    row = session.connection().execute(_CHECKED_VIEW, {"task": task_id, "user": user.id}).first()
    if row is None:
        raise NotFound(f"task {task_id} not found")
    if not user.is_superuser and not row.member:
        raise Forbidden(f"you are not a member of project {row.project_id}")
    return row, row.round * 100_000 + int(row.answered or 0)


_DEFERRED = "medfed.rounds_to_finish"


def defer_rounds(session: Session) -> None:
    """From now on :func:`finish_round_soon` only notes the task, until
    :func:`finish_deferred` (a batch of answers: one round check per task, not per answer)."""
    session.info[_DEFERRED] = {}


def finish_round_soon(session: Session, *, task: Task, settings: HubSettings) -> None:
    """:func:`finish_round` now, or before the commit where the session defers rounds."""
    deferred: dict[int, tuple[Task, HubSettings]] | None = session.info.get(_DEFERRED)
    if deferred is None:
        finish_round(session, task=task, settings=settings)
    else:
        deferred[task.id] = (task, settings)


def finish_deferred(session: Session) -> None:
    """Run :func:`finish_round` once for each task noted since :func:`defer_rounds`, in
    task id order (each locks its task row: two workers' batches lock them in one order)."""
    deferred: dict[int, tuple[Task, HubSettings]] = session.info.pop(_DEFERRED, None) or {}
    for _, (task, settings) in sorted(deferred.items()):
        finish_round(session, task=task, settings=settings)


#: a round of at most this many runs is loaded at once, not counted first (one statement
#: less for each answer of a small task; a large round's answers count, see _may_close)
_FEW_RUNS = 4


#: what the round's checks and its aggregate step read of its runs (outputs included), as
#: plain rows: a round of 1,000 runs is 1,000 rows, not 1,000 ORM objects to build and
#: track. Built once (building it cost as much as running it)
_ROUND_RUNS = select(
    _RUNS.c.id,
    _RUNS.c.node_id,
    _RUNS.c.dataset_id,
    _RUNS.c.status,
    _RUNS.c.output_status,
    _RUNS.c.output,
    _RUNS.c.output_blob,
    _RUNS.c.error,
).where(_RUNS.c.task_id == bindparam("task"), _RUNS.c.round == bindparam("round"))
#: a round's runs counted by status (every batch of answers to a large round asks it)
_ROUND_COUNTS = (
    select(_RUNS.c.status, func.count())
    .where(_RUNS.c.task_id == bindparam("task"), _RUNS.c.round == bindparam("round"))
    .group_by(_RUNS.c.status)
)


def finish_round(session: Session, *, task: Task, settings: HubSettings) -> None:
    """If every run of the task's current round has ended, aggregate (or fail the task)."""
    if not is_sqlite(session):
        session.refresh(task, with_for_update=True)
    if task.status != TaskStatus.running.value:
        return
    alg = get_algorithm(task.algorithm)
    if len(task.dataset_ids) > _FEW_RUNS and not _may_close(session, task, alg):
        return
    # with their outputs: only a round that may close (or a small one) gets here, and it
    # needs them (loaded run by run, a deferred column was a round trip per node); this
    # transaction's own run changes count (flushed first)
    which = {"task": task.id, "round": task.round}
    runs = execute_core(session, _ROUND_RUNS, which).all()
    if not runs:
        return
    if any(r.status not in TERMINAL for r in runs):
        need = alg.quorum(alg.parse_params(task.params), len(runs))
        done = sum(1 for r in runs if r.status == RunStatus.done.value)
        if need is None or done < need:
            return
        unfinished = [session.get(Run, r.id) for r in runs if r.status not in TERMINAL]
        close_round(
            session,
            task=task,
            runs=[run for run in unfinished if run is not None],
            reason="round closed: quorum reached",
        )
        runs = execute_core(session, _ROUND_RUNS, which).all()  # as closed
    answered = [r for r in runs if r.status == RunStatus.done.value]
    contributing = {r.node_id for r in answered if r.output_status == "ok"}
    want_wake(session, f"task:{task.id}", f"round:{task.id}")
    refused = [r for r in runs if r.status == RunStatus.refused.value]
    if refused:
        # a result that silently leaves out a hospital that said no would mislead
        reasons = "; ".join(f"{_node_name(session, r.node_id)} refused: {r.error}" for r in refused)
        _fail(task, reasons)
        _record_fail(session, task)
        return
    if alg.requires_every_dataset and len(answered) < len(runs):
        reasons = "; ".join(
            f"{_node_name(session, r.node_id)} {r.status}: {r.error}"
            for r in runs
            if r.status != RunStatus.done.value
        )
        _fail(task, f"{alg.name} needs every dataset for an exact result ({reasons})")
        _record_fail(session, task)
        return
    if len(contributing) < settings.min_nodes:
        reasons = "; ".join(
            f"run {r.id} {r.status}: {r.error}" for r in runs if r.status != RunStatus.done.value
        )
        _fail(
            task,
            f"only {len(contributing)} node(s) gave an unsuppressed answer; the hub needs at "
            f"least {settings.min_nodes}" + (f" ({reasons})" if reasons else ""),
        )
        _record_fail(session, task)
        return
    need = alg.quorum(alg.parse_params(task.params), len(runs))
    if need is not None and len(answered) < need:
        reasons = "; ".join(
            f"{_node_name(session, r.node_id)} {r.status}: {r.error}"
            for r in runs
            if r.status != RunStatus.done.value
        )
        _fail(
            task,
            f"only {len(answered)} of {len(runs)} runs of round {task.round} answered; "
            f"the quorum is {need} ({reasons})",
        )
        _record_fail(session, task)
        return
    outputs = [
        NodeOutput(
            node_id=r.node_id,
            dataset_id=r.dataset_id,
            status="ok" if r.output_status == "ok" else "suppressed",
            payload=payload_of(r, settings),  # arrays back in place (binary outputs)
        )
        for r in answered
    ]
    try:
        params = alg.parse_params(task.params)
        # a copy: an algorithm that edits the state in place must still have it saved
        if alg.uses_hub_context:
            from medfed.hub.services.learning.context import hub_context

            step = alg.aggregate_in(
                params,
                task.round,
                copy.deepcopy(task.state),
                outputs,
                hub_context(session, task=task, settings=settings),
            )
        else:
            step = alg.aggregate(params, task.round, copy.deepcopy(task.state), outputs)
        if isinstance(step, Finished):
            result = alg.Result.model_validate(step.result).model_dump(mode="json")
    except MedfedError as exc:
        _fail(task, exc.message)
        _record_fail(session, task)
        return
    except Exception as exc:  # an algorithm bug must fail the task, not the hub
        log.exception("aggregate step of task %s failed", task.id)
        _fail(task, f"aggregation failed: {type(exc).__name__}: {exc}")
        _record_fail(session, task)
        return
    if alg.uses_hub_context:
        from medfed.hub.services.learning.context import after_step

        after_step(session, task=task, step=step)
    if isinstance(step, Finished):
        task.result = result
        task.status = TaskStatus.completed.value
        task.finished_at = utcnow()
        record(
            session,
            action="result.release",
            actor="hub",
            objects={"task": task.id, "project": task.project_id, "datasets": task.dataset_ids},
            hashes={"result": content_hash(result)},
        )
        return
    if task.round + 1 >= alg.max_rounds:
        _fail(task, f"{alg.name} did not finish within {alg.max_rounds} rounds")
        _record_fail(session, task)
        return
    task.round += 1
    task.state = step.state
    record(
        session,
        action="task.round",
        actor="hub",
        objects={"task": task.id, "round": task.round},
        hashes={"state": content_hash(task.state)},
    )
    loaded = _preload(session, task.dataset_ids)
    found = [dataset_service.get_dataset(session, i) for i in task.dataset_ids]
    del loaded
    _create_runs(session, task, _participating(alg, params, task, found))


def _may_close(session: Session, task: Task, alg: Algorithm[Any]) -> bool:
    """Whether the round may end now, from one counting query (no run rows loaded).

    Each answer of a 1,000-run round asks this; only the last one (or the one that
    reaches the algorithm's quorum) goes on to load the round's runs.
    """
    # this transaction's own run changes count (flushed first)
    rows = execute_core(session, _ROUND_COUNTS, {"task": task.id, "round": task.round})
    counts: dict[str, int] = {row[0]: row[1] for row in rows}
    total = sum(counts.values())
    if total == 0:
        return False
    if all(status in TERMINAL for status in counts):
        return True
    need = alg.quorum(alg.parse_params(task.params), total)
    return need is not None and counts.get(RunStatus.done.value, 0) >= need


def close_round(session: Session, *, task: Task, runs: Sequence[Run], reason: str) -> None:
    """End the round's unfinished runs as failed with ``reason`` (quorum or timeout)."""
    for run in runs:
        if run.status in TERMINAL:
            continue
        run.status = RunStatus.failed.value
        run.error = reason
        run.lease_id = None
        run.lease_expires_at = None
        run.finished_at = utcnow()
        record(
            session,
            action="run.fail",
            actor="hub",
            objects={"run": run.id, "task": task.id, "attempt": run.attempts},
            hashes={"error": content_hash(reason)},
        )
    session.flush()


def close_overdue_rounds(session: Session, *, settings: HubSettings) -> int:
    """Close the current round of each running task whose algorithm's timeout passed."""
    closed = 0
    running = list(session.scalars(select(Task).where(Task.status == TaskStatus.running.value)))
    for task in running:
        alg = get_algorithm(task.algorithm)
        timeout = alg.round_timeout(alg.parse_params(task.params))
        if timeout is None:
            continue
        if not is_sqlite(session):  # one hub worker closes a round, the others wait
            session.refresh(task, with_for_update=True)
            if task.status != TaskStatus.running.value:
                continue
        runs = list(
            session.scalars(
                select(Run)
                .options(defer(Run.output))
                .where(Run.task_id == task.id, Run.round == task.round)
            )
        )
        if not runs or all(r.status in TERMINAL for r in runs):
            continue
        started = min(r.created_at for r in runs)
        if (utcnow() - started).total_seconds() < timeout:
            continue
        close_round(session, task=task, runs=runs, reason=f"round closed: timeout {timeout:g} s")
        want_wake(session, f"task:{task.id}", f"round:{task.id}")
        finish_round(session, task=task, settings=settings)
        closed += 1
    return closed


def _node_name(session: Session, node_id: int) -> str:
    node = session.get(Node, node_id)
    return node.name if node is not None else f"node {node_id}"


def _record_fail(session: Session, task: Task) -> None:
    record(
        session,
        action="task.fail",
        actor="hub",
        objects={"task": task.id, "project": task.project_id},
        hashes={"error": content_hash(task.error or "")},
    )


def _fail(task: Task, error: str) -> None:
    task.status = TaskStatus.failed.value
    task.error = error
    task.finished_at = utcnow()
