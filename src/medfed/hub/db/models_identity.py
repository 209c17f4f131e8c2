"""OpenID Connect tables of the hub (issue 15): identities, roles from claims, login states.

Imported at the end of ``medfed.hub.db.models`` so that ``Base.metadata`` holds every table.

* ``user_identities``: one row per (issuer, subject) an OpenID provider vouched for, and
  the hub user it signs in. Users are found by ``iss`` + ``sub`` only, never by e-mail.
  ``last_login_at`` is the last login through the provider: API tokens of a user with an
  identity work only while it is younger than ``oidc_reauth_hours``
  (:mod:`medfed.hub.services.oidc_login`). No password, no token of the provider is kept.
* ``user_claim_roles``: the roles the claim mapping granted (one row per user and role).
  A role an admin granted by hand has no row here, so the next login never removes it.
* ``oidc_login_states``: a started web login (``state`` → nonce, PKCE verifier, provider,
  where to go after); the callback consumes its row, so a state works once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Base

__all__ = ["ClaimRole", "OidcLoginState", "UserIdentity"]


class UserIdentity(Base):
    __tablename__ = "user_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    provider: Mapped[str] = mapped_column(String(100))
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClaimRole(Base):
    __tablename__ = "user_claim_roles"
    __table_args__ = (UniqueConstraint("user_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    provider: Mapped[str] = mapped_column(String(100))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)


class OidcLoginState(Base):
    __tablename__ = "oidc_login_states"

    state: Mapped[str] = mapped_column(String(100), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100))
    nonce: Mapped[str] = mapped_column(String(100))
    code_verifier: Mapped[str] = mapped_column(String(200))
    redirect_uri: Mapped[str] = mapped_column(String(1000))
    next_url: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
