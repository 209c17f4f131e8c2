"""DAC decisions on access applications, and the applicant's close.

Each goes through :func:`medfed.hub.services.access.applications.transition` (the one
state machine). Approval needs an end date (at most the duration asked for) and creates
the entitlements; revoking or closing an approved application ends them at once (runs
already queued are then refused at claim). :func:`due_view` is the DAC's work list.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.access_resources import ApplicationState, DueApplication, DueView
from medfed.common.errors import BadRequest
from medfed.common.timeutil import aware, utcnow
from medfed.hub.db.models import User
from medfed.hub.db.models_access import AccessApplication
from medfed.hub.services.access import entitlements
from medfed.hub.services.access.applications import (
    add_event,
    application_public,
    get_application,
    is_dac_for,
    transition,
)
from medfed.hub.services.ledger import actor_of, record

S = ApplicationState

__all__ = ["approve", "close", "due_view", "reject", "return_for_changes", "revoke"]


def approve(
    session: Session, *, actor: User, application_id: int, ends_at: datetime, comment: str = ""
) -> AccessApplication:
    """Approve with a required end (at most the duration asked for); creates entitlements."""
    now = utcnow()
    end = aware(ends_at)
    application = get_application(session, application_id=application_id, user=actor)
    if end <= now:
        raise BadRequest(f"the end date {end.isoformat()} is not in the future")
    limit = now + timedelta(days=application.duration_days, hours=12)
    if end > limit:
        raise BadRequest(
            f"the end date {end.date()} is after the {application.duration_days} days asked "
            f"for (at most {limit.date()})"
        )
    application, old = transition(
        session, actor=actor, application_id=application_id, event="approve", comment=comment
    )
    application.ends_at = end
    application.decided_at = now
    application.decided_by = actor.id
    rows = entitlements.create_for_application(
        session, application=application, ends_at=end, now=now
    )
    add_event(session, application, actor=actor, event="approve", from_state=old, comment=comment)
    record(
        session,
        action="entitlement.grant",
        actor=actor_of(actor),
        objects={
            "application": application.id,
            "project": application.project_id,
            "entitlements": [e.id for e in rows],
            "datasets": list(application.dataset_ids),
            "ends_at": end.isoformat(),
        },
    )
    return application


def _decide(
    session: Session, *, actor: User, application_id: int, event: str, comment: str
) -> AccessApplication:
    application, old = transition(
        session, actor=actor, application_id=application_id, event=event, comment=comment
    )
    if event in ("reject", "return"):
        application.decided_at = utcnow()
        application.decided_by = actor.id
    if old == S.approved:
        ended = entitlements.end_for_application(
            session, application=application, actor=actor, now=utcnow()
        )
        record(
            session,
            action="entitlement.revoke",
            actor=actor_of(actor),
            objects={"application": application.id, "entitlements": ended},
        )
    add_event(session, application, actor=actor, event=event, from_state=old, comment=comment)
    return application


def reject(
    session: Session, *, actor: User, application_id: int, comment: str = ""
) -> AccessApplication:
    return _decide(
        session, actor=actor, application_id=application_id, event="reject", comment=comment
    )


def return_for_changes(
    session: Session, *, actor: User, application_id: int, comment: str = ""
) -> AccessApplication:
    if not comment.strip():
        raise BadRequest("returning an application needs a comment saying what to change")
    return _decide(
        session, actor=actor, application_id=application_id, event="return", comment=comment
    )


def close(
    session: Session, *, actor: User, application_id: int, comment: str = ""
) -> AccessApplication:
    return _decide(
        session, actor=actor, application_id=application_id, event="close", comment=comment
    )


def revoke(
    session: Session, *, actor: User, application_id: int, comment: str = ""
) -> AccessApplication:
    """Revoke an approved application: its entitlements end now (queued runs are refused)."""
    return _decide(
        session, actor=actor, application_id=application_id, event="revoke", comment=comment
    )


def due_view(session: Session, *, user: User, now: datetime | None = None) -> DueView:
    """Submitted applications the DAC must answer (with age), entitlements ending soon."""
    moment = now or utcnow()
    ending = entitlements.ending_soon(session, user=user, now=moment)
    pending = [
        a
        for a in session.scalars(
            select(AccessApplication)
            .where(AccessApplication.state == S.submitted.value)
            .order_by(AccessApplication.submitted_at)
        )
        if is_dac_for(user, a)
    ]
    return DueView(
        pending=[
            DueApplication(
                application=application_public(session, a),
                age_days=round(
                    (moment - aware(a.submitted_at or a.created_at)).total_seconds() / 86400, 2
                ),
            )
            for a in pending
        ],
        ending=[entitlements.entitlement_public(e, moment) for e in ending],
    )
