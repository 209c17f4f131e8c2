"""Routes for the second factor (TOTP and recovery codes); thin, ``services.mfa`` does the work.

Two ways to enrol: signed in (``/api/me/mfa/…``, with a token), or with the password
(``/api/auth/mfa/enrol`` then ``/api/auth/mfa/confirm``, which also answers a login token)
for an account the MFA policy refuses a token until it has enrolled. Every code check
goes through the login throttle: wrong codes count as failed logins of the account.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request, status

from medfed.common.errors import BadRequest, Unauthorized
from medfed.common.identity_resources import (
    MfaCode,
    MfaEnrolConfirm,
    MfaEnrolled,
    MfaEnrolStart,
    MfaStatus,
    RecoveryCodes,
    TotpEnrolment,
)
from medfed.hub.api.deps import CurrentUser, SessionDep, SettingsDep
from medfed.hub.api.limits import Id
from medfed.hub.services import accounts, auth, mfa
from medfed.hub.services.login_throttle import LoginThrottle

router = APIRouter(tags=["mfa"])

T = TypeVar("T")


def guarded(request: Request, username: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` behind the login throttle: a 401 from it counts as a failure."""
    throttle: LoginThrottle = request.app.state.login_throttle
    address = request.client.host if request.client else None
    throttle.check(username, address)
    try:
        return attempt()
    except Unauthorized:
        throttle.failed(username, address)
        raise


@router.post("/api/auth/mfa/enrol", status_code=status.HTTP_201_CREATED)
def enrol_with_password(
    body: MfaEnrolStart, request: Request, session: SessionDep, settings: SettingsDep
) -> TotpEnrolment:
    """Start a TOTP enrolment with the password (for an account refused a token until then)."""

    def start() -> TotpEnrolment:
        user = auth.check_password(
            session, username=body.username, password=body.password, settings=settings
        )
        return mfa.begin_enrolment(session, user=user, settings=settings)

    enrolment = guarded(request, body.username, start)
    session.commit()
    return enrolment


@router.post("/api/auth/mfa/confirm", status_code=status.HTTP_201_CREATED)
def confirm_with_password(
    body: MfaEnrolConfirm, request: Request, session: SessionDep, settings: SettingsDep
) -> MfaEnrolled:
    """Confirm with the first code: the recovery codes (shown once) and a login token."""

    def finish() -> MfaEnrolled:
        user = auth.check_password(
            session, username=body.username, password=body.password, settings=settings
        )
        codes = mfa.confirm_enrolment(session, user=user, settings=settings, code=body.code)
        token, plain = auth.login_token(session, user=user, days=body.days, method="otp")
        return MfaEnrolled(recovery_codes=codes, token=plain, expires_at=token.expires_at)

    enrolled = guarded(request, body.username, finish)
    session.commit()
    return enrolled


@router.get("/api/me/mfa")
def my_status(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> MfaStatus:
    return mfa.status(session, user=user, settings=settings)


@router.post("/api/me/mfa/enrol", status_code=status.HTTP_201_CREATED)
def enrol(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> TotpEnrolment:
    """Start a TOTP enrolment (a new secret; confirm it with its first code)."""
    enrolment = mfa.begin_enrolment(session, user=user, settings=settings)
    session.commit()
    return enrolment


def _otp(body: MfaCode) -> str:
    if not body.otp:
        raise BadRequest("otp: give the current 6-digit code of the authenticator app")
    return body.otp


@router.post("/api/me/mfa/confirm")
def confirm(
    body: MfaCode, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> MfaEnrolled:
    """Confirm the pending enrolment with its first code; the recovery codes, shown once."""
    code = _otp(body)
    codes = guarded(
        request,
        user.username,
        lambda: mfa.confirm_enrolment(session, user=user, settings=settings, code=code),
    )
    session.commit()
    return MfaEnrolled(recovery_codes=codes)


@router.post("/api/me/mfa/disable")
def disable(
    body: MfaCode, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> MfaStatus:
    """Turn TOTP off with a current code or a recovery code."""
    guarded(
        request,
        user.username,
        lambda: mfa.disable(
            session, user=user, settings=settings, otp=body.otp, recovery_code=body.recovery_code
        ),
    )
    session.commit()
    return mfa.status(session, user=user, settings=settings)


@router.post("/api/me/mfa/recovery-codes")
def new_recovery_codes(
    body: MfaCode, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> RecoveryCodes:
    """Ten new recovery codes (the old ones stop working); needs a current code."""
    code = _otp(body)
    codes = guarded(
        request,
        user.username,
        lambda: mfa.regenerate_recovery_codes(session, user=user, settings=settings, otp=code),
    )
    session.commit()
    return RecoveryCodes(recovery_codes=codes)


@router.delete("/api/users/{user_id}/mfa")
def reset(user_id: Id, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> MfaStatus:
    """An admin of the user's organization removes its second factor (a lost device)."""
    mfa.reset(session, actor=user, user_id=user_id)
    session.commit()
    return mfa.status(session, user=accounts.get_user(session, user_id), settings=settings)
