"""Routes for Beacon-style count discovery (``medfed.hub.services.access.discovery``).

``POST /api/discovery/count`` checks the query and the user's budget, starts the count at
the nodes and, with ``wait`` > 0, waits (long poll on the task) until every node answered.
``GET /api/discovery/queries/{id}`` reads the answer, with the same optional wait.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from medfed.common.access_resources import DiscoveryRequest, DiscoveryResult
from medfed.hub.api.deps import CurrentUser
from medfed.hub.db.models import User
from medfed.hub.dispatch import commit
from medfed.hub.services.access import discovery

router = APIRouter(prefix="/api/discovery", tags=["discovery"])


def _read(request: Request, query_id: int, user: User) -> DiscoveryResult:
    app = request.app
    # read-only: on SQLite a snapshot beside the writers, not a turn in their queue
    with app.state.read_sessionmaker() as session:
        query = discovery.get_query(session, query_id=query_id, user=user)
        return discovery.query_result(session, query=query, user=user, settings=app.state.settings)


async def _wait(
    request: Request, query_id: int, task_id: int, user: User, wait: float
) -> DiscoveryResult:
    notifier = request.app.state.notifier
    settings = request.app.state.settings
    deadline = time.monotonic() + wait
    while True:
        # only the end answers: woken when a round closes, not by each answer
        subscription = notifier.subscribe(f"round:{task_id}")
        try:
            result = await run_in_threadpool(_read, request, query_id, user)
            remaining = deadline - time.monotonic()
            if result.status != "running" or remaining <= 0:
                return result
            await subscription.wait(min(remaining, settings.recheck_seconds))
        finally:
            subscription.close()


@router.post("/count", status_code=status.HTTP_201_CREATED)
async def count(
    body: DiscoveryRequest,
    request: Request,
    user: CurrentUser,
    wait: float = Query(default=0.0, ge=0, le=120),
) -> DiscoveryResult:
    def start() -> tuple[int, int]:
        app = request.app
        with app.state.sessionmaker() as session:
            query = discovery.count_query(
                session, user=user, request=body, settings=app.state.settings
            )
            ids = (query.id, int(query.task_id or 0))
            commit(session, app.state.notifier)
            return ids

    query_id, task_id = await run_in_threadpool(start)
    return await _wait(request, query_id, task_id, user, wait)


def _task_of(request: Request, query_id: int, user: User) -> int:
    with request.app.state.read_sessionmaker() as session:
        query = discovery.get_query(session, query_id=query_id, user=user)
        return int(query.task_id or 0)


@router.get("/queries/{query_id}")
async def get_query(
    query_id: int,
    request: Request,
    user: CurrentUser,
    wait: float = Query(default=0.0, ge=0, le=120),
) -> DiscoveryResult:
    # database work in the thread pool only: a waiting writer never stalls the event loop
    task_id = await run_in_threadpool(_task_of, request, query_id, user)
    return await _wait(request, query_id, task_id, user, wait)
