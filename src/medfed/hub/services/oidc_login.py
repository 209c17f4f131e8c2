"""Signing a user in from verified ID token claims: identity, organization, roles, MFA, token.

:func:`sign_in` runs after :class:`~medfed.hub.services.oidc_provider.ProviderClient` has
verified the ID token (web callback or device grant). In one transaction it

1. finds the user by the token's (``iss``, ``sub``) in ``user_identities`` — never by
   e-mail — or plans a new one;
2. maps the claims: the provider's ``groups_claim`` (a list, or one string) is matched
   against ``role_mapping``; the matched lines' organizations must be one (a hub user
   belongs to one organization; none matched: the provider's ``organization``), and their
   roles plus ``default_roles`` are the roles the claims give;
3. computes the user's roles: the roles an admin granted by hand (roles without a row in
   ``user_claim_roles``) stay; roles the mapping granted at an earlier login and the
   claims no longer give are removed; the claims' roles are added. A user moved to another
   organization by the mapping keeps no hand-granted role (they belonged to the old one);
4. refuses the login if a resulting role is in ``mfa_required_roles`` and the token's
   ``amr``/``acr`` shows no second factor — before anything is written, so a refused
   login changes nothing;
5. writes the user, identity (``last_login_at``), claim-role rows, a ledger entry
   (``auth.sso_login``: ids and role names only) and a new API token.

The claims themselves (name, e-mail, groups) are not stored; the username is taken from
``username_claim`` once, when the user is created.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.errors import Forbidden, Unauthorized
from medfed.common.timeutil import utcnow
from medfed.hub.db.models import ApiToken, Organization, User
from medfed.hub.db.models_identity import ClaimRole, UserIdentity
from medfed.hub.services.auth import create_token
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.oidc_config import OidcProvider

__all__ = ["MappedClaims", "map_claims", "sign_in"]

_USERNAME_CHARS = re.compile(r"[^A-Za-z0-9._@-]")
#: stored as the password hash of SSO users: no password ever verifies against it
NO_PASSWORD = "!sso"


@dataclass(frozen=True)
class MappedClaims:
    """What the claims give: one organization (by name) and a set of roles."""

    organization: str
    roles: frozenset[str]


def _groups(claims: dict[str, Any], claim: str) -> set[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {str(v) for v in value}
    return set()


def map_claims(provider: OidcProvider, claims: dict[str, Any]) -> MappedClaims:
    """The organization and roles ``claims`` give under the provider's mapping."""
    groups = _groups(claims, provider.groups_claim)
    matched = [line for line in provider.role_mapping if line.group in groups]
    organizations = {line.organization or provider.organization for line in matched}
    if len(organizations) > 1:
        raise Forbidden(
            f"your groups at '{provider.label}' map to several organizations "
            f"({', '.join(sorted(organizations))}); a hub user belongs to one: ask the hub "
            "administrator to fix the provider's role mapping"
        )
    organization = organizations.pop() if organizations else provider.organization
    roles = {r.value for r in provider.default_roles} | {line.role.value for line in matched}
    return MappedClaims(organization=organization, roles=frozenset(roles))


def _username(session: Session, provider: OidcProvider, claims: dict[str, Any]) -> str:
    proposed = claims.get(provider.username_claim) or claims.get("email") or claims["sub"]
    base = _USERNAME_CHARS.sub("_", str(proposed))[:80] or "user"
    candidates = [base, f"{base}@{provider.name}"[:100]]
    candidates += [f"{base}@{provider.name}-{n}"[:100] for n in range(2, 100)]
    for name in candidates:
        if session.scalar(select(User.id).where(User.username == name)) is None:
            return name
    raise Forbidden("no free username for this account; ask the hub administrator")


def _organization(session: Session, name: str) -> Organization:
    org = session.scalar(select(Organization).where(Organization.name == name))
    if org is None:
        raise Forbidden(
            f"the sign-in provider maps you to organization '{name}', which this hub does "
            "not have; ask the hub administrator"
        )
    return org


def sign_in(
    session: Session,
    *,
    provider: OidcProvider,
    claims: dict[str, Any],
    mfa_required_roles: list[str],
    token_name: str,
    days: int = 1,
) -> tuple[User, ApiToken, str]:
    """Sign in the user of verified ``claims``; returns the user, its new token and plain."""
    issuer, subject = str(claims["iss"]), str(claims["sub"])
    mapped = map_claims(provider, claims)
    org = _organization(session, mapped.organization)
    identity = session.scalar(
        select(UserIdentity).where(UserIdentity.issuer == issuer, UserIdentity.subject == subject)
    )
    user = session.get(User, identity.user_id) if identity is not None else None
    if user is not None and not user.active:
        raise Unauthorized("this account is disabled on the hub")
    claim_rows = (
        list(session.scalars(select(ClaimRole).where(ClaimRole.user_id == user.id)))
        if user is not None
        else []
    )
    granted_before = {row.role for row in claim_rows}
    by_hand: set[str] = set()
    if user is not None and user.organization_id == org.id:
        by_hand = set(user.roles or []) - granted_before
    roles = by_hand | mapped.roles
    needs_mfa = sorted(roles & set(mfa_required_roles))
    if user is not None and user.is_superuser and not needs_mfa and mfa_required_roles:
        needs_mfa = ["hub administrator"]
    if needs_mfa and not provider.mfa_shown(claims):
        raise Forbidden(
            f"your role(s) {', '.join(needs_mfa)} need multi-factor authentication, and "
            f"'{provider.label}' did not report a second factor for this login (amr/acr): "
            "sign in there with your second factor and try again"
        )

    now = utcnow()
    if user is None:
        user = User(
            username=_username(session, provider, claims),
            email=None,
            password_hash=NO_PASSWORD,
            organization_id=org.id,
            roles=sorted(roles),
        )
        session.add(user)
        session.flush()
        record(
            session,
            action="user.create",
            actor="hub",
            objects={"user": user.id, "organization": org.id, "roles": list(user.roles)},
        )
    before = set(user.roles or [])
    user.organization_id = org.id
    user.roles = sorted(roles)
    if identity is None:
        identity = UserIdentity(
            user_id=user.id, provider=provider.name, issuer=issuer, subject=subject
        )
        session.add(identity)
    identity.last_login_at = now
    keep = {r for r in mapped.roles if r in granted_before or r not in by_hand}
    for row in claim_rows:
        if row.role not in keep:
            session.delete(row)
    for role in sorted(keep - granted_before):
        session.add(ClaimRole(user_id=user.id, role=role, provider=provider.name))
    session.flush()
    token, plain = create_token(session, user=user, name=token_name, days=days, audit=False)
    record(
        session,
        action="auth.sso_login",
        actor=actor_of(user),
        objects={
            "user": user.id,
            "token": token.id,
            "identity": identity.id,
            "roles_added": sorted(set(user.roles) - before),
            "roles_removed": sorted(before - set(user.roles)),
        },
    )
    return user, token, plain
