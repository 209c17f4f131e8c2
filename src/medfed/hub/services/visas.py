"""GA4GH Passport visas issued by the hub: a user's entitlements as signed JWTs, and its JWKS.

How it runs (no threads, no storage of its own):

- The signing key is an ECDSA P-256 key (JWS ``ES256``, the interoperable choice next to
  RS256) derived from the hub's secret with HKDF-SHA256 under its own ``info``, like the
  ledger and sealing keys: every worker derives the same key, nothing is stored, and a new
  ``MEDFED_SECRET_KEY`` rotates it. Its ``kid`` is the RFC 7638 thumbprint; the public key
  is served at ``/.well-known/jwks.json``.
- :func:`visas_for` reads, at each request, the active entitlements of every project the
  user is a member of and signs one ``ControlledAccessGrants`` visa per entitlement
  (``value`` the dataset's persistent-id URL, ``source`` the DAC of the organization that
  holds the dataset, ``by: dac``, ``asserted`` the approval time), plus one
  ``AffiliationAndRole`` visa per role (``role@organization``). A visa's ``exp`` is never
  past its entitlement's end; a revoked or ended entitlement gives no visa. The project,
  entitlement and end date ride in the private claim ``medfed``.
- :func:`passport_for` wraps the visas in a passport JWT (claim ``ga4gh_passport_v1``).

The hub knows nothing about accepted terms or bona fide researcher status, so it issues
no ``AcceptedTermsAndPolicies`` or ``ResearcherStatus`` visas.
"""

from __future__ import annotations

import functools
import re
import uuid
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.timeutil import aware, utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Dataset, Node, Organization, Project, ProjectMember, User
from medfed.hub.db.models_access import AccessApplication, Entitlement
from medfed.hub.services.access.entitlements import status_of
from medfed.hub.services.catalogue.metadata import pid_url

__all__ = [
    "ALGORITHM",
    "JWKS_PATH",
    "VISA_CLAIM",
    "issuer_of",
    "jwks",
    "passport_for",
    "signing_key",
    "visas_for",
]

ALGORITHM = "ES256"
VISA_CLAIM = "ga4gh_visa_v1"
PASSPORT_CLAIM = "ga4gh_passport_v1"
JWKS_PATH = "/.well-known/jwks.json"
_KEY_INFO = b"medfed GA4GH visa signing key v1 (P-256)"
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


@functools.lru_cache(maxsize=4)
def signing_key(secret_key: str) -> ECKey:
    """The hub's visa key (P-256), derived from its secret; ``kid`` its thumbprint."""
    seed = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=_KEY_INFO).derive(
        secret_key.encode()
    )
    scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
    private = ec.derive_private_key(scalar, ec.SECP256R1())
    key = ECKey.import_key(private)
    return ECKey.import_key(private, {"kid": key.thumbprint(), "use": "sig", "alg": ALGORITHM})


def jwks(settings: HubSettings) -> dict[str, Any]:
    """The public JWK Set that verifies the hub's visas and passports."""
    return {"keys": [signing_key(settings.secret_key).as_dict(private=False)]}


def issuer_of(settings: HubSettings, base_url: str) -> str:
    """The ``iss`` of this hub's visas: ``visa_issuer``, else the request's base URL."""
    return (settings.visa_issuer or base_url).rstrip("/")


def _epoch(value: datetime) -> int:
    return int(aware(value).timestamp())


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "organization"


def _sign(claims: dict[str, Any], *, settings: HubSettings, issuer: str, typ: str) -> str:
    key = signing_key(settings.secret_key)
    header = {"alg": ALGORITHM, "typ": typ, "kid": key.kid, "jku": issuer + JWKS_PATH}
    return jwt.encode(header, claims, key, algorithms=[ALGORITHM])


def _envelope(user: User, issuer: str, now: datetime, exp: int) -> dict[str, Any]:
    return {
        "iss": issuer,
        "sub": str(user.id),
        "iat": _epoch(now),
        "exp": exp,
        "jti": str(uuid.uuid4()),
    }


def _active_entitlements(session: Session, user: User, now: datetime) -> list[Entitlement]:
    projects = select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)
    rows = session.scalars(
        select(Entitlement)
        .where(Entitlement.project_id.in_(projects), Entitlement.revoked_at.is_(None))
        .order_by(Entitlement.id)
    )
    return [e for e in rows if status_of(e, now) == "active"]


def _grant(
    session: Session, entitlement: Entitlement, *, issuer: str
) -> tuple[dict[str, Any], int]:
    dataset = session.get(Dataset, entitlement.dataset_id)
    project = session.get(Project, entitlement.project_id)
    application = session.get(AccessApplication, entitlement.application_id)
    assert dataset is not None and project is not None
    node = session.get(Node, dataset.node_id)
    assert node is not None
    decided = application.decided_at if application and application.decided_at else None
    visa = {
        "type": "ControlledAccessGrants",
        "asserted": _epoch(decided or entitlement.created_at),
        "value": pid_url(issuer, dataset),
        "source": f"{issuer}/organizations/{node.organization_id}/dac",
        "by": "dac",
    }
    medfed = {
        "project_id": project.id,
        "project": project.name,
        "entitlement_id": entitlement.id,
        "application_id": entitlement.application_id,
        "dataset_id": dataset.id,
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "ends_at": aware(entitlement.ends_at).isoformat(),
    }
    return {VISA_CLAIM: visa, "medfed": medfed}, _epoch(entitlement.ends_at)


def _roles(session: Session, user: User, *, issuer: str) -> list[dict[str, Any]]:
    org = session.get(Organization, user.organization_id)
    name = _slug(org.name if org else str(user.organization_id))
    roles = sorted(set(user.roles or []) | ({"admin"} if user.is_superuser else set()))
    return [
        {
            VISA_CLAIM: {
                "type": "AffiliationAndRole",
                "asserted": _epoch(user.created_at),
                "value": f"{role}@{name}",
                "source": f"{issuer}/organizations/{user.organization_id}",
                "by": "system",
            }
        }
        for role in roles
    ]


def visas_for(
    session: Session, *, user: User, settings: HubSettings, issuer: str, now: datetime | None = None
) -> list[str]:
    """The user's visas as compact JWTs: grants for active entitlements, then roles."""
    moment = now or utcnow()
    until = _epoch(moment) + settings.visa_lifetime_seconds
    signed = []
    for entitlement in _active_entitlements(session, user, moment):
        claims, ends = _grant(session, entitlement, issuer=issuer)
        exp = min(until, ends)
        claims = {**_envelope(user, issuer, moment, exp), **claims}
        signed.append(_sign(claims, settings=settings, issuer=issuer, typ="JWT"))
    for claims in _roles(session, user, issuer=issuer):
        claims = {**_envelope(user, issuer, moment, until), **claims}
        signed.append(_sign(claims, settings=settings, issuer=issuer, typ="JWT"))
    return signed


def passport_for(
    session: Session, *, user: User, settings: HubSettings, issuer: str, now: datetime | None = None
) -> str:
    """A passport JWT whose ``ga4gh_passport_v1`` claim holds :func:`visas_for`."""
    moment = now or utcnow()
    visas = visas_for(session, user=user, settings=settings, issuer=issuer, now=moment)
    claims = {
        **_envelope(user, issuer, moment, _epoch(moment) + settings.visa_lifetime_seconds),
        PASSPORT_CLAIM: visas,
    }
    return _sign(claims, settings=settings, issuer=issuer, typ="vnd.ga4gh.passport+jwt")
