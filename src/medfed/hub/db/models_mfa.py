"""Identity tables of the hub: TOTP second factors, recovery codes, external visas.

Imported at the end of ``medfed.hub.db.models`` so that ``Base.metadata`` holds every table.

* ``mfa_totp``: one row per user with a TOTP secret (RFC 6238), stored sealed under the
  hub's secret (``medfed.hub.keys.seal``). ``confirmed_at`` is empty while the enrolment
  waits for its first valid code; ``last_step`` is the 30-second time step of the last
  code accepted, so a code is never accepted twice (replay).
* ``mfa_recovery_codes``: ten single-use codes per enrolment, stored as argon2 hashes;
  ``used_at`` is set when one is spent.
* ``external_visas``: GA4GH Passport visas from trusted external issuers (e.g. REMS)
  attached to an access application as evidence, with the claims the hub verified.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Base

__all__ = ["Base", "ExternalVisa", "RecoveryCode", "TotpCredential"]


class TotpCredential(Base):
    __tablename__ = "mfa_totp"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    secret_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    last_step: Mapped[int | None] = mapped_column(Integer)


class RecoveryCode(Base):
    __tablename__ = "mfa_recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


class ExternalVisa(Base):
    __tablename__ = "external_visas"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("access_applications.id"), index=True)
    added_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(500))
    visa_type: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    asserted_by: Mapped[str | None] = mapped_column(String(100))
    asserted_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    claims: Mapped[dict[str, Any]] = mapped_column(default=dict)
    jwt_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
