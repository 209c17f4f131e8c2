"""The hub's FastAPI application, made by :func:`create_app`.

On start the app migrates its database to the newest Alembic revision and starts two
background loops (asyncio tasks): every ``sweep_seconds`` expired leases are handed back
out (or their runs failed), and every ``checkpoint_seconds`` the audit log's new head is
signed as a checkpoint. Errors from services become JSON ``{"detail": message}``
with the error's status; request validation errors name the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from medfed._version import __version__
from medfed.common.errors import MedfedError, RateLimited
from medfed.common.timeutil import utcnow
from medfed.hub.api.routes import access as access_routes
from medfed.hub.api.routes import accounts, catalogue, learning, learning_node, node_api, tasks
from medfed.hub.api.routes import audit as audit_routes
from medfed.hub.api.routes import discovery as discovery_routes
from medfed.hub.api.routes import ledger as ledger_routes
from medfed.hub.api.routes import pid as pid_routes
from medfed.hub.config import SETTINGS_INFO, HubSettings
from medfed.hub.db.migrate import upgrade
from medfed.hub.db.session import make_engine, make_read_sessionmaker, make_sessionmaker
from medfed.hub.dispatch import Notifier, commit
from medfed.hub.services import ledger
from medfed.hub.services.runs import expire_leases
from medfed.hub.services.tasks import close_overdue_rounds
from medfed.hub.web import pages
from medfed.ledger.checkpoint import derive_key

log = logging.getLogger(__name__)


def _sweep_once(app: FastAPI) -> None:
    with app.state.sessionmaker() as session:
        expired = expire_leases(session, settings=app.state.settings)
        if close_overdue_rounds(session, settings=app.state.settings) or expired:
            commit(session, app.state.notifier)


def _checkpoint_once(app: FastAPI) -> None:
    with app.state.sessionmaker() as session:
        if ledger.make_checkpoint(session, key=app.state.ledger_key) is not None:
            commit(session, app.state.notifier)


async def _every(app: FastAPI, seconds: float, job: Callable[[FastAPI], None]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await run_in_threadpool(job, app)
        except Exception:  # keep going; a transient DB error must not stop the loop
            log.exception("background job %s failed", job.__name__)


def rate_limited_response(exc: RateLimited) -> JSONResponse:
    """429 with the reset time in the body (``resets_at``) and as ``Retry-After`` seconds."""
    body: dict[str, object] = {"detail": exc.message, "resets_at": None}
    headers: dict[str, str] = {}
    if exc.resets_at is not None:
        body["resets_at"] = exc.resets_at.isoformat()
        wait = (exc.resets_at - utcnow()).total_seconds()
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {error.get('msg')}" if loc else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def create_app(settings: HubSettings | None = None) -> FastAPI:
    settings = settings or HubSettings()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops = [
            asyncio.create_task(_every(app, settings.sweep_seconds, _sweep_once)),
            asyncio.create_task(_every(app, settings.checkpoint_seconds, _checkpoint_once)),
        ]
        try:
            yield
        finally:
            for loop in loops:
                loop.cancel()
            for loop in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await loop

    app = FastAPI(
        title="medfed hub",
        version=__version__,
        description="Catalogue, projects, federated tasks and their aggregation.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    # services that apply a hub limit (query budgets) read the settings from their session
    app.state.sessionmaker.configure(info={SETTINGS_INFO: settings})
    app.state.read_sessionmaker = make_read_sessionmaker(engine)
    app.state.notifier = Notifier()
    app.state.ledger_key = derive_key(settings.secret_key)

    @app.exception_handler(MedfedError)
    async def _medfed_error(_: Request, exc: MedfedError) -> JSONResponse:
        if isinstance(exc, RateLimited):
            return rate_limited_response(exc)
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(IntegrityError)
    async def _integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        # two concurrent creates of one name: the loser gets what a later request would
        return JSONResponse(
            {"detail": "conflicts with an existing record (a name or id is taken)"},
            status_code=409,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    routers = (
        accounts,
        catalogue,
        tasks,
        node_api,
        ledger_routes,
        learning,
        learning_node,
        access_routes,
        discovery_routes,
        pid_routes,
        audit_routes,
        pages,
    )
    for module in routers:
        app.include_router(module.router)
    pages.mount_static(app)
    return app
