"""Routes for access governance: applications (REMS), DAC decisions, entitlements, due view,
projects' query budgets (set by the DAC).

Thin: each route calls one service of ``medfed.hub.services.access`` and commits once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status

from medfed.common.access_resources import (
    ApplicationCreate,
    ApplicationPublic,
    ApplicationState,
    ApplicationUpdate,
    ApproveRequest,
    DecisionRequest,
    DueView,
    EntitlementPublic,
    QueryBudgetPublic,
    QueryBudgetSet,
)
from medfed.common.errors import BadRequest, NotFound
from medfed.hub.api.deps import CurrentUser, NotifierDep, SessionDep, SettingsDep
from medfed.hub.api.limits import control_character_problem
from medfed.hub.dispatch import commit
from medfed.hub.services.access import applications, budgets, decisions, entitlements
from medfed.hub.services.learning import blobs

router = APIRouter(prefix="/api/access", tags=["access"])


@router.post("/applications", status_code=status.HTTP_201_CREATED)
def create_application(
    body: ApplicationCreate, user: CurrentUser, session: SessionDep, notifier: NotifierDep
) -> ApplicationPublic:
    application = applications.create_application(session, actor=user, data=body)
    commit(session, notifier)
    return applications.application_public(session, application)


@router.get("/applications")
def list_applications(
    user: CurrentUser,
    session: SessionDep,
    state: ApplicationState | None = None,
    project_id: int | None = None,
) -> list[ApplicationPublic]:
    rows = applications.list_applications(
        session, user=user, state=state.value if state else None, project_id=project_id
    )
    return [applications.application_public(session, a) for a in rows]


@router.get("/applications/{application_id}")
def get_application(
    application_id: int, user: CurrentUser, session: SessionDep
) -> ApplicationPublic:
    application = applications.get_application(session, application_id=application_id, user=user)
    return applications.application_public(session, application)


@router.patch("/applications/{application_id}")
def update_application(
    application_id: int,
    body: ApplicationUpdate,
    user: CurrentUser,
    session: SessionDep,
    notifier: NotifierDep,
) -> ApplicationPublic:
    application = applications.update_application(
        session, actor=user, application_id=application_id, data=body
    )
    commit(session, notifier)
    return applications.application_public(session, application)


@router.post("/applications/{application_id}/ethics-file")
def upload_ethics_file(
    application_id: int,
    file: Annotated[UploadFile, File(description="the ethics approval document")],
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> ApplicationPublic:
    # a sync route (the thread pool): the file read and the write lock never stall the loop
    filename = file.filename or "ethics"
    if (problem := control_character_problem(filename)) is not None:
        raise BadRequest(f"filename: {problem}")
    content = file.file.read(applications.MAX_ETHICS_FILE + 1)
    application = applications.attach_ethics_file(
        session,
        actor=user,
        application_id=application_id,
        filename=filename,
        content=content,
        store=blobs.store_for(settings),
    )
    commit(session, notifier)
    return applications.application_public(session, application)


@router.post("/applications/{application_id}/submit")
def submit(
    application_id: int, user: CurrentUser, session: SessionDep, notifier: NotifierDep
) -> ApplicationPublic:
    application = applications.submit(session, actor=user, application_id=application_id)
    commit(session, notifier)
    return applications.application_public(session, application)


@router.post("/applications/{application_id}/approve")
def approve(
    application_id: int,
    body: ApproveRequest,
    user: CurrentUser,
    session: SessionDep,
    notifier: NotifierDep,
) -> ApplicationPublic:
    application = decisions.approve(
        session,
        actor=user,
        application_id=application_id,
        ends_at=body.ends_at,
        comment=body.comment,
    )
    commit(session, notifier)
    return applications.application_public(session, application)


_DECISIONS = {
    "reject": decisions.reject,
    "return": decisions.return_for_changes,
    "close": decisions.close,
    "revoke": decisions.revoke,
}


@router.post("/applications/{application_id}/{decision}")
def decide(
    application_id: int,
    decision: str,
    user: CurrentUser,
    session: SessionDep,
    notifier: NotifierDep,
    body: DecisionRequest | None = None,
) -> ApplicationPublic:
    """``reject`` / ``return`` (DAC), ``close`` (applicant), ``revoke`` (DAC)."""
    action = _DECISIONS.get(decision)
    if action is None:
        raise NotFound(f"no action '{decision}' (known: approve, submit, {', '.join(_DECISIONS)})")
    application = action(
        session,
        actor=user,
        application_id=application_id,
        comment=(body or DecisionRequest()).comment,
    )
    commit(session, notifier)
    return applications.application_public(session, application)


@router.get("/entitlements")
def list_entitlements(
    user: CurrentUser, session: SessionDep, project_id: int | None = None
) -> list[EntitlementPublic]:
    rows = entitlements.list_entitlements(session, user=user, project_id=project_id)
    return [entitlements.entitlement_public(e) for e in rows]


@router.get("/due")
def due(user: CurrentUser, session: SessionDep) -> DueView:
    """For DAC members: submitted applications with their age; entitlements ending in 30 days."""
    return decisions.due_view(session, user=user)


@router.get("/projects/{project_id}/query-budget")
def get_query_budget(
    project_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> QueryBudgetPublic:
    """The project's budget of statistical tasks and what is left (members and its DACs)."""
    return budgets.budget_public(session, user=user, project_id=project_id, settings=settings)


@router.put("/projects/{project_id}/query-budget")
def set_query_budget(
    project_id: int,
    body: QueryBudgetSet,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> QueryBudgetPublic:
    """A DAC of an organization the project applied to sets its budget (null: the default)."""
    public = budgets.set_query_budget(
        session,
        actor=user,
        project_id=project_id,
        query_budget=body.query_budget,
        window_hours=body.window_hours,
        settings=settings,
    )
    commit(session, notifier)
    return public
