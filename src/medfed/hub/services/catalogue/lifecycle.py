"""Dataset lifecycle: draft → released → published → invalidated (→ reactivated).

The states, as CHAIMELEON's dataset service defines them:

========== ===================================== ============================ =========
state      who sees it                           metadata                     usable
========== ===================================== ============================ =========
draft      its authors                           editable by its authors      no
released   its authors, entitled projects        frozen                       yes
published  everyone (anonymous too)              frozen                       yes
invalidated by link/pid with a label (tombstone) frozen                       never
========== ===================================== ============================ =========

"Authors" are the stewards and admins of the organization that owns the dataset's node;
superusers may do everything. Use of a released or published dataset still needs an
entitlement (checked by the access part next to :func:`require_usable`).

:data:`MATRIX` is the one transition table: ``(state, transition) → new state``;
``reactivate`` returns an invalidated version to ``published`` if it had been published,
else to ``released``. Only authors (and superusers) may move a dataset; every move is
one audit entry (``dataset.<transition>``) in the same transaction. Release gives the
version its hub persistent id ``mfd.<id>`` (``medfed.hub.services.catalogue.pids``);
publish deposits the metadata at Zenodo first when the organization has a Zenodo token
(``zenodo.py``), and the DOI becomes the pid.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, false, or_, select, true
from sqlalchemy.orm import Session

from medfed.common.errors import BadRequest, Conflict, Forbidden, NotFound, Refused
from medfed.common.resources import Role
from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Dataset, Node, ProjectMember, User
from medfed.hub.db.models_access import Entitlement
from medfed.hub.services.ledger import actor_of, record
from medfed.ledger.entries import content_hash

__all__ = [
    "MATRIX",
    "State",
    "Transition",
    "can_see",
    "entitled_dataset_ids",
    "is_author",
    "is_usable",
    "require_author",
    "require_usable",
    "transition",
    "visible_clause",
    "visible_dataset",
]


class State(StrEnum):
    draft = "draft"
    released = "released"
    published = "published"
    invalidated = "invalidated"


class Transition(StrEnum):
    release = "release"
    publish = "publish"
    invalidate = "invalidate"
    reactivate = "reactivate"


MATRIX: dict[tuple[State, Transition], State] = {
    (State.draft, Transition.release): State.released,
    (State.released, Transition.publish): State.published,
    (State.released, Transition.invalidate): State.invalidated,
    (State.published, Transition.invalidate): State.invalidated,
    (State.invalidated, Transition.reactivate): State.released,  # or published, see target()
}
USABLE = frozenset({State.released, State.published})
AUTHOR_ROLES = (Role.steward, Role.admin)


def organization_of(session: Session, dataset: Dataset) -> int:
    node = session.get(Node, dataset.node_id)
    assert node is not None
    return node.organization_id


def is_author(session: Session, user: User | None, dataset: Dataset) -> bool:
    """A superuser, or a steward/admin of the organization that owns the dataset's node."""
    if user is None:
        return False
    if user.is_superuser:
        return True
    return user.organization_id == organization_of(session, dataset) and any(
        role.value in (user.roles or []) for role in AUTHOR_ROLES
    )


def require_author(session: Session, user: User, dataset: Dataset, action: str) -> None:
    if not is_author(session, user, dataset):
        raise Forbidden(
            f"{action} dataset {dataset.id} needs a steward or admin of the organization "
            "that holds it"
        )


def entitled_dataset_ids(session: Session, user: User | None) -> set[int]:
    """Dataset versions some project of ``user`` holds a current entitlement to."""
    if user is None:
        return set()
    now = utcnow()
    rows = session.scalars(
        select(Entitlement.dataset_id)
        .join(ProjectMember, ProjectMember.project_id == Entitlement.project_id)
        .where(
            ProjectMember.user_id == user.id,
            Entitlement.revoked_at.is_(None),
            Entitlement.starts_at <= now,
            Entitlement.ends_at > now,
        )
    )
    return set(rows)


def can_see(session: Session, user: User | None, dataset: Dataset) -> bool:
    state = State(dataset.state)
    if state == State.published:
        return True
    if state == State.invalidated and dataset.published_at is not None:
        return True  # was public: its tombstone stays public
    if is_author(session, user, dataset):
        return True
    if state == State.draft:
        return False
    return dataset.id in entitled_dataset_ids(session, user)


def visible_clause(session: Session, user: User | None) -> ColumnElement[bool]:
    """A WHERE clause over ``Dataset`` (joined with ``Node``) matching :func:`can_see`."""
    public = or_(
        Dataset.state == State.published.value,
        and_(Dataset.state == State.invalidated.value, Dataset.published_at.is_not(None)),
    )
    if user is None:
        return public
    if user.is_superuser:
        return true()
    authored: ColumnElement[bool] = false()
    if any(role.value in (user.roles or []) for role in AUTHOR_ROLES):
        authored = Node.organization_id == user.organization_id
    entitled = entitled_dataset_ids(session, user)
    granted = (
        and_(Dataset.state != State.draft.value, Dataset.id.in_(entitled)) if entitled else false()
    )
    return or_(public, authored, granted)


def visible_dataset(session: Session, dataset_id: int, user: User | None) -> Dataset:
    """The dataset version if ``user`` may see it; NotFound otherwise (existence not leaked)."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or not can_see(session, user, dataset):
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def is_usable(dataset: Dataset) -> bool:
    """Whether tasks may run on this version (released or published; entitlement aside)."""
    return dataset.state in USABLE


def require_usable(session: Session, datasets: Sequence[Dataset]) -> None:
    """Refuse (nothing stored) if any dataset version is a draft or invalidated."""
    for dataset in datasets:
        if not is_usable(dataset):
            why = (
                "it has not been released yet"
                if dataset.state == State.draft.value
                else f"it was invalidated ({dataset.invalidation_reason or 'no reason given'})"
            )
            raise Refused(
                f"dataset {dataset.id} ({dataset.name} v{dataset.version}) is {dataset.state}: "
                f"{why}; only released or published datasets can be used"
            )


def target(dataset: Dataset, move: Transition) -> State:
    """The state ``move`` leads to from the dataset's state; Conflict if not in the matrix."""
    state = State(dataset.state)
    new = MATRIX.get((state, move))
    if new is None:
        allowed = sorted(t.value for (s, t) in MATRIX if s == state)
        raise Conflict(
            f"dataset {dataset.id} is {state.value}: cannot {move.value} it "
            f"(allowed: {', '.join(allowed) or 'nothing'})"
        )
    if move == Transition.reactivate and dataset.published_at is not None:
        return State.published
    return new


def transition(
    session: Session, *, actor: User, dataset_id: int, move: Transition, reason: str = ""
) -> Dataset:
    """Move a dataset version through the lifecycle (authors only), audited."""
    from medfed.hub.services.catalogue import pids, zenodo  # they build on this module

    dataset = visible_dataset(session, dataset_id, actor)
    require_author(session, actor, dataset, f"{move.value} of")
    new = target(dataset, move)
    now = utcnow()
    if move == Transition.invalidate and not reason.strip():
        raise BadRequest(
            f"invalidating dataset {dataset.id} needs a reason (shown on its tombstone)"
        )
    if move == Transition.publish:
        zenodo.publish_if_configured(session, actor=actor, dataset=dataset)  # may set the pid
    old = dataset.state
    dataset.state = new.value
    _stamp(dataset, move, now, reason)
    if dataset.pid is None:
        dataset.pid = pids.hub_pid(dataset)
    session.flush()
    record(
        session,
        action=f"dataset.{move.value}",
        actor=actor_of(actor),
        objects={"dataset": dataset.id, "node": dataset.node_id, "from": old, "to": new.value},
        hashes={"metadata": content_hash(metadata_snapshot(dataset))},
    )
    if move == Transition.invalidate:
        zenodo.withdraw_if_deposited(session, actor=actor, dataset=dataset)
    return dataset


def _stamp(dataset: Dataset, move: Transition, now: datetime, reason: str) -> None:
    if move == Transition.release:
        dataset.released_at = now
    elif move == Transition.publish:
        dataset.published_at = now
    elif move == Transition.invalidate:
        dataset.invalidated_at = now
        dataset.invalidation_reason = reason.strip()
    else:
        dataset.reactivated_at = now
        dataset.invalidation_reason = None
    dataset.updated_at = now


def metadata_snapshot(dataset: Dataset) -> dict[str, object]:
    """The catalogue metadata of a version, as hashed into audit entries."""
    return {
        "name": dataset.name,
        "version": dataset.version,
        "title": dataset.title,
        "description": dataset.description,
        "keywords": dataset.keywords,
        "themes": dataset.themes,
        "access_rights": dataset.access_rights,
        "access_conditions": dataset.access_conditions,
        "duo_codes": dataset.duo_codes,
        "unique_individuals": dataset.unique_individuals,
        "records": dataset.records,
        "contact": dataset.contact,
        "license": dataset.license,
        "manifest_root": dataset.manifest_root,
        "columns": dataset.columns,
    }
