"""Zenodo deposition of a dataset version's metadata (never its data), and its withdrawal.

How it runs: when an author publishes a version (``lifecycle.transition``) and the
organization holding it has a Zenodo token in its settings (``catalogue_settings``; the
token is never returned by the API), the hub, inside the request and before it changes
the dataset, calls Zenodo's REST deposit API with the organization's token:

1. ``POST /api/deposit/depositions`` with ``prereserve_doi`` — create, reserve the DOI;
2. ``PUT /api/deposit/depositions/{id}`` — set the metadata (from :func:`zenodo_metadata`);
3. ``POST /api/deposit/depositions/{id}/actions/publish``.

On success the reserved DOI becomes the version's pid and a ``zenodo_depositions`` row
(status ``published``) is stored with the state change, in one transaction. If any step
fails, nothing is half-published at the hub: the unpublished draft deposition is deleted
at Zenodo (``DELETE``; status ``deleted``) — or, if that fails too, its id is kept with
status ``orphaned`` for a retry — the failure row and its audit entry are committed, the
dataset's state and pid stay as they were, and :class:`PublishFailed` (502) names the step.

The Zenodo endpoint must be on the hub's allow-list (``zenodo_urls`` in the hub settings,
default ``https://zenodo.org`` and its sandbox): another URL is refused (422) when set and,
should one be stored from before, when used — before any request leaves the hub. The token
is stored sealed (``medfed.hub.keys.seal``: Fernet under a key derived from the hub's
secret) and opened only for the calls; :func:`seal_stored_tokens` seals tokens stored in
plain text by earlier versions when the hub starts.

Zenodo cannot delete a published record, so invalidation withdraws it: ``actions/edit``,
``PUT`` metadata whose title and description say the dataset was withdrawn (and why), then
``actions/publish`` (status ``withdrawn``). Invalidation at the hub never waits on Zenodo:
if the withdrawal fails, the edit is discarded and the row is marked ``withdraw_failed``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.catalogue_resources import ZenodoSettingsPublic, ZenodoSettingsUpdate
from medfed.common.errors import BadRequest, Forbidden, MedfedError, NotFound
from medfed.common.resources import Role
from medfed.common.timeutil import utcnow
from medfed.hub.config import SETTINGS_INFO, HubSettings
from medfed.hub.db.models import Dataset, Node, Organization, User
from medfed.hub.db.models_catalogue import CatalogueSettings, ZenodoDeposition
from medfed.hub.keys import UnsealError, is_sealed, seal, unseal
from medfed.hub.services.accounts import has_role
from medfed.hub.services.ledger import actor_of, record
from medfed.ledger.entries import content_hash

__all__ = [
    "PublishFailed",
    "ZenodoClient",
    "ZenodoError",
    "depositions_of",
    "get_settings",
    "publish_if_configured",
    "seal_stored_tokens",
    "set_settings",
    "withdraw_if_deposited",
    "zenodo_metadata",
]

ACCESS_RIGHT = {"PUBLIC": "open", "RESTRICTED": "restricted", "NON_PUBLIC": "closed"}


class PublishFailed(MedfedError):
    """Zenodo refused or failed a step; the dataset was left as it was."""

    status_code = 502


class ZenodoError(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"zenodo {step} failed: {detail}")
        self.step = step
        self.detail = detail


class ZenodoClient:
    """The few deposit endpoints medfed uses, over httpx with a bearer token."""

    def __init__(self, url: str, token: str, *, timeout: float = 15.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, step: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ZenodoError(step, f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise ZenodoError(step, f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code == 204 or not response.content:
            return {}
        data: dict[str, Any] = response.json()
        return data

    def create(self) -> dict[str, Any]:
        return self._call(
            "create", "POST", "/api/deposit/depositions", {"metadata": {"prereserve_doi": True}}
        )

    def update(self, deposition_id: int, metadata: dict[str, Any]) -> dict[str, Any]:
        path = f"/api/deposit/depositions/{deposition_id}"
        return self._call("set metadata", "PUT", path, {"metadata": metadata})

    def action(self, deposition_id: int, name: str) -> dict[str, Any]:
        path = f"/api/deposit/depositions/{deposition_id}/actions/{name}"
        return self._call(name, "POST", path)

    def delete(self, deposition_id: int) -> None:
        self._call("delete", "DELETE", f"/api/deposit/depositions/{deposition_id}")


# --------------------------------------------------------------------------- settings


def _hub(session: Session) -> HubSettings:
    found = session.info.get(SETTINGS_INFO)
    if not isinstance(found, HubSettings):
        raise RuntimeError("Zenodo settings need a session made by the hub app (its settings)")
    return found


def _require_allowed(hub: HubSettings, url: str) -> None:
    if not hub.zenodo_url_allowed(url):
        raise BadRequest(
            f"Zenodo URL '{url}' is not allowed; this hub allows {', '.join(hub.zenodo_urls)} "
            "(zenodo_urls in the hub settings)"
        )


def _require_org_admin(actor: User, organization_id: int) -> None:
    if actor.is_superuser:
        return
    if actor.organization_id != organization_id or not has_role(actor, Role.admin):
        raise Forbidden(f"the Zenodo settings of organization {organization_id} need its admin")


def get_settings(session: Session, *, actor: User, organization_id: int) -> ZenodoSettingsPublic:
    _require_org_admin(actor, organization_id)
    row = session.get(CatalogueSettings, organization_id)
    return ZenodoSettingsPublic(
        organization_id=organization_id,
        url=row.zenodo_url if row is not None else "https://zenodo.org",
        token_set=row is not None and row.zenodo_token is not None,
    )


def set_settings(
    session: Session, *, actor: User, organization_id: int, body: ZenodoSettingsUpdate
) -> ZenodoSettingsPublic:
    """Store the organization's Zenodo endpoint and token (``token=None`` removes it)."""
    _require_org_admin(actor, organization_id)
    if session.get(Organization, organization_id) is None:
        raise NotFound(f"organization {organization_id} not found")
    hub = _hub(session)
    _require_allowed(hub, body.url)
    row = session.get(CatalogueSettings, organization_id)
    if row is None:
        row = CatalogueSettings(organization_id=organization_id)
        session.add(row)
    row.zenodo_url = body.url
    row.zenodo_token = None if body.token is None else seal(hub.secret_key, body.token)
    row.updated_at = utcnow()
    session.flush()
    record(
        session,
        action="organization.zenodo_settings",
        actor=actor_of(actor),
        objects={"organization": organization_id},
        hashes={"url": content_hash(body.url)},  # never the token, not even hashed
    )
    return get_settings(session, actor=actor, organization_id=organization_id)


def _settings_for(session: Session, dataset: Dataset) -> CatalogueSettings | None:
    node = session.get(Node, dataset.node_id)
    assert node is not None
    row = session.get(CatalogueSettings, node.organization_id)
    return row if row is not None and row.zenodo_token else None


def _client_for(session: Session, settings: CatalogueSettings) -> ZenodoClient:
    """A client for the organization's endpoint, checked against the allow-list first."""
    hub = _hub(session)
    _require_allowed(hub, settings.zenodo_url)
    assert settings.zenodo_token is not None
    try:
        token = unseal(hub.secret_key, settings.zenodo_token)
    except UnsealError as exc:
        raise BadRequest(f"organization {settings.organization_id}'s Zenodo token: {exc}") from None
    return ZenodoClient(settings.zenodo_url, token)


def seal_stored_tokens(session: Session, *, secret_key: str) -> int:
    """Seal tokens stored in plain text (by an earlier version); returns how many."""
    rows = session.scalars(
        select(CatalogueSettings).where(CatalogueSettings.zenodo_token.is_not(None))
    )
    sealed = 0
    for row in rows:
        if row.zenodo_token is not None and not is_sealed(row.zenodo_token):
            row.zenodo_token = seal(secret_key, row.zenodo_token)
            sealed += 1
    return sealed


def depositions_of(session: Session, dataset_id: int) -> list[ZenodoDeposition]:
    return list(
        session.scalars(
            select(ZenodoDeposition)
            .where(ZenodoDeposition.dataset_id == dataset_id)
            .order_by(ZenodoDeposition.id)
        )
    )


# -------------------------------------------------------------------------- metadata


def zenodo_metadata(
    session: Session, dataset: Dataset, *, withdrawn: str | None = None
) -> dict[str, Any]:
    """Zenodo deposit metadata for a version (``upload_type=dataset``, no files)."""
    node = session.get(Node, dataset.node_id)
    assert node is not None
    org = session.get(Organization, node.organization_id)
    publisher = org.name if org is not None else node.name
    title = dataset.title or dataset.name
    description = dataset.description or title
    if withdrawn is not None:
        title = f"[WITHDRAWN] {title}"
        description = f"This dataset version was withdrawn: {withdrawn}. {description}"
    metadata: dict[str, Any] = {
        "upload_type": "dataset",
        "title": title,
        "description": description,
        "creators": [{"name": publisher}],
        "keywords": list(dataset.keywords),
        "version": str(dataset.version),
        "access_right": ACCESS_RIGHT.get(dataset.access_rights, "closed"),
        "notes": "Metadata only: the data stays at the hospital and is analysed in place "
        f"({', '.join(dataset.access_conditions) or 'by federated analysis'}).",
    }
    if metadata["access_right"] == "restricted":
        metadata["access_conditions"] = "Apply for access through the medfed hub (DAC review)."
    previous = session.get(Dataset, dataset.previous_id) if dataset.previous_id else None
    if previous is not None and previous.pid and previous.pid.startswith("10."):
        metadata["related_identifiers"] = [
            {"identifier": previous.pid, "relation": "isNewVersionOf", "scheme": "doi"}
        ]
    return metadata


# ------------------------------------------------------------------------ publishing


def publish_if_configured(session: Session, *, actor: User, dataset: Dataset) -> None:
    """Deposit and publish the metadata at Zenodo; on success the DOI becomes the pid.

    Called before the hub changes the dataset. On failure the failure row and its audit
    entry are committed and :class:`PublishFailed` is raised (the dataset is unchanged).
    """
    settings = _settings_for(session, dataset)
    if settings is None:
        return
    client = _client_for(session, settings)
    deposition_id: int | None = None
    try:
        created = client.create()
        deposition_id = int(created["id"])
        doi = str(created["metadata"]["prereserve_doi"]["doi"])
        client.update(deposition_id, {**zenodo_metadata(session, dataset), "prereserve_doi": True})
        client.action(deposition_id, "publish")
    except (ZenodoError, KeyError, TypeError, ValueError) as exc:
        step = exc.step if isinstance(exc, ZenodoError) else "create (unexpected answer)"
        status = _clean_up(client, deposition_id)
        client.close()
        session.add(
            ZenodoDeposition(
                dataset_id=dataset.id, deposition_id=deposition_id, status=status, error=str(exc)
            )
        )
        record(
            session,
            action="dataset.zenodo_fail",
            actor=actor_of(actor),
            objects={"dataset": dataset.id, "deposition": deposition_id or 0, "status": status},
        )
        session.commit()  # keep the failure (and an orphan's id) even though publish stops
        raise PublishFailed(
            f"publishing dataset {dataset.id} at Zenodo failed at '{step}'; the dataset was "
            f"not published (draft deposition {status})"
        ) from None
    client.close()
    dataset.pid = doi
    session.add(
        ZenodoDeposition(
            dataset_id=dataset.id, deposition_id=deposition_id, doi=doi, status="published"
        )
    )
    record(
        session,
        action="dataset.zenodo_publish",
        actor=actor_of(actor),
        objects={"dataset": dataset.id, "deposition": deposition_id, "doi": doi},
    )


def _clean_up(client: ZenodoClient, deposition_id: int | None) -> str:
    if deposition_id is None:
        return "deleted"  # nothing was created
    try:
        client.delete(deposition_id)
    except ZenodoError:
        return "orphaned"
    return "deleted"


def withdraw_if_deposited(session: Session, *, actor: User, dataset: Dataset) -> None:
    """Mark the version's published Zenodo record as withdrawn (never blocks invalidation)."""
    row = session.scalar(
        select(ZenodoDeposition).where(
            ZenodoDeposition.dataset_id == dataset.id, ZenodoDeposition.status == "published"
        )
    )
    settings = _settings_for(session, dataset)
    if row is None or row.deposition_id is None or settings is None:
        return
    reason = dataset.invalidation_reason or "invalidated"
    try:
        client = _client_for(session, settings)
    except BadRequest as refused:  # never blocks the invalidation; nothing was sent
        row.status, row.error = "withdraw_failed", refused.message
    else:
        try:
            client.action(row.deposition_id, "edit")
            client.update(row.deposition_id, zenodo_metadata(session, dataset, withdrawn=reason))
            client.action(row.deposition_id, "publish")
            row.status, row.error = "withdrawn", None
        except ZenodoError as exc:
            with contextlib.suppress(ZenodoError):
                client.action(row.deposition_id, "discard")
            row.status, row.error = "withdraw_failed", str(exc)
        finally:
            client.close()
    row.updated_at = utcnow()
    session.flush()
    record(
        session,
        action="dataset.zenodo_withdraw",
        actor=actor_of(actor),
        objects={"dataset": dataset.id, "deposition": row.deposition_id, "status": row.status},
    )
