"""Entitlements: a project's time-limited right to use one dataset version.

An approved application creates one row per (project, dataset version) with a start and
a required end; revocation (or closing the application) sets ``revoked_at``. Enforcement
happens three times:

1. :func:`require_entitled` when a task is created (``tasks.create_task``): a dataset
   without an active entitlement refuses the task, naming the dataset and the reason
   (none, expired, revoked, not started).
2. :func:`grant_for_run` when a node claims a run (``runs.claim_next``): a run whose
   entitlement ended or was revoked since the task was created is refused instead of
   handed out; otherwise the assignment carries a :class:`SignedEntitlement` — the hub's
   statement (project, dataset version, node, validity window, ``issued_at``) signed with
   its Ed25519 ledger key after the ``medfed-entitlement-v1`` prefix.
3. The node verifies that statement itself (``medfed.node.entitlements``), so a hub that
   handed out a run by mistake is still refused at the data.

Runs of discovery queries (``discovery_queries``) need no entitlement; their assignment
is marked ``discovery`` and the node's policy decides whether it answers them.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from medfed.common.access_resources import (
    EntitlementPublic,
    EntitlementStatement,
    SignedEntitlement,
)
from medfed.common.errors import Forbidden, Refused
from medfed.common.resources import Role
from medfed.common.timeutil import aware, utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Dataset, Node, User
from medfed.hub.db.models_access import AccessApplication, Entitlement
from medfed.hub.db.session import execute_core
from medfed.hub.services.accounts import has_role
from medfed.hub.services.projects import is_member
from medfed.ledger.checkpoint import derive_key

DUE_DAYS = 30

__all__ = [
    "DUE_DAYS",
    "ActiveWindow",
    "DatasetRef",
    "Grant",
    "Window",
    "entitlement_public",
    "first_active",
    "grant_for_run",
    "hub_key",
    "list_entitlements",
    "reason_not_entitled",
    "require_entitled",
    "status_of",
]


@functools.lru_cache(maxsize=4)
def hub_key(secret: str) -> Ed25519PrivateKey:
    """The hub's ledger key (the one ``app.state.ledger_key`` holds), derived once per secret."""
    return derive_key(secret)


class Window(Protocol):
    """What an entitlement's status depends on: an :class:`Entitlement`, or a row of
    :data:`_HELD` (its window only)."""

    @property
    def starts_at(self) -> datetime: ...
    @property
    def ends_at(self) -> datetime: ...
    @property
    def revoked_at(self) -> datetime | None: ...


def status_of(
    entitlement: Window, now: datetime
) -> Literal["active", "pending", "expired", "revoked"]:
    if entitlement.revoked_at is not None:
        return "revoked"
    if aware(entitlement.ends_at) <= now:
        return "expired"
    if aware(entitlement.starts_at) > now:
        return "pending"
    return "active"


def entitlement_public(entitlement: Entitlement, now: datetime | None = None) -> EntitlementPublic:
    public = EntitlementPublic.model_validate(entitlement)
    public.status = status_of(entitlement, now or utcnow())
    return public


def _of(session: Session, project_id: int, dataset_id: int) -> list[Entitlement]:
    return list(
        session.scalars(
            select(Entitlement)
            .where(Entitlement.project_id == project_id, Entitlement.dataset_id == dataset_id)
            .order_by(Entitlement.id)
        )
    )


def reason_not_entitled(
    session: Session,
    *,
    project_id: int,
    dataset_id: int,
    now: datetime,
    rows: Sequence[Window] | None = None,
) -> str | None:
    """``None`` if the project holds an active entitlement, else why not (``rows``: the
    project's entitlements on the dataset, when the caller read them already)."""
    states = {
        status_of(e, now): e
        for e in (_of(session, project_id, dataset_id) if rows is None else rows)
    }
    if "active" in states:
        return None
    if "revoked" in states:
        when = states["revoked"].revoked_at
        return f"its entitlement was revoked ({aware(when).isoformat() if when else ''})"
    if "expired" in states:
        return f"its entitlement expired on {aware(states['expired'].ends_at).isoformat()}"
    if "pending" in states:
        return f"its entitlement starts on {aware(states['pending'].starts_at).isoformat()}"
    return "the project holds no entitlement for it (apply for access)"


#: the windows of a project's entitlements on some datasets, oldest first, as plain rows
#: (built once: every task asks; loading entitlement objects cost several times the query)
_HELD = (
    select(
        Entitlement.dataset_id, Entitlement.starts_at, Entitlement.ends_at, Entitlement.revoked_at
    )
    .where(
        Entitlement.project_id == bindparam("project"),
        Entitlement.dataset_id.in_(bindparam("datasets", expanding=True)),
    )
    .order_by(Entitlement.id)
)


def require_entitled(
    session: Session, *, project_id: int, datasets: Sequence[Dataset], now: datetime | None = None
) -> None:
    """Refuse (403) unless the project holds an active entitlement for every dataset."""
    moment = now or utcnow()
    held: dict[int, list[Window]] = {d.id: [] for d in datasets}
    ids = list(held)
    for start in range(0, len(ids), 500):  # one query per 500 datasets, not one each
        chunk = ids[start : start + 500]
        for window in execute_core(session, _HELD, {"project": project_id, "datasets": chunk}):
            held[window.dataset_id].append(window)
    for dataset in datasets:
        reason = reason_not_entitled(
            session,
            project_id=project_id,
            dataset_id=dataset.id,
            now=moment,
            rows=held[dataset.id],
        )
        if reason is not None:
            raise Refused(
                f"project {project_id} may not use dataset {dataset.id} ({dataset.name}): {reason}"
            )


@dataclass(frozen=True)
class Grant:
    """What a claimed run carries: the signed entitlement, or the discovery mark."""

    entitlement: SignedEntitlement | None
    discovery: bool


def _iso(value: datetime) -> str:
    return aware(value).isoformat()


def sign(statement: EntitlementStatement, key: Ed25519PrivateKey) -> SignedEntitlement:
    signature = base64.b64encode(key.sign(statement.text())).decode()
    return SignedEntitlement(statement=statement, signature=signature)


class DatasetRef(NamedTuple):
    """What a grant names of a run's dataset (the claim's query reads it)."""

    id: int
    name: str
    manifest_root: str | None


class ActiveWindow(NamedTuple):
    """The active entitlement a claim found (:func:`first_active`): its id and window."""

    id: int
    starts_at: datetime
    ends_at: datetime


_ENTITLEMENTS = cast(Table, Entitlement.__table__)


def first_active(project_id: Any, dataset_id: Any, now: Any) -> Any:
    """The id of the project's first active entitlement on the dataset at ``now``, as a SQL
    scalar subquery (the claim's query joins it): what :func:`status_of` calls ``active``
    — not revoked, started, not ended."""
    e = _ENTITLEMENTS.c
    return (
        select(e.id)
        .where(
            e.project_id == project_id,
            e.dataset_id == dataset_id,
            e.revoked_at.is_(None),
            e.starts_at <= now,
            e.ends_at > now,
        )
        .order_by(e.id)
        .limit(1)
        .scalar_subquery()
    )


def grant_for_run(
    session: Session,
    *,
    project_id: int,
    dataset: DatasetRef,
    node_id: int,
    settings: HubSettings,
    discovery: bool,
    active: ActiveWindow | None,
    now: datetime,
) -> Grant | str:
    """The grant a run is handed out with, or the reason it must be refused.

    ``discovery``: whether the task is a discovery query; ``active``: the project's
    active entitlement on the dataset at ``now`` (both read by the claim's query)."""
    if discovery:
        return Grant(entitlement=None, discovery=True)
    if active is None:
        reason = reason_not_entitled(session, project_id=project_id, dataset_id=dataset.id, now=now)
        return (
            f"hub: project {project_id} may not use dataset {dataset.id} "
            f"({dataset.name}): {reason or 'no active entitlement'}"
        )
    statement = EntitlementStatement(
        entitlement_id=active.id,
        project_id=project_id,
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        node_id=node_id,
        manifest_root=dataset.manifest_root,
        not_before=_iso(active.starts_at),
        not_after=_iso(active.ends_at),
        revoked=False,
        issued_at=_iso(now),
    )
    return Grant(entitlement=sign(statement, hub_key(settings.secret_key)), discovery=False)


def _dac_dataset_ids(session: Session, user: User) -> list[int]:
    return list(
        session.scalars(
            select(Dataset.id)
            .join(Node, Node.id == Dataset.node_id)
            .where(Node.organization_id == user.organization_id)
        )
    )


def list_entitlements(
    session: Session, *, user: User, project_id: int | None = None
) -> list[Entitlement]:
    """Entitlements ``user`` may see: its projects', or (DAC) those on its organization's data."""
    query = select(Entitlement).order_by(Entitlement.id)
    if project_id is not None:
        query = query.where(Entitlement.project_id == project_id)
    rows = list(session.scalars(query))
    if user.is_superuser:
        return rows
    dac_datasets = set(_dac_dataset_ids(session, user)) if has_role(user, Role.dac) else set()
    return [
        e
        for e in rows
        if e.dataset_id in dac_datasets or is_member(session, project_id=e.project_id, user=user)
    ]


def ending_soon(session: Session, *, user: User, now: datetime) -> list[Entitlement]:
    """Entitlements on the DAC's organization's data that end within :data:`DUE_DAYS`."""
    if not has_role(user, Role.dac):
        raise Forbidden("the due view is for data access committee members (role dac)")
    query = (
        select(Entitlement)
        .where(
            Entitlement.revoked_at.is_(None),
            Entitlement.ends_at > now,
            Entitlement.ends_at <= now + timedelta(days=DUE_DAYS),
        )
        .order_by(Entitlement.ends_at)
    )
    if not user.is_superuser:
        query = query.where(Entitlement.dataset_id.in_(_dac_dataset_ids(session, user)))
    return list(session.scalars(query))


def end_for_application(
    session: Session, *, application: AccessApplication, actor: User, now: datetime
) -> list[int]:
    """Revoke the application's entitlements that are still in force; their ids."""
    rows = list(
        session.scalars(
            select(Entitlement).where(
                Entitlement.application_id == application.id,
                Entitlement.revoked_at.is_(None),
            )
        )
    )
    for entitlement in rows:
        entitlement.revoked_at = now
        entitlement.revoked_by = actor.id
    session.flush()
    return [e.id for e in rows]


def create_for_application(
    session: Session, *, application: AccessApplication, ends_at: datetime, now: datetime
) -> list[Entitlement]:
    rows = [
        Entitlement(
            application_id=application.id,
            project_id=application.project_id,
            dataset_id=int(dataset_id),
            starts_at=now,
            ends_at=ends_at,
        )
        for dataset_id in application.dataset_ids
    ]
    session.add_all(rows)
    session.flush()
    return rows
