"""Web sessions, CSRF, rendering and error pages shared by every page module.

How a browser session runs: the login form posts username and password; the hub makes an
API token through :func:`medfed.hub.services.auth.login` (the same service as
``POST /api/auth/login``) and keeps the plain token in an HttpOnly, SameSite=Lax cookie.
Every page reads the cookie and authenticates it with the same ``auth.authenticate`` the
API uses, so a revoked or expired token ends the session. Logout revokes the token.

CSRF: a signed-in session's form token is ``HMAC(secret_key, session token)``; it is
rendered into every POST form (and into htmx request headers) and checked on the server
before the handler runs. Before login (the login form itself) the token is a random value
kept in a second cookie and echoed in the form (double submit).

Pages are served by :class:`PageRoute`: a service error becomes an HTML page with the
error's message and status, a missing or expired session a redirect to the login page,
never a stack trace.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from medfed.common.errors import Forbidden, MedfedError, Unauthorized
from medfed.common.resources import Role
from medfed.common.security import digest
from medfed.hub.api.deps import SessionDep, SettingsDep
from medfed.hub.db.models import ApiToken, User
from medfed.hub.services import auth
from medfed.hub.services.accounts import has_role

SESSION_COOKIE = "medfed_session"
LOGIN_CSRF_COOKIE = "medfed_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class LoginNeeded(Unauthorized):
    """The page needs a signed-in user; :class:`PageRoute` answers with the login page."""


@dataclass
class Visitor:
    """Who is looking at a page: a user with a session token, or an anonymous visitor."""

    user: User | None
    token: str | None
    csrf: str
    new_login_csrf: bool = False

    def has(self, role: str) -> bool:
        return self.user is not None and has_role(self.user, Role(role))

    def require(self) -> User:
        if self.user is None:
            raise LoginNeeded("please sign in")
        return self.user


def session_csrf(secret_key: str, token: str) -> str:
    return hmac.new(secret_key.encode(), b"csrf:" + token.encode(), hashlib.sha256).hexdigest()


def get_visitor(request: Request, session: SessionDep, settings: SettingsDep) -> Visitor:
    token = request.cookies.get(SESSION_COOKIE)
    user: User | None = None
    if token:
        try:
            principal = auth.authenticate(session, bearer=token)
        except Unauthorized:
            principal = None
        user = principal if isinstance(principal, User) else None
    session.commit()  # end the read transaction (SQLite holds its lock for a transaction)
    if user is not None and token is not None:
        visitor = Visitor(user, token, session_csrf(settings.secret_key, token))
    else:
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
        visitor = Visitor(
            None, None, cookie or secrets.token_urlsafe(24), new_login_csrf=not cookie
        )
    request.state.visitor = visitor
    return visitor


VisitorDep = Annotated[Visitor, Depends(get_visitor)]


async def check_csrf(request: Request, visitor: VisitorDep) -> Visitor:
    """Refuse a POST whose form field (or htmx header) does not carry the session's token."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, visitor.csrf):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
    return visitor


CheckedVisitor = Annotated[Visitor, Depends(check_csrf)]


def token_id_of(session: SessionDep, plain: str) -> int | None:
    """The id of the API token whose plain value is ``plain`` (for logout)."""
    return session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest(plain)))


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render template ``name`` with the visitor in the context (and its CSRF cookie)."""
    visitor: Visitor | None = getattr(request.state, "visitor", None)
    if visitor is None:
        visitor = Visitor(None, None, secrets.token_urlsafe(24), new_login_csrf=True)
    values = {"visitor": visitor, "user": visitor.user, "csrf": visitor.csrf, **(context or {})}
    response = templates.TemplateResponse(request, name, values, status_code=status_code)
    if visitor.new_login_csrf:
        response.set_cookie(
            LOGIN_CSRF_COOKIE, visitor.csrf, httponly=True, samesite="lax", path="/"
        )
    return response


def redirect(url: str) -> RedirectResponse:
    """After a successful POST: see the result page (303 keeps the browser from re-posting)."""
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, message: str, status_code: int) -> HTMLResponse:
    return render(
        request, "error.html", {"message": message, "status": status_code}, status_code=status_code
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc)
        parts.append(f"{field}: {error.get('msg')}" if field else str(error.get("msg")))
    return "; ".join(parts) or "invalid form"


class PageRoute(APIRoute):
    """A route whose errors are pages: the message and status kept, never a stack trace."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handle(request)
            except LoginNeeded:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return redirect(f"/login?next={quote(target)}")
            except MedfedError as exc:
                return error_page(request, exc.message, exc.status_code)
            except RequestValidationError as exc:
                return error_page(request, _validation_message(exc), 422)
            except IntegrityError:
                return error_page(request, "conflicts with an existing record", 409)

        return page
