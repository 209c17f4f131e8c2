"""The web sign-in's second step: a TOTP (or recovery) code, or a first enrolment.

How it runs: when ``POST /login`` finds the password right but a second factor missing
(:class:`~medfed.hub.services.auth.SecondFactorNeeded`), it calls :func:`second_step`,
which sets a short-lived *pending* cookie — ``user id . expiry . step`` and an
HMAC-SHA256 of them under the hub's secret, HttpOnly, SameSite=Lax, path ``/login``,
five minutes — and redirects to ``/login/otp`` (an account with TOTP) or
``/login/enrol`` (an account the MFA policy refuses until it enrols). The password is
not kept anywhere. The step's form posts the code (CSRF: the login form's double-submit
token); a right code makes the session cookie exactly as a password login does
(``auth.login_token``), a wrong one counts as a failed login of the account in the
throttle. The enrolment page shows the otpauth:// URI as an inline SVG QR code and the
secret for typing in; its confirmation page shows the ten recovery codes once.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from medfed.common.errors import MedfedError, RateLimited, Unauthorized
from medfed.hub.api.deps import SessionDep, SettingsDep
from medfed.hub.api.errors import rate_limited_response
from medfed.hub.api.routes.mfa import guarded
from medfed.hub.config import HubSettings
from medfed.hub.db.models import User
from medfed.hub.services import auth, mfa
from medfed.hub.web.session import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    CheckedVisitor,
    PageRoute,
    VisitorDep,
    redirect,
    render,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

PENDING_COOKIE = "medfed_mfa_pending"
PENDING_SECONDS = 300
SESSION_SECONDS = 24 * 3600


def _safe_next(target: str) -> str:
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if local else "/"


def _mac(secret: str, body: str) -> str:
    return hmac.new(secret.encode(), b"mfa-pending:" + body.encode(), hashlib.sha256).hexdigest()


def second_step(settings: HubSettings, *, user_id: int, enrol: bool, next_url: str) -> Response:
    """The redirect to the second step, with its signed pending cookie."""
    step = "enrol" if enrol else "otp"
    body = f"{user_id}.{int(time.time()) + PENDING_SECONDS}.{step}"
    response = redirect(f"/login/{step}?next={quote(_safe_next(next_url))}")
    response.set_cookie(
        PENDING_COOKIE,
        f"{body}.{_mac(settings.secret_key, body)}",
        max_age=PENDING_SECONDS,
        httponly=True,
        samesite="lax",
        secure=not settings.dev_mode,
        path="/login",
    )
    return response


def _pending(request: Request, session: SessionDep, settings: HubSettings, step: str) -> User:
    value = request.cookies.get(PENDING_COOKIE, "")
    body, _, mac = value.rpartition(".")
    parts = body.split(".")
    valid = (
        len(parts) == 3
        and hmac.compare_digest(mac, _mac(settings.secret_key, body))
        and parts[2] == step
        and parts[0].isdigit()
        and parts[1].isdigit()
        and int(parts[1]) > time.time()
    )
    user = session.get(User, int(parts[0])) if valid else None
    if user is None or not user.active:
        raise Unauthorized("the sign-in has expired; enter your username and password again")
    return user


def _signed_in(response: Response, plain: str, settings: HubSettings) -> Response:
    response.set_cookie(
        SESSION_COOKIE,
        plain,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        secure=not settings.dev_mode,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    response.delete_cookie(PENDING_COOKIE, path="/login")
    return response


def _again(
    request: Request, template: str, context: dict[str, object], exc: MedfedError
) -> Response:
    page = render(request, template, {**context, "error": exc.message}, status_code=exc.status_code)
    if isinstance(exc, RateLimited):
        page.headers["Retry-After"] = rate_limited_response(exc).headers["Retry-After"]
    return page


@router.get("/login/otp")
def otp_form(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    settings: SettingsDep,
    next: str = "/",
) -> Response:
    user = _pending(request, session, settings, "otp")
    return render(request, "login_otp.html", {"next": _safe_next(next), "who": user.username})


@router.post("/login/otp")
def otp_submit(
    request: Request,
    visitor: CheckedVisitor,
    session: SessionDep,
    settings: SettingsDep,
    otp: Annotated[str, Form(max_length=20)] = "",
    recovery_code: Annotated[str, Form(max_length=40)] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    user = _pending(request, session, settings, "otp")
    context: dict[str, object] = {"next": _safe_next(next), "who": user.username}

    def attempt() -> str:
        method = mfa.check_second_factor(
            session,
            user=user,
            settings=settings,
            otp=otp.strip() or None,
            recovery_code=recovery_code.strip() or None,
        )
        _token, plain = auth.login_token(session, user=user, days=1, method=method)
        return plain

    try:
        plain = guarded(request, user.username, attempt)
    except (Unauthorized, RateLimited) as exc:
        return _again(request, "login_otp.html", context, exc)
    session.commit()
    return _signed_in(redirect(_safe_next(next)), plain, settings)


@router.get("/login/enrol")
def enrol_form(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    settings: SettingsDep,
    next: str = "/",
) -> Response:
    user = _pending(request, session, settings, "enrol")
    enrolment = mfa.begin_enrolment(session, user=user, settings=settings)
    session.commit()
    context = {"next": _safe_next(next), "who": user.username, "enrolment": enrolment}
    return render(request, "login_enrol.html", context)


@router.post("/login/enrol")
def enrol_submit(
    request: Request,
    visitor: CheckedVisitor,
    session: SessionDep,
    settings: SettingsDep,
    otp: Annotated[str, Form(max_length=20)] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    user = _pending(request, session, settings, "enrol")

    def attempt() -> tuple[list[str], str]:
        codes = mfa.confirm_enrolment(session, user=user, settings=settings, code=otp.strip())
        _token, plain = auth.login_token(session, user=user, days=1, method="otp")
        return codes, plain

    try:
        codes, plain = guarded(request, user.username, attempt)
    except (Unauthorized, RateLimited) as exc:
        # the pending secret stays: the same QR code, try the next code
        context = {"next": _safe_next(next), "who": user.username, "retry": True}
        return _again(request, "login_enrol.html", context, exc)
    session.commit()
    page = render(request, "login_recovery.html", {"next": _safe_next(next), "codes": codes})
    return _signed_in(page, plain, settings)
