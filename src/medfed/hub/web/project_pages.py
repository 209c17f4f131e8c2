"""Pages for projects and their entitlements, tasks and "run an analysis" form.

The project page lists the project's entitlements and tasks (datasets by name) and has
the run-an-analysis form: an algorithm from the registry, the datasets, and the
algorithm's own parameters as fields generated from its ``Params`` schema
(:mod:`medfed.hub.web.param_form`; column pickers list the chosen datasets' columns). The
form posts to :mod:`medfed.hub.web.task_pages`, which calls the same
``tasks.create_task`` service as ``POST /api/tasks`` and shows the task's page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from medfed.hub.api.deps import SessionDep
from medfed.hub.db.models import User
from medfed.hub.services import projects, tasks
from medfed.hub.web import catalogue_views, task_views
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


def project_context(
    session: Session,
    *,
    user: User,
    project_id: int,
    algorithm: str | None = None,
    chosen: Sequence[int] | None = None,
    submitted: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The project page's values; the run form for ``algorithm`` with ``submitted`` values."""
    project = projects.get_project(session, project_id=project_id, user=user)
    project_tasks = list(reversed(tasks.list_tasks(session, user=user, project_id=project.id)))
    usable = catalogue_views.usable_datasets(session, user=user, project_id=project.id)
    return {
        "project": project,
        "members": projects.member_ids(session, project.id),
        "tasks": project_tasks,
        "dataset_labels": task_views.dataset_labels(
            session, sorted({i for t in project_tasks for i in t.dataset_ids})
        ),
        "entitlements": catalogue_views.entitlements_of_project(
            session, user=user, project_id=project.id
        ),
        "datasets": usable,
        **task_views.run_form_context(usable, algorithm, chosen, submitted),
    }


@router.get("/projects/{project_id}")
def project_page(
    project_id: int,
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    algorithm: str | None = None,
) -> Response:
    user = visitor.require()
    context = project_context(session, user=user, project_id=project_id, algorithm=algorithm)
    return render(request, "project.html", context)
