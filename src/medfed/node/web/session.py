"""Steward sign-in for the node's web app: one token in the node's data dir, a cookie.

How it runs: :func:`steward_token` reads ``DATA_DIR/web/steward.token`` or, on the first
start, writes a new random one there (mode 0600) and reports that it was new, so
``medfed node web`` prints it once. The login form posts the token; the app answers with
an HttpOnly, SameSite=Strict cookie holding ``HMAC(token, "session")`` — the token itself
never sits in the browser. Every page recomputes the HMAC from the file, so replacing the
file (a new token) ends every session. A POST form carries ``HMAC(token, "csrf")``
(:func:`check_csrf`), checked before the handler runs.

Page modules use :data:`StewardDep` (a signed-in steward, else a redirect to ``/login``),
:data:`CheckedSteward` (the same, for POST handlers, with the CSRF check), :func:`render`
and :func:`redirect`; :class:`PageRoute` turns a :class:`MedfedError` into an error page.
"""

from __future__ import annotations

import hashlib
import hmac
import os
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

from medfed.common.errors import Forbidden, MedfedError, Unauthorized
from medfed.node.config import NodeConfig

__all__ = [
    "CSRF_FIELD",
    "SESSION_COOKIE",
    "CheckedSteward",
    "PageRoute",
    "Steward",
    "StewardDep",
    "redirect",
    "render",
    "steward_token",
    "templates",
]

SESSION_COOKIE = "medfed_node_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class LoginNeeded(Unauthorized):
    """The page needs the steward; :class:`PageRoute` answers with the login page."""


def token_path(data_dir: Path) -> Path:
    return data_dir / "web" / "steward.token"


def steward_token(data_dir: Path) -> tuple[str, bool]:
    """The steward's login token and whether it was made just now (first start)."""
    path = token_path(data_dir)
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "mfs_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True


def _mac(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def session_value(token: str) -> str:
    return _mac(token, "session")


@dataclass(frozen=True)
class Steward:
    """Who looks at a page: the signed-in steward (``signed_in``) or a visitor before login."""

    signed_in: bool
    csrf: str
    config: NodeConfig


def config_of(request: Request) -> NodeConfig:
    config = request.app.state.config
    assert isinstance(config, NodeConfig)
    return config


def _visitor(request: Request) -> Steward:
    config = config_of(request)
    token, _ = steward_token(config.data_dir)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    signed_in = bool(cookie) and hmac.compare_digest(cookie, session_value(token))
    visitor = Steward(signed_in, _mac(token, "csrf"), config)
    request.state.visitor = visitor
    return visitor


def get_steward(request: Request) -> Steward:
    visitor = _visitor(request)
    if not visitor.signed_in:
        raise LoginNeeded("please sign in with the steward token")
    return visitor


StewardDep = Annotated[Steward, Depends(get_steward)]


async def check_csrf(request: Request, steward: StewardDep) -> Steward:
    """Refuse a POST whose form field (or header) does not carry the session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, steward.csrf):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
    return steward


CheckedSteward = Annotated[Steward, Depends(check_csrf)]


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render template ``name`` (templates of this folder) with the steward in the context."""
    visitor: Steward | None = getattr(request.state, "visitor", None)
    if visitor is None:
        visitor = _visitor(request)
    values = {"steward": visitor, "csrf": visitor.csrf, **(context or {})}
    return templates.TemplateResponse(request, name, values, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    """After a successful POST: see the result page (303 keeps the browser from re-posting)."""
    return RedirectResponse(url, status_code=303)


class PageRoute(APIRoute):
    """A route whose errors are pages: the message and status kept, never a stack trace."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handle(request)
            except LoginNeeded:
                return redirect(f"/login?next={quote(request.url.path)}")
            except MedfedError as exc:
                context = {"message": exc.message, "status": exc.status_code}
                return render(request, "error.html", context, status_code=exc.status_code)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                context = {"message": str(first.get("msg", "invalid form")), "status": 422}
                return render(request, "error.html", context, status_code=422)

        return page
