"""The node's steward web app: ``create_app(config)``, served on 127.0.0.1 only.

The node makes outbound connections only; this app is for the steward at the hospital,
bound to the loopback address by ``medfed node web`` (uvicorn, one process, beside the
agent). It reads and writes the node's own files (``DATA_DIR``: plan approvals, pending
requests, the run log) and never talks to the hub. Sign-in is by the steward token kept
in ``DATA_DIR/web/steward.token`` (:mod:`medfed.node.web.session`).

Each page module is a router included here (``include_router``): plan requests
(:mod:`medfed.node.web.plans_pages`) and the airlock.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import Response

from medfed.node.config import NodeConfig
from medfed.node.web import airlock_pages, plans_pages
from medfed.node.web.session import (
    SESSION_COOKIE,
    PageRoute,
    StewardDep,
    redirect,
    render,
    session_value,
    steward_token,
)

__all__ = ["create_app"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _safe_next(target: str) -> str:
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if local else "/"


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": _safe_next(next)})


@router.post("/login")
def login(
    request: Request,
    token: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    expected, _ = steward_token(request.app.state.config.data_dir)
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        context = {"error": "wrong steward token", "next": _safe_next(next)}
        return render(request, "login.html", context, status_code=401)
    response = redirect(_safe_next(next))
    response.set_cookie(
        SESSION_COOKIE, session_value(expected), httponly=True, samesite="strict", path="/"
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def index(request: Request, steward: StewardDep) -> Response:
    return render(request, "index.html", {"node_dir": str(steward.config.data_dir)})


def create_app(config: NodeConfig) -> FastAPI:
    """The steward app over ``config``'s data dir (the token is made on first use)."""
    steward_token(config.data_dir)
    app = FastAPI(title="medfed node (steward)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    app.include_router(router)
    app.include_router(plans_pages.router)
    app.include_router(airlock_pages.router)
    return app
