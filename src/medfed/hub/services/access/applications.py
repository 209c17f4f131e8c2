"""REMS access applications: one state machine, enforced here and nowhere else.

States: draft → submitted → approved | rejected | returned; returned → submitted (after
edits); draft/submitted/returned/approved → closed (by the applicant); approved → revoked
(by the DAC). :data:`TRANSITIONS` says which event moves which state and who may send it:

* the applicant side is any member of the application's project (hub admin too);
* the DAC side is a user with the ``dac`` role in the organization that holds the
  datasets (the nodes' organization), or the hub administrator.

An application asks for dataset versions held by one organization (its DAC decides); a
project that needs data of several hospitals sends one application to each. It may name
only versions the applicant may see (``lifecycle.can_see``) or released ones (what
applications are for); any other id — a draft of another organization — is answered
exactly like a missing dataset, without naming its holder. DUO
mismatches between each dataset's codes and the intended use are computed at submission
and shown to the DAC (they inform, they do not decide). Approval needs an end date (at
most the duration asked for) and creates the entitlements; revoking or closing an
approved application revokes them. Each transition is an :class:`AccessEvent` and a
ledger entry, in the caller's transaction. The DAC's decisions (and the applicant's close)
are in :mod:`medfed.hub.services.access.decisions`, through :func:`transition`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common import duo
from medfed.common.access_resources import (
    ApplicationCreate,
    ApplicationEventPublic,
    ApplicationPublic,
    ApplicationState,
    ApplicationUpdate,
    IntendedUseIn,
)
from medfed.common.errors import BadRequest, Conflict, Forbidden, NotFound
from medfed.common.resources import Role
from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Dataset, Node, User
from medfed.hub.db.models_access import AccessApplication, AccessEvent
from medfed.hub.services import datasets as dataset_service
from medfed.hub.services.catalogue.lifecycle import State, can_see
from medfed.hub.services.learning import blobs
from medfed.hub.services.learning.blob_store import BlobStore
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.projects import get_project, is_member
from medfed.ledger.entries import content_hash

S = ApplicationState
APPLICANT = "applicant"
DAC = "dac"
MAX_ETHICS_FILE = 20 * 1024 * 1024

#: (state, event) → (new state, who may send it)
TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    (S.draft, "submit"): (S.submitted, APPLICANT),
    (S.returned, "submit"): (S.submitted, APPLICANT),
    (S.submitted, "approve"): (S.approved, DAC),
    (S.submitted, "reject"): (S.rejected, DAC),
    (S.submitted, "return"): (S.returned, DAC),
    (S.draft, "close"): (S.closed, APPLICANT),
    (S.submitted, "close"): (S.closed, APPLICANT),
    (S.returned, "close"): (S.closed, APPLICANT),
    (S.approved, "close"): (S.closed, APPLICANT),
    (S.approved, "revoke"): (S.revoked, DAC),
}
EDITABLE = (S.draft, S.returned)

__all__ = [
    "TRANSITIONS",
    "add_event",
    "application_public",
    "attach_ethics_file",
    "create_application",
    "get_application",
    "is_dac_for",
    "list_applications",
    "submit",
    "transition",
    "update_application",
]


def is_dac_for(user: User, application: AccessApplication) -> bool:
    if user.is_superuser:
        return True
    return Role.dac.value in (user.roles or []) and user.organization_id == (
        application.organization_id
    )


def _is_applicant(session: Session, user: User, application: AccessApplication) -> bool:
    return user.is_superuser or is_member(session, project_id=application.project_id, user=user)


def get_application(session: Session, *, application_id: int, user: User) -> AccessApplication:
    """The application if ``user`` may see it (project member, its DAC, hub admin)."""
    application = session.get(AccessApplication, application_id)
    if application is None:
        raise NotFound(f"application {application_id} not found")
    if _is_applicant(session, user, application):
        return application
    if is_dac_for(user, application) and application.state != S.draft:
        return application
    raise NotFound(f"application {application_id} not found")


def list_applications(
    session: Session, *, user: User, state: str | None = None, project_id: int | None = None
) -> list[AccessApplication]:
    query = select(AccessApplication).order_by(AccessApplication.id)
    if state is not None:
        query = query.where(AccessApplication.state == state)
    if project_id is not None:
        query = query.where(AccessApplication.project_id == project_id)
    return [
        a
        for a in session.scalars(query)
        if _is_applicant(session, user, a) or (is_dac_for(user, a) and a.state != S.draft)
    ]


def events_of(session: Session, application_id: int) -> list[AccessEvent]:
    return list(
        session.scalars(
            select(AccessEvent)
            .where(AccessEvent.application_id == application_id)
            .order_by(AccessEvent.id)
        )
    )


def application_public(session: Session, application: AccessApplication) -> ApplicationPublic:
    public = ApplicationPublic.model_validate(application)
    public.events = [
        ApplicationEventPublic.model_validate(e) for e in events_of(session, application.id)
    ]
    return public


def _applicable(session: Session, user: User, dataset_id: int) -> Dataset:
    """The version if ``user`` may name it in an application; NotFound as for a missing one."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or not (
        dataset.state == State.released.value or can_see(session, user, dataset)
    ):
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def _datasets(session: Session, user: User, dataset_ids: list[int]) -> tuple[list[Dataset], int]:
    """The dataset versions and the one organization that holds them all."""
    found = [_applicable(session, user, i) for i in dict.fromkeys(dataset_ids)]
    holders: dict[int, str] = {}
    for dataset in found:
        if getattr(dataset, "state", None) == "invalidated":
            raise BadRequest(f"dataset {dataset.id} ({dataset.name}) is invalidated")
        node = session.get(Node, dataset.node_id)
        assert node is not None
        holders[node.organization_id] = node.name
    if len(holders) != 1:
        raise BadRequest(
            "the datasets are held by several organizations "
            f"({', '.join(str(o) for o in sorted(holders))}); each organization's DAC decides "
            "for its own data: send one application per organization"
        )
    return found, next(iter(holders))


def _intended(body: IntendedUseIn) -> dict[str, object]:
    codes = duo.validate_codes(body.codes)
    bad = [c for c in codes if c.partition(":")[0] not in duo.PERMISSIONS and c != "CC"]
    if bad:
        raise BadRequest(
            f"intended-use codes name the purpose (GRU, HMB, DS:<disease>, POA, CC); got {bad}"
        )
    return {**body.model_dump(mode="json"), "codes": codes}


def add_event(
    session: Session,
    application: AccessApplication,
    *,
    actor: User,
    event: str,
    from_state: str | None,
    comment: str = "",
) -> None:
    session.add(
        AccessEvent(
            application_id=application.id,
            actor_id=actor.id,
            event=event,
            from_state=from_state,
            to_state=application.state,
            comment=comment,
        )
    )
    record(
        session,
        action=f"access.{event}",
        actor=actor_of(actor),
        objects={
            "application": application.id,
            "project": application.project_id,
            "datasets": list(application.dataset_ids),
            "state": application.state,
        },
        hashes={"comment": content_hash(comment)},
    )
    session.flush()


def create_application(
    session: Session, *, actor: User, data: ApplicationCreate
) -> AccessApplication:
    """A draft application of ``data.project_id`` (the actor must be a member)."""
    get_project(session, project_id=data.project_id, user=actor)
    found, organization_id = _datasets(session, actor, data.datasets)
    application = AccessApplication(
        project_id=data.project_id,
        organization_id=organization_id,
        applicant_id=actor.id,
        state=S.draft.value,
        title=data.title,
        purpose=data.purpose,
        ethics_reference=data.ethics_reference.strip(),
        intended_use=_intended(data.intended_use),
        dataset_ids=[d.id for d in found],
        duration_days=data.duration_days,
        mismatches=[],
    )
    session.add(application)
    session.flush()
    add_event(session, application, actor=actor, event="create", from_state=None)
    return application


def update_application(
    session: Session, *, actor: User, application_id: int, data: ApplicationUpdate
) -> AccessApplication:
    application = get_application(session, application_id=application_id, user=actor)
    if not _is_applicant(session, actor, application):
        raise Forbidden(f"only members of project {application.project_id} edit its application")
    if application.state not in EDITABLE:
        raise Conflict(
            f"application {application.id} is {application.state}; only a draft or a returned "
            "application can be edited"
        )
    if data.datasets is not None:
        found, organization_id = _datasets(session, actor, data.datasets)
        application.dataset_ids = [d.id for d in found]
        application.organization_id = organization_id
    if data.intended_use is not None:
        application.intended_use = _intended(data.intended_use)
    for name in ("title", "purpose", "duration_days"):
        value = getattr(data, name)
        if value is not None:
            setattr(application, name, value)
    if data.ethics_reference is not None:
        application.ethics_reference = data.ethics_reference.strip()
    application.updated_at = utcnow()
    add_event(session, application, actor=actor, event="edit", from_state=application.state)
    return application


def attach_ethics_file(
    session: Session,
    *,
    actor: User,
    application_id: int,
    filename: str,
    content: bytes,
    store: BlobStore,
) -> AccessApplication:
    """Keep the ethics approval document in the hub's blob store (kind ``ethics``).

    The store is the hub's shared one (PostgreSQL's, or files under the data folder), so
    every hub process sees it; no node ever fetches it (nodes fetch weights only).
    """
    application = get_application(session, application_id=application_id, user=actor)
    if not _is_applicant(session, actor, application):
        raise Forbidden(f"only members of project {application.project_id} edit its application")
    if application.state not in EDITABLE:
        raise Conflict(f"application {application.id} is {application.state}; it cannot change")
    if not content:
        raise BadRequest("the ethics approval file is empty")
    if len(content) > MAX_ETHICS_FILE:
        raise BadRequest(f"the ethics approval file exceeds {MAX_ETHICS_FILE // 2**20} MiB")
    digest = store.write_bytes(content)  # files: 0600 in a 0700 folder (it names people)
    blobs.register(session, sha256=digest, size=len(content), kind="ethics")
    application.ethics_file_name = Path(filename).name[:300] or "ethics"
    application.ethics_file_sha256 = digest
    application.updated_at = utcnow()
    add_event(session, application, actor=actor, event="attach", from_state=application.state)
    return application


def transition(
    session: Session, *, actor: User, application_id: int, event: str, comment: str = ""
) -> tuple[AccessApplication, str]:
    application = get_application(session, application_id=application_id, user=actor)
    step = TRANSITIONS.get((application.state, event))
    if step is None:
        allowed = sorted(e for (s, e) in TRANSITIONS if s == application.state) or ["none"]
        raise Conflict(
            f"application {application.id} is {application.state}: cannot {event} "
            f"(allowed: {', '.join(allowed)})"
        )
    new_state, who = step
    if who == DAC and not is_dac_for(actor, application):
        raise Forbidden(
            f"{event} needs a DAC member (role dac) of organization {application.organization_id}"
        )
    if who == APPLICANT and not _is_applicant(session, actor, application):
        raise Forbidden(f"{event} needs a member of project {application.project_id}")
    old = application.state
    application.state = new_state
    application.updated_at = utcnow()
    return application, old


def submit(session: Session, *, actor: User, application_id: int) -> AccessApplication:
    application = get_application(session, application_id=application_id, user=actor)
    if application.state in EDITABLE and not application.ethics_reference:
        raise BadRequest("an ethics approval reference is required to submit")
    application, old = transition(
        session, actor=actor, application_id=application_id, event="submit"
    )
    intended = IntendedUseIn.model_validate(application.intended_use).to_duo(
        ethics_reference=application.ethics_reference, duration_days=application.duration_days
    )
    mismatches: list[str] = []
    for dataset_id in application.dataset_ids:
        dataset = dataset_service.get_dataset(session, int(dataset_id))
        codes = list(getattr(dataset, "duo_codes", None) or [])
        for problem in duo.match(codes, intended):
            mismatches.append(f"dataset {dataset.id} ({dataset.name}): {problem}")
    application.mismatches = mismatches
    application.submitted_at = utcnow()
    add_event(session, application, actor=actor, event="submit", from_state=old)
    return application
