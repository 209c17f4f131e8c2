"""The hub's FastAPI application, made by :func:`create_app`.

On start the app migrates its database to the newest Alembic revision and starts two
background loops (asyncio tasks): every ``sweep_seconds`` expired leases are handed back
out (or their runs failed), runs past their deadline are failed, and every
``checkpoint_seconds`` the audit log's new head is signed as a checkpoint. On PostgreSQL
it also starts a :class:`~medfed.hub.wakeups.WakeListener` thread (``LISTEN medfed_wake``)
that wakes this process's long polls when another hub process commits. Errors become
JSON ``{"detail": message, "errors": [...]}`` (:mod:`medfed.hub.api.errors`; a database
outage is a 503 with ``Retry-After``), and :class:`~medfed.hub.api.limits.EdgeMiddleware`
applies body limits and input checks before any route runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from medfed._version import __version__
from medfed.hub.api import errors
from medfed.hub.api.errors import ERROR_RESPONSES
from medfed.hub.api.limits import EdgeMiddleware
from medfed.hub.api.routes import access as access_routes
from medfed.hub.api.routes import accounts, catalogue, learning, learning_node, node_api, tasks
from medfed.hub.api.routes import audit as audit_routes
from medfed.hub.api.routes import cohorts as cohort_routes
from medfed.hub.api.routes import discovery as discovery_routes
from medfed.hub.api.routes import ledger as ledger_routes
from medfed.hub.api.routes import mfa as mfa_routes
from medfed.hub.api.routes import oidc as oidc_routes
from medfed.hub.api.routes import passport as passport_routes
from medfed.hub.api.routes import pid as pid_routes
from medfed.hub.api.routes import validation as validation_routes
from medfed.hub.config import SETTINGS_INFO, HubSettings
from medfed.hub.db.migrate import upgrade
from medfed.hub.db.session import make_engine, make_read_sessionmaker, make_sessionmaker
from medfed.hub.dispatch import Notifier, commit
from medfed.hub.handoff import MOST_ENDS, Handoffs, Server
from medfed.hub.hardening import secure_storage
from medfed.hub.principals import CACHE_INFO, PrincipalCache
from medfed.hub.services import ledger
from medfed.hub.services.login_throttle import LoginThrottle
from medfed.hub.services.runs import expire_leases, fail_overdue_runs
from medfed.hub.services.tasks import close_overdue_rounds
from medfed.hub.web import pages
from medfed.hub.web.headers import SecurityHeaders
from medfed.ledger.checkpoint import derive_key

log = logging.getLogger(__name__)


def _sweep_once(app: FastAPI) -> None:
    with app.state.sessionmaker() as session:
        expired = expire_leases(session, settings=app.state.settings)
        expired += fail_overdue_runs(session, settings=app.state.settings)
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


def create_app(settings: HubSettings | None = None) -> FastAPI:
    settings = settings or HubSettings()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url, busy_timeout=settings.sqlite_busy_seconds)
    upgrade(engine)
    settings.warn_of_dev_key()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops = [
            asyncio.create_task(_every(app, settings.sweep_seconds, _sweep_once)),
            asyncio.create_task(_every(app, settings.checkpoint_seconds, _checkpoint_once)),
        ]
        listener = None
        if engine.dialect.name == "postgresql":  # wake-ups from the other hub processes
            from medfed.hub.wakeups import WakeListener, conninfo_of

            listener = WakeListener(conninfo=conninfo_of(engine), notifier=app.state.notifier)
            listener.start()
        app.state.wake_listener = listener
        try:
            yield
        finally:
            if listener is not None:
                await run_in_threadpool(listener.stop)
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
    settings.attach_engine(engine)  # the database blob store shares the app's pool
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.read_sessionmaker = make_read_sessionmaker(engine)
    app.state.notifier = Notifier()
    # what a commit serves the long polls it wakes in this process (medfed.hub.handoff)
    app.state.handoffs = Handoffs(
        {
            "node": Server(partial(node_api.claim_for, settings, app.state.notifier), most=1),
            "round": Server(tasks.end_view, most=MOST_ENDS, total=MOST_ENDS),
        }
    )
    app.state.principals = PrincipalCache(
        settings.principal_cache_seconds, origin=app.state.notifier.origin
    )
    # services that apply a hub limit (query budgets) read the settings from their session;
    # a change of credentials tells the other hub processes under this app's origin
    app.state.sessionmaker.configure(
        info={SETTINGS_INFO: settings, CACHE_INFO: app.state.principals}
    )
    app.state.ledger_key = derive_key(settings.secret_key)
    secure_storage(settings, app.state.sessionmaker)

    app.state.login_throttle = LoginThrottle(
        max_failures=settings.login_max_failures, window_seconds=settings.login_window_seconds
    )
    errors.install(app)
    app.add_middleware(EdgeMiddleware, settings=settings, routes=app.router.routes)

    routers = (
        # the nodes' polls, claims and answers are most of the requests, then the
        # researchers' task submissions and waits: matched first (routes are tried in
        # order; none of these three routers' patterns matches another router's path, e.g.
        # the ledger's /api/node/ledger/…: only /api/tasks… paths match tasks')
        node_api,
        learning_node,
        tasks,
        accounts,
        catalogue,
        ledger_routes,
        learning,
        mfa_routes,
        passport_routes,  # before access: its POST …/{decision} would take …/visas
        access_routes,
        discovery_routes,
        pid_routes,
        audit_routes,
        oidc_routes,
        validation_routes,
        cohort_routes,
        pages,
    )
    for module in routers:
        app.include_router(module.router, responses=ERROR_RESPONSES)
    pages.mount_static(app)
    app.add_middleware(SecurityHeaders)
    return app
