"""Routes for nodes (authenticated by their secret): identity, datasets, runs, heartbeat.

``GET /api/node/runs/next`` is a long poll: it subscribes to ``node:{id}``, tries to
claim, and if nothing is pending waits until a task for this node is committed (woken at
once in this process) or ``recheck_seconds`` pass (another hub worker may have created
it), until ``wait`` seconds are over; then 204.
"""

from __future__ import annotations

import hashlib
import time

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from medfed.common.errors import BadRequest
from medfed.common.resources import (
    AirlockEvent,
    DatasetPublic,
    DatasetRegister,
    Heartbeat,
    HeartbeatAck,
    NodeIdentity,
    RunAssignment,
    RunOutcome,
)
from medfed.hub.api.deps import CurrentNode, NotifierDep, SessionDep, SettingsDep
from medfed.hub.api.limits import json_problem
from medfed.hub.db.models import Node
from medfed.hub.dispatch import commit
from medfed.hub.services import datasets, nodes, runs
from medfed.hub.services.catalogue.metadata import public_of

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
    return public_of(dataset)


@router.post("/runs/{run_id}/airlock")
def airlock_event(
    run_id: int, body: AirlockEvent, node: CurrentNode, session: SessionDep, notifier: NotifierDep
) -> dict[str, str]:
    """The node's airlock held, released or refused a run's outputs (a ledger entry)."""
    runs.airlock_event(
        session, node=node, run_id=run_id, event=body.event, outputs_sha256=body.outputs_sha256
    )
    commit(session, notifier)
    return {"event": body.event}


@router.post("/heartbeat")
def heartbeat(
    body: Heartbeat,
    node: CurrentNode,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> HeartbeatAck:
    nodes.touch(session, node=node)
    extended, lost = runs.extend_leases(session, node=node, run_ids=body.run_ids, settings=settings)
    commit(session, notifier)
    return HeartbeatAck(node_id=node.id, extended=extended, lost=lost)


def _claim(request: Request, node_id: int) -> RunAssignment | None:
    app = request.app
    with app.state.sessionmaker() as session:
        node = session.get(Node, node_id)
        assert node is not None
        nodes.touch(session, node=node)
        assignment = runs.claim_next(session, node=node, settings=app.state.settings)
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


def _post(request: Request, node_id: int, run_id: int, outcome: RunOutcome, digest: str) -> str:
    app = request.app
    with app.state.sessionmaker() as session:
        node = session.get(Node, node_id)
        assert node is not None
        run = runs.post_outcome(
            session,
            node=node,
            run_id=run_id,
            outcome=outcome,
            settings=app.state.settings,
            body_sha256=digest,
        )
        commit(session, app.state.notifier)
        return run.status


@router.post(
    "/runs/{run_id}/outcome",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RunOutcome.model_json_schema()}},
        }
    },
)
async def post_outcome(run_id: int, request: Request, node: CurrentNode) -> dict[str, str]:
    """Accept the node's answer; the ledger records the SHA-256 of exactly these bytes."""
    raw = await request.body()  # after authentication; the edge caps its size
    if (problem := json_problem(raw, ids=False)) is not None:
        raise BadRequest(str(problem))
    try:
        outcome = RunOutcome.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"{where}: {first['msg']}") from None
    digest = hashlib.sha256(raw).hexdigest()
    status_ = await run_in_threadpool(_post, request, node.id, run_id, outcome, digest)
    return {"status": status_}
