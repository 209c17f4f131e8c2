"""The hub's web pages: one router made of the page modules, and the static files.

``create_app`` includes :data:`router` beside the API routers and calls
:func:`mount_static`. Pages are server-rendered Jinja2 templates (htmx, vendored under
``static/``, swaps small parts where it helps; there is no JavaScript build step). Each
page module calls the same services as the JSON API; none keeps a second copy of the
logic. This module holds sign-in and sign-out (see :mod:`medfed.hub.web.session`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from medfed.common.errors import Forbidden, RateLimited, Unauthorized
from medfed.hub.api.deps import SessionDep, SettingsDep, throttled_login
from medfed.hub.api.errors import rate_limited_response
from medfed.hub.services import auth
from medfed.hub.web import (
    access_pages,
    admin_pages,
    audit_pages,
    catalogue_pages,
    cohort_pages,
    mfa_pages,
    project_pages,
    task_pages,
    validation_pages,
)
from medfed.hub.web.session import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    CheckedVisitor,
    PageRoute,
    VisitorDep,
    redirect,
    render,
    token_id_of,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

STATIC_DIR = Path(__file__).parent / "static"


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _safe_next(target: str) -> str:
    """Only a local path (never another site) after login."""
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if local else "/"


@router.get("/login")
def login_form(request: Request, visitor: VisitorDep, next: str = "/") -> Response:
    return render(request, "login.html", {"next": _safe_next(next)})


@router.post("/login")
def login(
    request: Request,
    visitor: CheckedVisitor,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        _token, plain = throttled_login(request, session, username, password, days=1)
    except auth.SecondFactorNeeded as exc:
        return mfa_pages.second_step(
            settings, user_id=exc.user_id, enrol=exc.enrol, next_url=_safe_next(next)
        )
    except (Unauthorized, RateLimited, Forbidden) as exc:
        context = {"error": exc.message, "username": username, "next": _safe_next(next)}
        page = render(request, "login.html", context, status_code=exc.status_code)
        if isinstance(exc, RateLimited):
            page.headers["Retry-After"] = rate_limited_response(exc).headers["Retry-After"]
        return page
    session.commit()
    response = redirect(_safe_next(next))
    response.set_cookie(
        SESSION_COOKIE,
        plain,
        max_age=24 * 3600,
        httponly=True,
        samesite="lax",
        secure=not settings.dev_mode,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(visitor: CheckedVisitor, session: SessionDep) -> Response:
    user = visitor.user
    if user is not None and visitor.token is not None:
        token_id = token_id_of(session, visitor.token)
        if token_id is not None:
            auth.revoke_token(session, user=user, token_id=token_id)
            session.commit()
    response = redirect("/")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


for _module in (
    catalogue_pages,
    access_pages,
    project_pages,
    task_pages,
    cohort_pages,
    admin_pages,
    audit_pages,
    mfa_pages,
    validation_pages,
):
    router.include_router(_module.router)
