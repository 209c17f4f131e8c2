"""Routes for researchers' tasks: create, list, read, and a long poll for progress.

``GET /api/tasks/{id}/wait`` returns as soon as the task changes (a run claimed or
answered, a round aggregated) or after ``timeout`` seconds, so clients follow progress
without sleeping between polls. ``POST /api/tasks`` takes an ``Idempotency-Key`` header
(Stripe style): clients may resend a submission whose answer they lost. With ``?wait=``
the submission holds its answer until the task ends (the end-only wait, subscribed before
the task commits), so a short task costs its researcher one request, not two. A wait for
the end is parked while it waits (:mod:`medfed.hub.handoff`): the transaction that ends
the task reads it for the waiter (:func:`end_view`, access checked) and hands it over, so
the answer needs no read of its own; a submission claims, in its own transaction, the
runs of node polls waiting in this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, TypeVar, cast

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medfed.common.errors import Forbidden, MedfedError, NotFound
from medfed.common.resources import (
    NodeRunStatus,
    RunStatus,
    TaskCreate,
    TaskPublic,
    TaskStatus,
    progress_mark,
)
from medfed.hub.api.deps import CurrentUser, DetachedUser, SessionDep
from medfed.hub.api.errors import ErrorBody
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Task, User
from medfed.hub.dispatch import Notifier, Subscription
from medfed.hub.handoff import Handoffs, commit_serving
from medfed.hub.services import task_keys, tasks
from medfed.hub.services.accounts import require_superuser
from medfed.ledger.entries import content_hash

router = APIRouter(prefix="/api", tags=["tasks"])

T = TypeVar("T")


def task_public(session: Session, task: Task | tasks.AnyRow) -> TaskPublic:
    """The task as a project member sees it: each node's first-round run, never later ones.

    ``task``: the ORM object, or its :func:`~medfed.hub.services.tasks.checked_view` row.
    Rounds after the first go only to the nodes that contributed to the first (a GLM's
    iterations, a training's rounds): listing them per node would say which node withheld.
    ``round`` and the counts say how far the task is; :func:`runs_public` (hub admins)
    lists every run.
    """
    public = TaskPublic.model_validate(task)
    runs = tasks.runs_of(session, task.id)
    first = min((run.round for run in runs), default=0)
    public.runs = [_run_status(run) for run in runs if run.round == first]
    latest = max((run.round for run in runs), default=0)
    entered = {r.node_id for r in runs if r.round == first and r.status == "done"}
    contributed = {
        r.node_id
        for r in runs
        if r.round == latest and r.status == RunStatus.done.value and r.output_status == "ok"
    }
    public.contributing_nodes = len(contributed)
    public.withheld_nodes = len(entered - contributed)
    if task.status != TaskStatus.completed.value:
        public.result = None
    return public


def _run_status(run: tasks.AnyRow) -> NodeRunStatus:
    """One of :func:`~medfed.hub.services.tasks.runs_of`'s rows as a member sees it."""
    return NodeRunStatus(
        run_id=run.id,
        node_id=run.node_id,
        node_name=run.node_name,
        dataset_id=run.dataset_id,
        round=run.round,
        status=RunStatus(run.status),
        output_status=None,  # which node withheld is not shown; the counts are
        attempts=run.attempts,
        error=run.error,
    )


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=task_keys.MAX_IDEMPOTENCY_KEY,
        description="a key for this logical submission (1 to 255 printable ASCII "
        "characters, e.g. a UUID), scoped to the user: a repeat with the same key and the "
        "same body returns the task the first request created (200, header "
        "Idempotent-Replayed: true) instead of creating another; the same key with another "
        "body is refused (422). Keys are kept as long as their task.",
    ),
]


@router.post(
    "/tasks",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": TaskPublic,
            "description": "a repeat of an earlier submission (same Idempotency-Key and body): "
            "the task it created, as it is now",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "true: this answer repeats an earlier submission",
                    "schema": {"type": "string"},
                }
            },
        },
        422: {
            "model": ErrorBody,
            "description": "invalid input, or an Idempotency-Key already used with another body",
        },
        429: {
            "model": ErrorBody,
            "description": "the project's query budget is used up (see resets_at)",
        },
    },
)
async def create_task(
    body: TaskCreate,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    wait: float = Query(
        default=0.0,
        ge=0,
        le=60,
        description="seconds the answer may be held until the task ends (0: answer at once). "
        "A task that ends within them is answered ended, with its result (201), in this one "
        "request; one that does not is answered running, and is followed with "
        "/api/tasks/{id}/wait. A repeated submission (Idempotency-Key) is answered at once.",
    ),
) -> TaskPublic:
    """Start a task; 429 (``resets_at``, ``Retry-After``) once the query budget is used up.

    With an ``Idempotency-Key``, a repeat of the request returns the task the first one
    created (200) — also when two copies race: the unique (user, key) constraint lets one
    insert win and the other answers with the winner. With ``wait``, the answer is held
    until the task ends (as ``/wait?progress=false`` would answer it) or ``wait`` passes.
    """
    deadline = time.monotonic() + wait
    loop = asyncio.get_running_loop() if wait > 0 else None
    public, held = await run_in_threadpool(
        _create, body, request, user, session, response, idempotency_key, loop
    )
    if held is None:
        return public
    return await _until_end(request, public.id, user, deadline, held, created=public)


def _create(
    body: TaskCreate,
    request: Request,
    user: User,
    session: Session,
    response: Response,
    idempotency_key: str | None,
    hold_on: asyncio.AbstractEventLoop | None,
) -> tuple[TaskPublic, Subscription | None]:
    """The task created (or the earlier one replayed) and its view; with ``hold_on``, a
    subscription to the new task's end on that loop, made before the commit.

    A submission with a key is created without looking the key up first (a resend is the
    rare case): the unique (user, key) constraint refuses a second task with it, and only
    then, or where the checks refused the submission (a replay is answered whatever they
    would say now: the budget its first try used up, say), is the earlier task read."""
    # the app's settings and notifier read here, not as dependencies (each costs a submit)
    settings: HubSettings = request.app.state.settings
    notifier: Notifier = request.app.state.notifier
    digest = content_hash(body.model_dump(mode="json"))
    if idempotency_key is not None:
        task_keys.check_idempotency_key(idempotency_key)
    held: Subscription | None = None
    try:
        task = tasks.create_task(
            session,
            actor=user,
            project_id=body.project_id,
            algorithm=body.algorithm,
            dataset_refs=body.datasets,
            raw_params=body.params,
            settings=settings,
            idempotency_key=idempotency_key,
            request_sha256=digest,
        )
        # the view is read in the task's own transaction: after the commit it would begin
        # another, on SQLite queueing for the write lock behind the claim the commit woke
        public = task_public(session, task)
        if hold_on is not None:  # before the commit: a task that ends at once still wakes it
            held = notifier.subscribe(_end_key(task.id), loop=hold_on)
        # the node polls waiting in this process get their runs claimed in this transaction
        commit_serving(request.app.state.handoffs, session, notifier)
    except BaseException as exc:
        if held is not None:
            held.close()
        if idempotency_key is None or not isinstance(exc, IntegrityError | MedfedError):
            raise
        session.rollback()  # nothing of this try is kept
        # the same key and body: the earlier task; another body: refused (422); none: the
        # error this try met
        earlier = task_keys.submitted(
            session, actor=user, key=idempotency_key, request_sha256=digest
        )
        if earlier is None:
            raise
        return _replayed(session, earlier, response), None
    return public, held


def _replayed(session: Session, task: Task, response: Response) -> TaskPublic:
    response.status_code = status.HTTP_200_OK
    response.headers["Idempotent-Replayed"] = "true"
    return task_public(session, task)


@router.get("/tasks")
def list_tasks(project_id: int, user: CurrentUser, session: SessionDep) -> list[TaskPublic]:
    return [
        task_public(session, t) for t in tasks.list_tasks(session, user=user, project_id=project_id)
    ]


@router.get("/tasks/{task_id}")
def get_task(task_id: int, user: CurrentUser, session: SessionDep) -> TaskPublic:
    return task_public(session, tasks.checked_view(session, task_id=task_id, user=user)[0])


@router.get("/tasks/{task_id}/runs")
def runs_public(task_id: int, user: CurrentUser, session: SessionDep) -> list[NodeRunStatus]:
    """Every run of every round, with each node's output status: the hub administrator's view.

    Operators need it to see which node is stuck in which round; researchers get only the
    first round (:func:`task_public`), because later rounds list only the contributors.
    """
    require_superuser(user, "listing every run of a task")
    return every_run(session, tasks.get_task(session, task_id=task_id, user=user))


def every_run(session: Session, task: Task) -> list[NodeRunStatus]:
    """All runs of all rounds with their output status (for the hub administrator only)."""
    return [
        _run_status(run).model_copy(update={"output_status": run.output_status})
        for run in tasks.runs_of(session, task.id)
    ]


def _read(request: Request, task_id: int, user: User) -> TaskPublic:
    # read-only: on SQLite a snapshot beside the writers, not a turn in their queue
    with request.app.state.read_sessionmaker() as session:
        return task_public(session, tasks.checked_view(session, task_id=task_id, user=user)[0])


def _progress(request: Request, task_id: int) -> tuple[str, int] | None:
    with request.app.state.read_sessionmaker() as session:
        return tasks.progress_of(session, task_id=task_id)


def _look(request: Request, task_id: int, user: User) -> TaskPublic | int:
    """The ended task as the member sees it, else only its progress mark, in one session.

    Every pass checks access, in the same statement that reads the mark."""
    with request.app.state.read_sessionmaker() as session:
        task, done = tasks.checked_view(session, task_id=task_id, user=user)
        if task.status == TaskStatus.running.value:
            return done
        return task_public(session, task)


#: a wait that saw progress (not the end) answers no sooner than this after it began, so
#: a round of 1,000 runs answers a follower a few times a second, not 1,000 times
PROGRESS_EVERY_SECONDS = 0.25


@router.get("/tasks/{task_id}/wait")
async def wait_task(
    task_id: int,
    request: Request,
    user: DetachedUser,  # its reads open their own sessions: the request opens none
    timeout: float = Query(default=10.0, ge=0, le=60),
    seen_runs_done: int = Query(default=-1, description="return at once if progress differs"),
    answer_progress: bool = Query(
        default=True,
        alias="progress",
        description="false: answer only at the end or the timeout, not on progress",
    ),
) -> TaskPublic:
    """The task once it has finished or changed since ``seen_runs_done``, else at timeout.

    With ``progress=false`` only the end (or the timeout) answers: a client that shows no
    progress does not have a round of 1,000 runs re-sent to it a few times a second."""
    started = time.monotonic()
    deadline = started + timeout
    if not answer_progress:
        return await _until_end(request, task_id, user, deadline, None)
    # The first pass checks access and reads the whole task as the member sees it; passes
    # after a wake-up (every answer wakes ``task:{id}``) read only the progress mark, and
    # the whole task is read to answer. An end answers at once; progress seen during the
    # wait answers once PROGRESS_EVERY_SECONDS have passed since the call began.
    settings = request.app.state.settings
    notifier: Notifier = request.app.state.notifier
    public: TaskPublic | None = None
    fresh = False  # whether ``public`` is the latest read
    first = True
    while True:
        subscription = notifier.subscribe(f"task:{task_id}")
        try:
            if first:
                first = False
                public = await run_in_threadpool(_read, request, task_id, user)
                status_, done = public.status.value, progress_mark(public)
                fresh = True
                ended = status_ != TaskStatus.running.value
                if ended or done != seen_runs_done:
                    if ended or seen_runs_done >= 0:
                        return public
                    seen_runs_done = done
            else:
                fresh = False
                progress = await run_in_threadpool(_progress, request, task_id)
                status_, done = progress if progress is not None else ("", seen_runs_done)
                due = time.monotonic() - started >= PROGRESS_EVERY_SECONDS
                if status_ != TaskStatus.running.value or (done != seen_runs_done and due):
                    return await run_in_threadpool(_read, request, task_id, user)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if fresh and public is not None:
                    return public
                return await run_in_threadpool(_read, request, task_id, user)
            pause = min(remaining, settings.recheck_seconds)
            if done != seen_runs_done:  # progress to tell: wake when it is due
                pause = min(pause, max(0.0, started + PROGRESS_EVERY_SECONDS - time.monotonic()))
            await subscription.wait(pause)
        finally:
            subscription.close()


def end_view(session: Session, waiting: tuple[int, User]) -> TaskPublic | None:
    """The hand-over's server for round keys: the task as :func:`_look` would answer a
    waiter for its end, read in the transaction that ended it; None while the task runs
    (a round closed, not the last) or where the caller's access is gone (the waiter then
    reads for itself and answers as it would have)."""
    task_id, user = waiting
    held = session.get(Task, task_id)  # the round's close loaded it: no statement
    if held is not None and held.status == TaskStatus.running.value:
        return None
    session.flush()  # the end as the statements below read it (the commit flushes anyway)
    try:
        task, _ = tasks.checked_view(session, task_id=task_id, user=user)
    except (Forbidden, NotFound):
        return None
    if task.status == TaskStatus.running.value:
        return None
    return task_public(session, task)


def _end_key(task_id: int) -> str:
    """Woken when one of the task's rounds closes (its end with it), not by each answer."""
    return f"round:{task_id}"


async def _until_end(
    request: Request,
    task_id: int,
    user: User,
    deadline: float,
    armed: Subscription | None,
    *,
    created: TaskPublic | None = None,
) -> TaskPublic:
    """The task once it ends, else as it is at ``deadline``: a wait for the end alone.

    Each pass subscribes to the task's end key before it reads, in one statement with
    the access check, the task's status (:func:`_look`; the ended task with it); at
    ``deadline`` the task is read as it is then. ``armed``: a subscription made before the
    task could change (a submit's, before its commit), so the first pass only waits.
    ``created``: the submit's own view of its new task, the answer where the caller's
    access ends during the hold (the task was made: the hold tells no more than the
    creation did, and refuses nothing)."""
    settings: HubSettings = request.app.state.settings
    notifier: Notifier = request.app.state.notifier

    async def checked(read: Callable[[Request, int, User], T]) -> T | TaskPublic:
        try:
            return await run_in_threadpool(read, request, task_id, user)
        except (Forbidden, NotFound):
            if created is None:
                raise
            return created

    handoffs: Handoffs = request.app.state.handoffs
    key = _end_key(task_id)
    subscription = armed
    try:
        while True:
            if subscription is None:
                subscription = notifier.subscribe(key)
                looked = await checked(_look)
                if isinstance(looked, TaskPublic):
                    return looked  # ended (or, access gone, as created)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return await checked(_read)
            # parked while it waits: the transaction that ends the task reads it for this
            # caller (access checked) and hands it over (:mod:`medfed.hub.handoff`)
            parked = handoffs.park(key, (task_id, user))
            try:
                await subscription.wait(min(remaining, settings.recheck_seconds))
            finally:
                reserved = not handoffs.leave(key, parked)
            if reserved and (ended := await parked.future) is not None:
                return cast(TaskPublic, ended)
            subscription.close()
            subscription = None
    finally:
        if subscription is not None:
            subscription.close()
