"""Routes for researchers' tasks: create, list, read, and a long poll for progress.

``GET /api/tasks/{id}/wait`` returns as soon as the task changes (a run claimed or
answered, a round aggregated) or after ``timeout`` seconds, so clients follow progress
without sleeping between polls.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from medfed.common.resources import NodeRunStatus, RunStatus, TaskCreate, TaskPublic, TaskStatus
from medfed.hub.api.deps import CurrentUser, NotifierDep, SessionDep, SettingsDep
from medfed.hub.db.models import Task, User
from medfed.hub.dispatch import commit
from medfed.hub.services import tasks

router = APIRouter(prefix="/api", tags=["tasks"])


def task_public(session: Session, task: Task) -> TaskPublic:
    public = TaskPublic.model_validate(task)
    runs = tasks.runs_of(session, task)
    public.runs = [
        NodeRunStatus(
            run_id=run.id,
            node_id=run.node_id,
            node_name=node_name,
            dataset_id=run.dataset_id,
            round=run.round,
            status=RunStatus(run.status),
            output_status=None,  # which node withheld is not shown; the counts are
            attempts=run.attempts,
            error=run.error,
        )
        for run, node_name in runs
    ]
    latest = max((run.round for run, _ in runs), default=0)
    done = [r for r, _ in runs if r.round == latest and r.status == RunStatus.done.value]
    public.contributing_nodes = len({r.node_id for r in done if r.output_status == "ok"})
    public.withheld_nodes = len({r.node_id for r in done if r.output_status != "ok"})
    if task.status != TaskStatus.completed.value:
        public.result = None
    return public


@router.post(
    "/tasks",
    status_code=status.HTTP_201_CREATED,
    responses={429: {"description": "the project's query budget is used up (see resets_at)"}},
)
def create_task(
    body: TaskCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> TaskPublic:
    """Start a task; 429 (``resets_at``, ``Retry-After``) once the query budget is used up."""
    task = tasks.create_task(
        session,
        actor=user,
        project_id=body.project_id,
        algorithm=body.algorithm,
        dataset_refs=body.datasets,
        raw_params=body.params,
        settings=settings,
    )
    commit(session, notifier)
    return task_public(session, task)


@router.get("/tasks")
def list_tasks(project_id: int, user: CurrentUser, session: SessionDep) -> list[TaskPublic]:
    return [
        task_public(session, t) for t in tasks.list_tasks(session, user=user, project_id=project_id)
    ]


@router.get("/tasks/{task_id}")
def get_task(task_id: int, user: CurrentUser, session: SessionDep) -> TaskPublic:
    return task_public(session, tasks.get_task(session, task_id=task_id, user=user))


def _read(request: Request, task_id: int, user: User) -> TaskPublic:
    # read-only: on SQLite a snapshot beside the writers, not a turn in their queue
    with request.app.state.read_sessionmaker() as session:
        return task_public(session, tasks.get_task(session, task_id=task_id, user=user))


@router.get("/tasks/{task_id}/wait")
async def wait_task(
    task_id: int,
    request: Request,
    user: CurrentUser,
    notifier: NotifierDep,
    timeout: float = Query(default=10.0, ge=0, le=60),
    seen_runs_done: int = Query(default=-1, description="return at once if progress differs"),
) -> TaskPublic:
    """The task once it has finished or changed since ``seen_runs_done``, else at timeout."""
    settings = request.app.state.settings
    deadline = time.monotonic() + timeout
    while True:
        subscription = notifier.subscribe(f"task:{task_id}")
        try:
            public = await run_in_threadpool(_read, request, task_id, user)
            done = sum(1 for r in public.runs if r.status not in ("pending", "claimed"))
            if public.status != TaskStatus.running or done != seen_runs_done:
                if seen_runs_done >= 0 or public.status != TaskStatus.running:
                    return public
                seen_runs_done = done
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return public
            await subscription.wait(min(remaining, settings.recheck_seconds))
        finally:
            subscription.close()
