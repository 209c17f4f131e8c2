"""Visas from trusted external issuers (e.g. REMS) as evidence on an access application.

How it runs: :func:`verify` reads the visa's header and, without trusting them yet, its
``iss``; the issuer must be a key of ``settings.trusted_visa_issuers``, whose value is the
URL of its JWKS. The JWK Set is fetched over HTTP (httpx, 10 s timeout) and kept in this
process for :data:`JWKS_TTL_SECONDS`; a ``kid`` it does not hold makes one fresh fetch
(key rotation). joserfc then checks the signature with the algorithm the header names
(asymmetric ones only: :data:`ALGORITHMS`), ``iss``, ``exp`` (required, 60 s leeway),
``nbf``/``iat``, and that ``ga4gh_visa_v1`` has a ``type``, ``value``, ``source`` and
``asserted``. Any failure is :class:`BadRequest` (422) naming the reason; nothing is stored.

:func:`attach` stores the verified claims on a draft or returned application of the
caller's project (an ``access.visa`` event in the ledger); :func:`list_for` shows them to
whoever may see the application — its DAC above all.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.errors import BadRequest, Conflict, Forbidden
from medfed.common.timeutil import utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import User
from medfed.hub.db.models_mfa import ExternalVisa
from medfed.hub.services.access import applications
from medfed.hub.services.projects import is_member

__all__ = ["ALGORITHMS", "JWKS_TTL_SECONDS", "VerifiedVisa", "attach", "list_for", "verify"]

ALGORITHMS = ("ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "EdDSA")
JWKS_TTL_SECONDS = 300.0
LEEWAY_SECONDS = 60
_cache: dict[str, tuple[float, KeySet]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class VerifiedVisa:
    issuer: str
    subject: str
    visa: dict[str, Any]
    expires_at: datetime
    claims: dict[str, Any]


def _fetch(url: str) -> KeySet:
    try:
        response = httpx.get(url, timeout=10.0, follow_redirects=False)
        response.raise_for_status()
        return KeySet.import_key_set(response.json())
    except (httpx.HTTPError, ValueError, JoseError) as exc:
        raise BadRequest(f"the issuer's JWKS at {url} could not be read: {exc}") from None


def _keys(url: str, kid: str | None) -> KeySet:
    now = time.monotonic()
    with _lock:
        cached = _cache.get(url)
    if cached is not None and now - cached[0] < JWKS_TTL_SECONDS:
        keyset = cached[1]
        if kid is None or any(k.kid == kid for k in keyset.keys):
            return keyset
    keyset = _fetch(url)
    with _lock:
        _cache[url] = (now, keyset)
    return keyset


def _unverified(visa: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        compact = jws.extract_compact(visa.strip().encode())
        payload = json.loads(compact.payload)
    except (JoseError, ValueError) as exc:
        raise BadRequest(f"the visa is not a compact JWS: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("the visa's payload is not a JSON object")
    return dict(compact.headers()), payload


def _check_visa_claim(claims: dict[str, Any]) -> dict[str, Any]:
    visa = claims.get("ga4gh_visa_v1")
    if not isinstance(visa, dict):
        raise BadRequest("the token has no ga4gh_visa_v1 claim (it is not a GA4GH visa)")
    for field, kind in (("type", str), ("value", str), ("source", str), ("asserted", int)):
        if not isinstance(visa.get(field), kind) or isinstance(visa.get(field), bool):
            raise BadRequest(
                f"the visa's ga4gh_visa_v1.{field} is missing or not a {kind.__name__}"
            )
    if "by" in visa and not isinstance(visa["by"], str):
        raise BadRequest("the visa's ga4gh_visa_v1.by is not a string")
    return visa


def verify(visa: str, *, settings: HubSettings, now: float | None = None) -> VerifiedVisa:
    """The visa's verified claims, or :class:`BadRequest` with the reason."""
    header, unverified = _unverified(visa)
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise BadRequest(f"the visa's algorithm {alg!r} is not accepted (one of {ALGORITHMS})")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or issuer not in settings.trusted_visa_issuers:
        raise BadRequest(f"the visa's issuer {issuer!r} is not trusted by this hub")
    keyset = _keys(settings.trusted_visa_issuers[issuer], header.get("kid"))
    try:
        token = jwt.decode(visa.strip(), keyset, algorithms=[str(alg)])
    except (JoseError, ValueError) as exc:
        raise BadRequest(
            f"the visa's signature does not verify against the JWKS of {issuer}: {exc}"
        ) from None
    registry = jwt.JWTClaimsRegistry(
        now=int(now if now is not None else time.time()),
        leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": issuer},
        exp={"essential": True},
    )
    try:
        registry.validate(token.claims)
    except JoseError as exc:
        raise BadRequest(
            f"the visa is not valid now: {exc.error} {exc.description or ''}"
        ) from None
    claims = dict(token.claims)
    visa_claim = _check_visa_claim(claims)
    return VerifiedVisa(
        issuer=issuer,
        subject=str(claims.get("sub", "")),
        visa=visa_claim,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        claims=claims,
    )


def attach(
    session: Session, *, actor: User, application_id: int, visa: str, settings: HubSettings
) -> ExternalVisa:
    """Verify ``visa`` and keep its claims on the application (draft or returned)."""
    application = applications.get_application(session, application_id=application_id, user=actor)
    if not (
        actor.is_superuser or is_member(session, project_id=application.project_id, user=actor)
    ):
        raise Forbidden(f"only members of project {application.project_id} add evidence")
    if application.state not in applications.EDITABLE:
        raise Conflict(f"application {application.id} is {application.state}; it cannot change")
    verified = verify(visa, settings=settings)
    sha = hashlib.sha256(visa.strip().encode()).hexdigest()
    if session.scalar(
        select(ExternalVisa.id).where(
            ExternalVisa.application_id == application.id, ExternalVisa.jwt_sha256 == sha
        )
    ):
        raise Conflict(f"application {application.id} carries this visa already")
    asserted = verified.visa.get("asserted")
    row = ExternalVisa(
        application_id=application.id,
        added_by=actor.id,
        issuer=verified.issuer[:500],
        subject=verified.subject[:500],
        visa_type=str(verified.visa["type"])[:100],
        value=str(verified.visa["value"]),
        source=str(verified.visa["source"]),
        asserted_by=str(verified.visa["by"])[:100] if "by" in verified.visa else None,
        asserted_at=datetime.fromtimestamp(asserted, UTC) if isinstance(asserted, int) else None,
        expires_at=verified.expires_at,
        claims=verified.claims,
        jwt_sha256=sha,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    applications.add_event(
        session, application, actor=actor, event="visa", from_state=application.state
    )
    return row


def list_for(session: Session, *, user: User, application_id: int) -> list[ExternalVisa]:
    """The verified visas of an application ``user`` may see."""
    applications.get_application(session, application_id=application_id, user=user)
    return list(
        session.scalars(
            select(ExternalVisa)
            .where(ExternalVisa.application_id == application_id)
            .order_by(ExternalVisa.id)
        )
    )
