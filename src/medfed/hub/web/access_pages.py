"""Access pages: the application form, my applications, the DAC queue and decision page.

The application form (project, datasets, ethics reference and file, purpose, intended-use
DUO codes, duration) posts to the access service's create-and-submit, the same calls as
the access API; the service checks everything and flags DUO mismatches for the DAC. My
applications lists the REMS state of each. The DAC queue is the service's due view
(pending applications with their age and DUO flags, entitlements that end within 30
days); the decision page approves (with the entitlement's end date), rejects or returns
an application with a comment, or revokes an approved one; the applicant submits a
returned application again or closes it.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from medfed.common.errors import BadRequest
from medfed.hub.api.deps import NotifierDep, SessionDep, SettingsDep
from medfed.hub.dispatch import commit
from medfed.hub.services.learning import blobs
from medfed.hub.web import access_views
from medfed.hub.web.session import CheckedVisitor, PageRoute, VisitorDep, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

MAX_ETHICS_FILE = 10 * 1024 * 1024
DECISIONS = ("approve", "reject", "return", "revoke")


@router.get("/applications")
def application_list(request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    user = visitor.require()
    return render(
        request,
        "applications.html",
        {"applications": access_views.my_applications(session, user=user)},
    )


@router.get("/applications/new")
def application_form(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    dataset: Annotated[list[int], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
    project: int | None = None,
) -> Response:
    user = visitor.require()
    context = access_views.application_form(session, user=user, dataset_ids=dataset)
    context["chosen_project"] = project
    return render(request, "application_form.html", context)


@router.post("/applications")
def application_create(
    visitor: CheckedVisitor,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
    project_id: Annotated[int, Form()],
    datasets: Annotated[list[int], Form(min_length=1)],
    purpose: Annotated[str, Form(min_length=1, max_length=5000)],
    duration_days: Annotated[int, Form(ge=1, le=3660)],
    title: Annotated[str, Form(max_length=300)] = "",
    ethics_reference: Annotated[str, Form(max_length=300)] = "",
    commercial: Annotated[bool, Form()] = False,
    duo_codes: Annotated[list[str] | None, Form()] = None,
    ethics_file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    user = visitor.require()
    upload: tuple[str, bytes] | None = None
    if ethics_file is not None and ethics_file.filename:
        content = ethics_file.file.read(MAX_ETHICS_FILE + 1)  # a thread: no event loop here
        if len(content) > MAX_ETHICS_FILE:
            raise BadRequest(f"the ethics file is larger than {MAX_ETHICS_FILE // 2**20} MiB")
        upload = (ethics_file.filename, content)
    application_id = access_views.apply(
        session,
        actor=user,
        title=title.strip(),
        project_id=project_id,
        dataset_ids=list(datasets),
        purpose=purpose.strip(),
        duo_codes=[c for c in (duo_codes or []) if c.strip()],
        commercial=commercial,
        duration_days=duration_days,
        ethics_reference=ethics_reference.strip(),
        ethics_file=upload,
        store=blobs.store_for(settings),
    )
    commit(session, notifier)
    return redirect(f"/applications/{application_id}")


@router.get("/applications/{application_id}")
def application_page(
    application_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    user = visitor.require()
    view = access_views.application_view(session, user=user, application_id=application_id)
    return render(request, "application.html", {"view": view, "decisions": DECISIONS})


@router.post("/applications/{application_id}/{step}")
def application_step(
    application_id: int,
    step: str,
    visitor: CheckedVisitor,
    session: SessionDep,
    notifier: NotifierDep,
) -> Response:
    """The applicant submits again (after a return) or closes the application."""
    user = visitor.require()
    access_views.applicant_step(session, actor=user, application_id=application_id, step=step)
    commit(session, notifier)
    return redirect(f"/applications/{application_id}")


@router.get("/dac")
def dac_queue(request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    user = visitor.require()
    return render(request, "dac.html", {"due": access_views.dac_due(session, user=user)})


@router.post("/dac/applications/{application_id}")
def dac_decide(
    application_id: int,
    visitor: CheckedVisitor,
    session: SessionDep,
    notifier: NotifierDep,
    decision: Annotated[str, Form()],
    comment: Annotated[str, Form(max_length=5000)] = "",
    end_date: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    user = visitor.require()
    if decision not in DECISIONS:
        raise BadRequest(f"decision must be one of {', '.join(DECISIONS)} (got {decision!r})")
    ends: date | None = None
    if end_date.strip():
        try:
            ends = date.fromisoformat(end_date.strip())
        except ValueError:
            raise BadRequest(f"end date {end_date!r} is not a date (YYYY-MM-DD)") from None
    access_views.decide(
        session,
        actor=user,
        application_id=application_id,
        decision=decision,
        comment=comment.strip(),
        end_date=ends,
    )
    commit(session, notifier)
    return redirect(f"/applications/{application_id}")
