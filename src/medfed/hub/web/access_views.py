"""What the access pages show and do, through the access service (the API's service).

``apply`` is the form's one step: the service creates the draft, stores the ethics file,
and submits (which computes the DUO mismatches) — all in the caller's transaction, so a
refused submission stores nothing. ``decide`` calls the service's approve, reject or
return. The rest shapes the service's answers for templates (names instead of ids, the
age of a pending application, days left of an entitlement).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from medfed.common import duo
from medfed.common.access_resources import ApplicationCreate
from medfed.common.errors import BadRequest
from medfed.common.timeutil import aware, utcnow
from medfed.hub.db.models import Dataset, Project, User
from medfed.hub.db.models_access import AccessApplication, AccessEvent
from medfed.hub.services import accounts, datasets, projects
from medfed.hub.services.access import applications, decisions
from medfed.hub.services.catalogue import lifecycle, search
from medfed.hub.services.learning.blob_store import BlobStore

PURPOSES = ("GRU", "HMB", "POA")


def _validation_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error.get("loc", ()))
    return f"{field}: {error.get('msg')}" if field else str(error.get("msg"))


def my_applications(session: Session, *, user: User) -> list[AccessApplication]:
    """Applications of the user's projects, newest first."""
    mine = {p.id for p in projects.list_projects(session, actor=user)}
    rows = applications.list_applications(session, user=user)
    return [a for a in reversed(rows) if a.project_id in mine]


def application_form(session: Session, *, user: User, dataset_ids: list[int]) -> dict[str, Any]:
    """The form's choices: the user's projects and the usable datasets it may see."""
    open_ = [d for d in search.visible_datasets(session, user=user) if lifecycle.is_usable(d)]
    return {
        "projects": projects.list_projects(session, actor=user),
        "datasets": open_,
        "chosen": dataset_ids,
        "purposes": [(c, duo.label(c)) for c in PURPOSES],
    }


def apply(
    session: Session,
    *,
    actor: User,
    title: str,
    project_id: int,
    dataset_ids: list[int],
    purpose: str,
    duo_codes: list[str],
    commercial: bool,
    duration_days: int,
    ethics_reference: str,
    ethics_file: tuple[str, bytes] | None,
    store: BlobStore,
) -> int:
    """Create, attach the ethics file and submit, as the access API's three calls would."""
    try:
        data = ApplicationCreate.model_validate(
            {
                "project_id": project_id,
                "datasets": dataset_ids,
                "title": title,
                "purpose": purpose,
                "ethics_reference": ethics_reference,
                "intended_use": {"codes": duo_codes, "commercial": commercial},
                "duration_days": duration_days,
            }
        )
    except ValidationError as exc:
        raise BadRequest(_validation_message(exc)) from None
    application = applications.create_application(session, actor=actor, data=data)
    if ethics_file is not None:
        filename, content = ethics_file
        applications.attach_ethics_file(
            session,
            actor=actor,
            application_id=application.id,
            filename=filename,
            content=content,
            store=store,
        )
    applications.submit(session, actor=actor, application_id=application.id)
    return application.id


@dataclass
class EventRow:
    created_at: datetime
    actor: str
    event: str
    from_state: str | None
    to_state: str
    comment: str


@dataclass
class ApplicationView:
    application: AccessApplication
    project_name: str
    applicant: str
    datasets: list[Dataset]
    events: list[EventRow]
    can_decide: bool
    can_revoke: bool
    applicant_actions: list[str]
    default_end: str


def _username(session: Session, user_id: int) -> str:
    return accounts.get_user(session, user_id).username


def _project_name(session: Session, project_id: int) -> str:
    project = session.get(Project, project_id)
    return project.name if project is not None else f"project {project_id}"


def _event_row(session: Session, event: AccessEvent) -> EventRow:
    return EventRow(
        created_at=event.created_at,
        actor=_username(session, event.actor_id),
        event=event.event,
        from_state=event.from_state,
        to_state=event.to_state,
        comment=event.comment,
    )


def application_view(session: Session, *, user: User, application_id: int) -> ApplicationView:
    application = applications.get_application(session, application_id=application_id, user=user)
    submitted = application.state == "submitted"
    is_dac = applications.is_dac_for(user, application)
    member = projects.is_member(session, project_id=application.project_id, user=user)
    ends = date.today().toordinal() + application.duration_days
    return ApplicationView(
        application=application,
        project_name=_project_name(session, application.project_id),
        applicant=_username(session, application.applicant_id),
        datasets=[datasets.get_dataset(session, int(i)) for i in application.dataset_ids],
        events=[_event_row(session, e) for e in applications.events_of(session, application.id)],
        can_decide=submitted and is_dac,
        can_revoke=application.state == "approved" and is_dac,
        applicant_actions=[
            event
            for (state, event), (_, who) in applications.TRANSITIONS.items()
            if state == application.state and who == applications.APPLICANT and member
        ],
        default_end=date.fromordinal(ends).isoformat(),
    )


@dataclass
class PendingRow:
    id: int
    title: str
    project: str
    datasets: list[str]
    age: str
    mismatches: list[str]


@dataclass
class EndingRow:
    project: str
    dataset_id: int
    dataset: str
    ends: str
    days_left: int


@dataclass
class DueRows:
    pending: list[PendingRow]
    ending: list[EndingRow]


def _age(days: float) -> str:
    if days >= 1:
        return f"{days:.0f} day(s)"
    hours = days * 24
    return f"{hours:.0f} hour(s)" if hours >= 1 else f"{hours * 60:.0f} minute(s)"


def _dataset_name(session: Session, dataset_id: int) -> str:
    dataset = datasets.get_dataset(session, dataset_id)
    return f"{dataset.title or dataset.name} v{dataset.version} at {dataset.node.name}"


def dac_due(session: Session, *, user: User) -> DueRows:
    """The access service's due view (it refuses users without the dac role)."""
    now = utcnow()
    due = decisions.due_view(session, user=user, now=now)
    pending = [
        PendingRow(
            id=item.application.id,
            title=item.application.title,
            project=_project_name(session, item.application.project_id),
            datasets=[_dataset_name(session, i) for i in item.application.dataset_ids],
            age=_age(item.age_days),
            mismatches=item.application.mismatches,
        )
        for item in due.pending
    ]
    ending = [
        EndingRow(
            project=_project_name(session, e.project_id),
            dataset_id=e.dataset_id,
            dataset=_dataset_name(session, e.dataset_id),
            ends=e.ends_at.strftime("%Y-%m-%d"),
            days_left=(aware(e.ends_at) - now).days,
        )
        for e in due.ending
    ]
    return DueRows(pending, ending)


def decide(
    session: Session,
    *,
    actor: User,
    application_id: int,
    decision: str,
    comment: str,
    end_date: date | None,
) -> AccessApplication:
    """Approve (entitlements end at the start of ``end_date``, UTC), reject, return, revoke."""
    if decision == "approve":
        if end_date is None:
            raise BadRequest("an approval needs the end date of the entitlement")
        ends_at = datetime.combine(end_date, time(0), tzinfo=UTC)
        return decisions.approve(
            session, actor=actor, application_id=application_id, ends_at=ends_at, comment=comment
        )
    if decision == "reject":
        return decisions.reject(
            session, actor=actor, application_id=application_id, comment=comment
        )
    if decision == "return":
        return decisions.return_for_changes(
            session, actor=actor, application_id=application_id, comment=comment
        )
    if decision == "revoke":
        return decisions.revoke(
            session, actor=actor, application_id=application_id, comment=comment
        )
    raise BadRequest(f"decision must be approve, reject, return or revoke (got {decision!r})")


def applicant_step(
    session: Session, *, actor: User, application_id: int, step: str
) -> AccessApplication:
    """The applicant's own moves: submit (a draft or returned application) or close."""
    if step == "submit":
        return applications.submit(session, actor=actor, application_id=application_id)
    if step == "close":
        return decisions.close(session, actor=actor, application_id=application_id)
    raise BadRequest(f"step must be submit or close (got {step!r})")
