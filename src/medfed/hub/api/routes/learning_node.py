"""Node routes of federated learning: plan sources, weights download, update upload.

``GET /api/node/blobs/{sha}`` streams a blob (initial or global weights only).
``PUT /api/node/runs/{run_id}/blob`` streams the request body into the blob store while
hashing it (``X-Content-SHA256`` must match; ``X-Lease-Id`` must be the run's current
lease; at most ``max_blob_bytes``); it becomes readable whole once the hash checks — an
upload is never held in memory whole.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from medfed.hub.api.blob_download import blob_response
from medfed.hub.api.deps import CurrentNode, SessionDep, SettingsDep
from medfed.hub.api.limits import stream_to_store
from medfed.hub.services.learning import blobs, plans

router = APIRouter(prefix="/api/node", tags=["node"])


@router.get("/plans")
def list_plans(node: CurrentNode, session: SessionDep) -> list[dict[str, Any]]:
    return [
        {"hash": p.hash, "name": p.name, "created_at": p.created_at.isoformat()}
        for p in plans.list_plans(session)
    ]


@router.get("/plans/{plan_hash}")
def get_plan(plan_hash: str, node: CurrentNode, session: SessionDep) -> dict[str, Any]:
    plan = plans.get_plan(session, plan_hash_=plan_hash)
    return {"hash": plan.hash, "name": plan.name, "source": plan.source}


@router.get("/blobs/{sha256}", response_class=StreamingResponse)
def get_blob(
    sha256: str, node: CurrentNode, session: SessionDep, settings: SettingsDep
) -> StreamingResponse:
    store = blobs.store_for(settings)
    blobs.require_node_readable(session, store, sha256)
    return blob_response(store, sha256)


def _check(request: Request, node_id: int, run_id: int, lease_id: str) -> tuple[int, str]:
    with request.app.state.sessionmaker() as session:
        return blobs.check_upload(session, node_id=node_id, run_id=run_id, lease_id=lease_id)


def _register(request: Request, node_id: int, task_id: int, kind: str, sha: str, size: int) -> None:
    with request.app.state.sessionmaker() as session:
        blobs.register(session, sha256=sha, size=size, kind=kind, task_id=task_id, node_id=node_id)
        session.commit()


@router.put("/runs/{run_id}/blob")
async def put_run_blob(
    run_id: int,
    request: Request,
    node: CurrentNode,
    x_lease_id: str = Header(),
    x_content_sha256: str = Header(),
) -> dict[str, Any]:
    """Store the body (an update, or a masked update) for the node's claimed run."""
    settings = request.app.state.settings
    node_id = node.id
    task_id, kind = await run_in_threadpool(_check, request, node_id, run_id, x_lease_id)
    sha, size = await stream_to_store(request, settings.max_blob_bytes, x_content_sha256)
    await run_in_threadpool(_register, request, node_id, task_id, kind, sha, size)
    return {"sha256": sha, "size": size}
