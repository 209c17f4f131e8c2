"""Typed FastAPI dependencies: ``SessionDep``, ``SettingsDep``, ``CurrentUser``, ``CurrentNode``
(and ``DetachedNode``, ``DetachedUser``: the principal in no session, for routes that
open their own).

Every route except health, login and the docs depends on one of the two principals.
User tokens cannot call node routes and node secrets cannot call user routes (403).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from medfed.common.errors import Forbidden, Unauthorized
from medfed.common.security import digest
from medfed.hub.config import HubSettings
from medfed.hub.db.models import ApiToken, Node, User
from medfed.hub.db.session import READ_ONLY
from medfed.hub.dispatch import Notifier
from medfed.hub.principals import PrincipalCache, detached_copy
from medfed.hub.services import auth
from medfed.hub.services.login_throttle import LoginThrottle

bearer_scheme = HTTPBearer(auto_error=False, description="mfu_ user token or mfn_ node secret")


async def get_settings(request: Request) -> HubSettings:
    settings: HubSettings = request.app.state.settings
    return settings


async def get_notifier(request: Request) -> Notifier:
    notifier: Notifier = request.app.state.notifier
    return notifier


async def get_session(request: Request) -> AsyncIterator[Session]:
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        if _holds_connection(session):  # a rollback talks to the database: not on the loop
            await run_in_threadpool(session.close)
        else:  # committed, or never connected: closing does no I/O
            session.close()


def _holds_connection(session: Session) -> bool:
    """Whether the session's transaction has a database connection. A kept principal
    attached to the session begins its transaction without one (``Session.add``); most
    routes then commit, and a request that read nothing closes on the loop. SQLAlchemy
    has no public accessor for this: ``_connections`` is its transaction's own map (an
    upgrade that renames it fails every request at once, in every test)."""
    transaction = session.get_transaction()
    return transaction is not None and bool(transaction._connections)


SettingsDep = Annotated[HubSettings, Depends(get_settings)]
NotifierDep = Annotated[Notifier, Depends(get_notifier)]
SessionDep = Annotated[Session, Depends(get_session)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def get_principal(
    request: Request, session: SessionDep, credentials: Credentials
) -> User | Node:
    """The bearer's user or node: from the app's principal cache, else the database.

    A hit costs no query and no worker thread (:mod:`medfed.hub.principals` says when
    entries end); a miss checks in a worker thread and keeps the principal."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token")
    cache: PrincipalCache = request.app.state.principals
    key = digest(credentials.credentials)
    principal = cache.lookup(session, key)
    if principal is not None:
        return principal
    return await run_in_threadpool(_check, session, cache, credentials.credentials, key)


def _check(session: Session, cache: PrincipalCache, bearer: str, key: str) -> User | Node:
    generation = cache.generation  # before the read: a change committed during it wins
    if not session.in_transaction():
        # the check only reads: on SQLite its transaction starts with a deferred BEGIN (a
        # snapshot beside the writer), not a turn in the write lock's queue; the route's
        # own transaction, after the commit below, begins as usual
        session.connection(execution_options={READ_ONLY: True})
    checked = auth.check_bearer(session, bearer=bearer)
    # End the read transaction now: on SQLite every transaction holds the write lock, and
    # a long poll must not hold it while it waits (attributes stay loaded after commit).
    session.commit()
    cache.keep(
        key, checked.principal, generation=generation, until=checked.until, refusal=checked.refusal
    )
    return checked.principal


Principal = Annotated[User | Node, Depends(get_principal)]


async def _detached_principal(request: Request, credentials: Credentials) -> User | Node:
    """The bearer's user or node as :func:`get_principal` finds it (the same refusals),
    but in no session. A cache hit is a rebuilt detached principal; a miss checks in a
    worker thread in a session of its own and keeps the principal."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token")
    cache: PrincipalCache = request.app.state.principals
    key = digest(credentials.credentials)
    principal = cache.lookup(None, key)
    if principal is None:
        principal = await run_in_threadpool(
            _check_alone, request, cache, credentials.credentials, key
        )
    return principal


async def get_detached_node(request: Request, credentials: Credentials) -> Node:
    """The bearer's node as :func:`get_current_node` finds it (the same refusals), but in
    no session: for the node routes whose work runs in sessions of their own (the poll
    and the answer, whose jobs run in write batches), so the request opens none."""
    principal = await _detached_principal(request, credentials)
    if not isinstance(principal, Node):
        raise Forbidden("user credentials cannot call node routes")
    return principal


async def get_detached_user(request: Request, credentials: Credentials) -> User:
    """The bearer's user as :func:`get_current_user` finds it (the same refusals), but in
    no session: for the user routes that read in sessions of their own (a task's wait),
    so the request opens none."""
    principal = await _detached_principal(request, credentials)
    if not isinstance(principal, User):
        raise Forbidden("node credentials cannot call user routes")
    return principal


def _check_alone(request: Request, cache: PrincipalCache, bearer: str, key: str) -> User | Node:
    with request.app.state.sessionmaker() as session:
        return detached_copy(_check(session, cache, bearer, key))


async def get_current_user(principal: Principal) -> User:
    if not isinstance(principal, User):
        raise Forbidden("node credentials cannot call user routes")
    return principal


async def get_current_node(principal: Principal) -> Node:
    if not isinstance(principal, Node):
        raise Forbidden("user credentials cannot call node routes")
    return principal


CurrentUser = Annotated[User, Depends(get_current_user)]
CurrentNode = Annotated[Node, Depends(get_current_node)]
DetachedNode = Annotated[Node, Depends(get_detached_node)]
DetachedUser = Annotated[User, Depends(get_detached_user)]


def throttled_login(
    request: Request,
    session: Session,
    username: str,
    password: str,
    *,
    days: int,
    otp: str | None = None,
    recovery_code: str | None = None,
) -> tuple[ApiToken, str]:
    """``auth.login`` behind the app's :class:`LoginThrottle` (API and web login alike).

    A wrong password or a wrong second factor counts as a failure; a right password whose
    second factor is still to come (``SecondFactorNeeded``) counts as neither.
    """
    throttle: LoginThrottle = request.app.state.login_throttle
    address = request.client.host if request.client else None
    throttle.check(username, address)
    try:
        result = auth.login(
            session,
            username=username,
            password=password,
            settings=request.app.state.settings,
            days=days,
            otp=otp,
            recovery_code=recovery_code,
        )
    except auth.SecondFactorNeeded:
        raise
    except Unauthorized:
        throttle.failed(username, address)
        raise
    throttle.succeeded(username)
    return result
