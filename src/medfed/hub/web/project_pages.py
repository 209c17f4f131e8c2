"""Pages for projects, their entitlements and tasks: "run an analysis" and its result.

The project page lists the project's entitlements and tasks and has a small form: an
algorithm from the registry, the datasets, and the parameters either as JSON or, for the
common cases (count, mean, variance, summary), as a column list and a filter in text form
(``age > 50``). The form posts to the same ``tasks.create_task`` service as
``POST /api/tasks``. The task page shows the runs and, once done, the result; while the
task runs, an htmx fragment re-requests itself every second until the task has ended.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from medfed.algorithms.registry import algorithm_names, get_algorithm
from medfed.common.errors import BadRequest
from medfed.common.filter_text import parse_filter_text
from medfed.common.filters import filter_to_json
from medfed.common.resources import TaskPublic, TaskStatus
from medfed.hub.api.deps import NotifierDep, SessionDep
from medfed.hub.api.routes.tasks import task_public
from medfed.hub.dispatch import commit
from medfed.hub.services import projects, tasks
from medfed.hub.web import catalogue_views
from medfed.hub.web.session import CheckedVisitor, PageRoute, VisitorDep, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/projects")
def project_list(request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    user = visitor.require()
    mine = projects.list_projects(session, actor=user)
    entitlements = catalogue_views.entitlements_of_user(session, user=user)
    context = {"projects": mine, "entitlements": entitlements}
    return render(request, "projects.html", context)


@router.post("/projects")
def project_create(
    visitor: CheckedVisitor,
    session: SessionDep,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    description: Annotated[str, Form(max_length=5000)] = "",
) -> Response:
    user = visitor.require()
    project = projects.create_project(
        session, actor=user, name=name.strip(), description=description, organization_id=None
    )
    session.commit()
    return redirect(f"/projects/{project.id}")


@router.get("/projects/{project_id}")
def project_page(
    project_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    user = visitor.require()
    project = projects.get_project(session, project_id=project_id, user=user)
    context = {
        "project": project,
        "members": projects.member_ids(session, project.id),
        "tasks": list(reversed(tasks.list_tasks(session, user=user, project_id=project.id))),
        "entitlements": catalogue_views.entitlements_of_project(
            session, user=user, project_id=project.id
        ),
        "datasets": catalogue_views.usable_datasets(session, user=user, project_id=project.id),
        "algorithms": algorithm_names(),
    }
    return render(request, "project.html", context)


def task_params(columns: str, where: str, params_json: str) -> dict[str, Any]:
    """The task's parameters from the form: JSON when given, else columns and filter."""
    params: dict[str, Any] = {}
    if params_json.strip():
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"parameters are not valid JSON: {exc.msg} at {exc.pos}") from None
        if not isinstance(loaded, dict):
            raise BadRequest('parameters must be a JSON object, e.g. {"columns": ["age"]}')
        params = loaded
    names = [c.strip() for c in columns.split(",") if c.strip()]
    if names:
        params["columns"] = names
    if where.strip():
        params["where"] = filter_to_json(parse_filter_text(where))
    return params


@router.post("/projects/{project_id}/tasks")
def task_create(
    project_id: int,
    visitor: CheckedVisitor,
    session: SessionDep,
    notifier: NotifierDep,
    algorithm: Annotated[str, Form(min_length=1, max_length=100)],
    datasets: Annotated[list[int], Form(min_length=1)],
    columns: Annotated[str, Form(max_length=2000)] = "",
    where: Annotated[str, Form(max_length=2000)] = "",
    params_json: Annotated[str, Form(max_length=20000)] = "",
) -> Response:
    user = visitor.require()
    task = tasks.create_task(
        session,
        actor=user,
        project_id=project_id,
        algorithm=algorithm,
        dataset_refs=list(datasets),
        raw_params=task_params(columns, where, params_json),
    )
    commit(session, notifier)
    return redirect(f"/tasks/{task.id}")


def _task_context(public: TaskPublic) -> dict[str, Any]:
    summary = None
    if public.status == TaskStatus.completed and public.result is not None:
        result = get_algorithm(public.algorithm).Result.model_validate(public.result)
        summarize = getattr(result, "summary", None)
        summary = str(summarize()) if callable(summarize) else None
    return {
        "task": public,
        "running": public.status == TaskStatus.running,
        "summary": summary,
        "result_json": json.dumps(public.result, indent=2) if public.result is not None else "",
    }


@router.get("/tasks/{task_id}")
def task_page(task_id: int, request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    user = visitor.require()
    public = task_public(session, tasks.get_task(session, task_id=task_id, user=user))
    return render(request, "task.html", _task_context(public))


@router.get("/tasks/{task_id}/status")
def task_status(
    task_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    """The status fragment that the task page's htmx poll swaps in."""
    user = visitor.require()
    public = task_public(session, tasks.get_task(session, task_id=task_id, user=user))
    return render(request, "_task_status.html", _task_context(public))
