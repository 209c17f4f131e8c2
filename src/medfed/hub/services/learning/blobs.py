"""The hub's blobs: where their bytes live, and who may store and fetch which.

Bytes go through one :class:`~medfed.hub.services.learning.blob_store.BlobStore`, picked by
:func:`store_for` from ``HubSettings.blob_backend``: chunks in the PostgreSQL database
(``blob_database``; the default on PostgreSQL, so every hub process shares them) or files
under ``DATA_DIR/blobs`` (``blob_files``; the default on SQLite). Either way an upload is
hashed chunk by chunk and never held whole, a reader sees a whole blob or none, and
writing the same content twice is harmless. Each blob also has a row in ``fl_blobs``
saying what it is (weights, updates, run outputs, ONNX models, ethics approvals); nodes
may fetch ``initial`` and ``global`` blobs only (a node never downloads another node's
update, nor anything else).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medfed.common.errors import Forbidden, MedfedError, NotFound
from medfed.common.resources import Role
from medfed.hub.config import HubSettings
from medfed.hub.db.models import User
from medfed.hub.db.models_fl import Blob
from medfed.hub.services.accounts import has_role
from medfed.hub.services.learning.blob_database import DatabaseBlobStore
from medfed.hub.services.learning.blob_files import FileBlobStore
from medfed.hub.services.learning.blob_store import BlobStore, BlobWriter, check_sha

__all__ = [
    "NODE_READABLE",
    "BlobStore",
    "BlobWriter",
    "HubBlobAccess",
    "QuotaExceeded",
    "register",
    "require_node_readable",
    "store_for",
    "upload_allowance",
]

NODE_READABLE = frozenset({"initial", "global"})


def store_for(settings: HubSettings) -> BlobStore:
    """The hub's blob store: the database's (``blob_store = "database"``) or files."""
    if settings.blob_backend == "database":
        return DatabaseBlobStore(settings.engine())
    return FileBlobStore(settings.data_dir / "blobs")


def register(
    session: Session,
    *,
    sha256: str,
    size: int,
    kind: str,
    task_id: int | None = None,
    node_id: int | None = None,
    user_id: int | None = None,
) -> Blob:
    """The blob's row (the first registration of a content wins, with one exception).

    The hub writing weights (``global``) whose bytes equal an update already stored
    (one node, all-zero initial weights: the new model *is* the update) makes the blob
    node-readable: the hub published those bytes as the model, so handing them to nodes
    reveals nothing the model does not. An update equal to published weights stays
    readable. Nodes still never fetch an update that is not also weights.
    """
    blob = session.get(Blob, sha256)
    if blob is None:
        blob = Blob(
            sha256=sha256, size=size, kind=kind, task_id=task_id, node_id=node_id, user_id=user_id
        )
        session.add(blob)
        session.flush()
    elif kind in NODE_READABLE and blob.kind not in NODE_READABLE:
        blob.kind = kind
        session.flush()
    return blob


def upload_allowance(session: Session, *, user: User, settings: HubSettings) -> int:
    """How many bytes ``user`` may still upload to ``PUT /api/blobs`` (one request's cap).

    Only researchers (and the hub administrator) upload weights; nodes upload updates on
    their own route. Each user's first-stored blobs count against ``blob_quota_bytes``.
    """
    if not has_role(user, Role.researcher):
        raise Forbidden("only researchers upload weights (PUT /api/blobs)")
    used = session.scalar(
        select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.user_id == user.id)
    )
    left = settings.blob_quota_bytes - int(used or 0)
    if left <= 0:
        raise QuotaExceeded(
            f"your blob quota of {settings.blob_quota_bytes} bytes is used up; "
            "ask the hub administrator to raise blob_quota_bytes"
        )
    return min(left, settings.max_blob_bytes)


class QuotaExceeded(MedfedError):
    """An upload beyond the uploader's blob quota (HTTP 413)."""

    status_code = 413


def require_node_readable(session: Session, store: BlobStore, sha256: str) -> None:
    """Refuse unless a node may fetch the blob (stored initial or global weights)."""
    check_sha(sha256)
    blob = session.get(Blob, sha256)
    if blob is None or not store.exists(sha256):
        raise NotFound(f"blob {sha256} not found")
    if blob.kind not in NODE_READABLE:
        raise Forbidden(f"blob {sha256[:12]}… is a {blob.kind} blob; nodes fetch weights only")


class HubBlobAccess:
    """:class:`medfed.algorithms.base.HubBlobs` over the store, registering what it writes."""

    def __init__(self, store: BlobStore, session: Session, task_id: int) -> None:
        self.store = store
        self.session = session
        self.task_id = task_id

    def read(self, sha256: str) -> bytes:
        return self.store.read(sha256)

    def write(self, data: bytes, *, kind: str) -> str:
        digest = self.store.write_bytes(data)
        register(self.session, sha256=digest, size=len(data), kind=kind, task_id=self.task_id)
        return digest


def check_upload(session: Session, *, node_id: int, run_id: int, lease_id: str) -> tuple[int, str]:
    """The task id and blob kind of an upload for ``run_id``; refuses a stale or foreign lease."""
    from medfed.common.errors import Conflict
    from medfed.hub.db.models import Run, Task

    run = session.get(Run, run_id)
    if run is None or run.node_id != node_id:
        raise NotFound(f"run {run_id} not found")
    if run.status != "claimed" or run.lease_id != lease_id:
        raise Conflict(f"run {run_id}: stale lease (the run was handed out again or ended)")
    task = session.get(Task, run.task_id)
    assert task is not None
    kind = "masked" if (task.state or {}).get("phase") == "masked" else "update"
    return task.id, kind
