"""Routes for nodes (authenticated by their secret): identity, datasets, runs, heartbeat.

``GET /api/node/runs/next`` is a long poll: it subscribes to ``node:{id}``, tries to
claim, and if nothing is pending waits until a task for this node is committed (woken at
once in this process) or ``recheck_seconds`` pass (another hub worker may have created
it), until ``wait`` seconds are over; then 204.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from medfed.common.resources import (
    DatasetPublic,
    DatasetRegister,
    Heartbeat,
    HeartbeatAck,
    NodeIdentity,
    RunAssignment,
    RunOutcome,
)
from medfed.hub.api.deps import CurrentNode, NotifierDep, SessionDep, SettingsDep
from medfed.hub.api.routes.catalogue import dataset_public
from medfed.hub.db.models import Node
from medfed.hub.dispatch import commit
from medfed.hub.services import datasets, nodes, tasks

router = APIRouter(prefix="/api/node", tags=["node"])


@router.get("/me")
def me(node: CurrentNode, session: SessionDep, notifier: NotifierDep) -> NodeIdentity:
    nodes.touch(session, node=node)
    commit(session, notifier)
    return NodeIdentity(id=node.id, name=node.name, organization_id=node.organization_id)


@router.post("/datasets")
def register_dataset(
    body: DatasetRegister, node: CurrentNode, session: SessionDep, notifier: NotifierDep
) -> DatasetPublic:
    dataset = datasets.register(session, node=node, data=body)
    commit(session, notifier)
    return dataset_public(dataset)


@router.post("/heartbeat")
def heartbeat(
    body: Heartbeat,
    node: CurrentNode,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> HeartbeatAck:
    nodes.touch(session, node=node)
    extended, lost = tasks.extend_leases(
        session, node=node, run_ids=body.run_ids, settings=settings
    )
    commit(session, notifier)
    return HeartbeatAck(node_id=node.id, extended=extended, lost=lost)


def _claim(request: Request, node_id: int) -> RunAssignment | None:
    app = request.app
    with app.state.sessionmaker() as session:
        node = session.get(Node, node_id)
        assert node is not None
        nodes.touch(session, node=node)
        assignment = tasks.claim_next(session, node=node, settings=app.state.settings)
        commit(session, app.state.notifier)
        return assignment


@router.get(
    "/runs/next",
    response_model=RunAssignment,
    responses={204: {"description": "nothing to do within the wait"}},
)
async def next_run(
    request: Request,
    node: CurrentNode,
    notifier: NotifierDep,
    settings: SettingsDep,
    wait: float = Query(default=20.0, ge=0, le=120),
) -> RunAssignment | Response:
    deadline = time.monotonic() + min(wait, settings.long_poll_seconds)
    while True:
        subscription = notifier.subscribe(f"node:{node.id}")
        try:
            assignment = await run_in_threadpool(_claim, request, node.id)
            if assignment is not None:
                return assignment
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Response(status_code=status.HTTP_204_NO_CONTENT)
            await subscription.wait(min(remaining, settings.recheck_seconds))
        finally:
            subscription.close()


@router.post("/runs/{run_id}/outcome")
def post_outcome(
    run_id: int,
    body: RunOutcome,
    node: CurrentNode,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> dict[str, str]:
    run = tasks.post_outcome(session, node=node, run_id=run_id, outcome=body, settings=settings)
    commit(session, notifier)
    return {"status": run.status}
