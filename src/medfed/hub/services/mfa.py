"""Second factor for local accounts: TOTP (RFC 6238) with recovery codes, and the MFA policy.

How it runs (no threads; each call works in the caller's transaction):

- Enrolment is two steps. :func:`begin_enrolment` makes a random 160-bit base32 secret,
  stores it sealed under the hub's secret (``medfed.hub.keys.seal``) with no
  ``confirmed_at``, and returns it as an ``otpauth://`` URI and an SVG QR code.
  :func:`confirm_enrolment` checks the first code from the authenticator app against it,
  marks it confirmed and returns ten fresh recovery codes (shown once; stored as argon2id
  hashes, with lighter parameters than passwords since each code is 59 random bits). A
  second ``begin`` before the confirmation replaces the secret.
- :func:`check_second_factor` accepts a TOTP code of the current 30-second step or the one
  before or after (clock drift). The step of an accepted code is written with one
  conditional ``UPDATE … WHERE last_step < step``: a code (or an older one) is never
  accepted twice, even by two requests at once on two workers (replay). A recovery code
  is spent the same way (``UPDATE … WHERE used_at IS NULL``).
- :func:`mfa_required` is the policy: a user holding any role of
  ``settings.mfa_required_roles`` (a hub administrator counts as ``admin``) needs a second
  factor to get a session or token by password. OpenID Connect logins read the same list.
- Disabling needs a current code (the user) or an organization admin (:func:`reset`);
  either removes the secret and the recovery codes. Enrolment, disabling and resets are
  ledger entries (ids only).
"""

from __future__ import annotations

import secrets
import time

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from medfed.common.errors import BadRequest, Conflict, NotFound, Unauthorized
from medfed.common.identity_resources import MfaStatus, TotpEnrolment
from medfed.common.timeutil import utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import User
from medfed.hub.db.models_mfa import RecoveryCode, TotpCredential
from medfed.hub.keys import seal, unseal
from medfed.hub.services.accounts import get_user, require_org_admin
from medfed.hub.services.ledger import actor_of, record

__all__ = [
    "INTERVAL",
    "RECOVERY_CODES",
    "begin_enrolment",
    "check_second_factor",
    "confirm_enrolment",
    "disable",
    "enrolled",
    "mfa_required",
    "regenerate_recovery_codes",
    "reset",
    "status",
]

INTERVAL = 30
RECOVERY_CODES = 10
_DRIFT_STEPS = 1
_ISSUER = "medfed"
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
#: argon2id for recovery codes: lighter than for passwords (a code carries 59 random bits,
#: so the hash needs no work factor against guessing; it only keeps the codes unreadable)
_recovery_hasher = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


def _hash_recovery(plain: str) -> str:
    return _recovery_hasher.hash(plain)


def _recovery_matches(code_hash: str, plain: str) -> bool:
    try:
        return _recovery_hasher.verify(code_hash, plain)
    except (VerificationError, InvalidHashError):
        return False


def mfa_required(user: User, settings: HubSettings) -> bool:
    """Whether the policy needs a second factor for ``user``."""
    required = set(settings.mfa_required_roles)
    held = set(user.roles or [])
    if user.is_superuser:
        held.add("admin")
    return bool(required & held)


def _credential(session: Session, user: User) -> TotpCredential | None:
    return session.scalar(select(TotpCredential).where(TotpCredential.user_id == user.id))


def enrolled(session: Session, *, user: User) -> bool:
    """Whether ``user`` has a confirmed TOTP second factor."""
    cred = _credential(session, user)
    return cred is not None and cred.confirmed_at is not None


def status(session: Session, *, user: User, settings: HubSettings) -> MfaStatus:
    cred = _credential(session, user)
    left = session.scalars(
        select(RecoveryCode.id).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
        )
    ).all()
    return MfaStatus(
        enrolled=cred is not None and cred.confirmed_at is not None,
        pending=cred is not None and cred.confirmed_at is None,
        required=mfa_required(user, settings),
        confirmed_at=cred.confirmed_at if cred is not None else None,
        recovery_codes_left=len(left),
    )


def begin_enrolment(session: Session, *, user: User, settings: HubSettings) -> TotpEnrolment:
    """A new pending secret for ``user`` (refused while a confirmed one exists)."""
    cred = _credential(session, user)
    if cred is not None and cred.confirmed_at is not None:
        raise Conflict(
            "TOTP is enrolled already; disable it with a current code (or ask an admin to "
            "reset it) before enrolling again"
        )
    secret = pyotp.random_base32()
    if cred is None:
        cred = TotpCredential(user_id=user.id, secret_sealed="")
        session.add(cred)
    cred.secret_sealed = seal(settings.secret_key, secret)
    cred.created_at = utcnow()
    cred.last_step = None
    session.flush()
    uri = pyotp.TOTP(secret, interval=INTERVAL).provisioning_uri(
        name=user.username, issuer_name=_ISSUER
    )
    qr = segno.make(uri, error="m")
    return TotpEnrolment(secret=secret, otpauth_uri=uri, qr_svg=qr.svg_inline(scale=4))


def _matching_step(secret: str, code: str, now: float) -> list[int]:
    """The time steps (current ± drift) whose code is ``code``, newest first."""
    totp = pyotp.TOTP(secret, interval=INTERVAL)
    current = int(now // INTERVAL)
    steps = []
    for step in range(current + _DRIFT_STEPS, current - _DRIFT_STEPS - 1, -1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            steps.append(step)
    return steps


def _accept_otp(session: Session, cred: TotpCredential, settings: HubSettings, code: str) -> bool:
    secret = unseal(settings.secret_key, cred.secret_sealed)
    for step in _matching_step(secret, code, time.time()):
        taken = session.execute(
            update(TotpCredential)
            .where(
                TotpCredential.id == cred.id,
                or_(TotpCredential.last_step.is_(None), TotpCredential.last_step < step),
            )
            .values(last_step=step)
        )
        if getattr(taken, "rowcount", 0) == 1:
            session.refresh(cred)
            return True
    return False


def _normal_recovery(code: str) -> str:
    return code.replace("-", "").replace(" ", "").strip().lower()


def _spend_recovery(session: Session, user: User, code: str) -> bool:
    plain = _normal_recovery(code)
    rows = session.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    ).all()
    for row in rows:
        if _recovery_matches(row.code_hash, plain):
            spent = session.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None))
                .values(used_at=utcnow())
            )
            return getattr(spent, "rowcount", 0) == 1
    return False


def check_second_factor(
    session: Session,
    *,
    user: User,
    settings: HubSettings,
    otp: str | None,
    recovery_code: str | None,
) -> str:
    """Accept a TOTP code or a recovery code of ``user`` (confirmed enrolment); which one.

    Raises :class:`Unauthorized` for a wrong, reused or missing code, :class:`Conflict`
    when the account has no confirmed second factor.
    """
    cred = _credential(session, user)
    if cred is None or cred.confirmed_at is None:
        raise Conflict("this account has no second factor enrolled")
    if otp:
        if _accept_otp(session, cred, settings, otp):
            return "otp"
        raise Unauthorized(
            "wrong one-time code (or one used already): wait for the next code of your "
            "authenticator app"
        )
    if recovery_code:
        if _spend_recovery(session, user, recovery_code):
            record(
                session,
                action="mfa.recovery_code",
                actor=actor_of(user),
                objects={"user": user.id},
            )
            return "recovery"
        raise Unauthorized("wrong recovery code (or one used already)")
    raise Unauthorized("give a one-time code (otp) or a recovery code")


def _new_recovery_codes(session: Session, user: User) -> list[str]:
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
        session.add(RecoveryCode(user_id=user.id, code_hash=_hash_recovery(raw)))
    session.flush()
    return codes


def confirm_enrolment(
    session: Session, *, user: User, settings: HubSettings, code: str
) -> list[str]:
    """Confirm the pending secret with its first code; the new recovery codes (shown once)."""
    cred = _credential(session, user)
    if cred is None or cred.confirmed_at is not None:
        raise NotFound("no TOTP enrolment is waiting for confirmation; start one first")
    if not _accept_otp(session, cred, settings, code):
        raise Unauthorized(
            "wrong code: check the authenticator app's clock and enter its current code"
        )
    cred.confirmed_at = utcnow()
    codes = _new_recovery_codes(session, user)
    record(session, action="mfa.enrol", actor=actor_of(user), objects={"user": user.id})
    return codes


def regenerate_recovery_codes(
    session: Session, *, user: User, settings: HubSettings, otp: str
) -> list[str]:
    """Replace the recovery codes (needs a current TOTP code)."""
    check_second_factor(session, user=user, settings=settings, otp=otp, recovery_code=None)
    codes = _new_recovery_codes(session, user)
    record(session, action="mfa.recovery_codes", actor=actor_of(user), objects={"user": user.id})
    return codes


def _remove(session: Session, user: User) -> bool:
    gone = session.execute(delete(TotpCredential).where(TotpCredential.user_id == user.id))
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    session.flush()
    return getattr(gone, "rowcount", 0) > 0


def disable(
    session: Session,
    *,
    user: User,
    settings: HubSettings,
    otp: str | None,
    recovery_code: str | None,
) -> None:
    """The user turns TOTP off with a current code (a pending enrolment needs none)."""
    cred = _credential(session, user)
    if cred is None:
        raise NotFound("this account has no second factor to disable")
    if cred.confirmed_at is not None:
        if not otp and not recovery_code:
            raise BadRequest("disabling TOTP needs a current code (otp) or a recovery code")
        check_second_factor(
            session, user=user, settings=settings, otp=otp, recovery_code=recovery_code
        )
    _remove(session, user)
    record(session, action="mfa.disable", actor=actor_of(user), objects={"user": user.id})


def reset(session: Session, *, actor: User, user_id: int) -> None:
    """An admin of the user's organization removes its second factor (lost device)."""
    target = get_user(session, user_id)
    require_org_admin(actor, target.organization_id, "resetting a user's second factor")
    if not _remove(session, target):
        raise NotFound(f"user {user_id} has no second factor")
    record(session, action="mfa.reset", actor=actor_of(actor), objects={"user": target.id})
