"""The hub's blob store: weights and updates as files named by their SHA-256.

Layout: ``DATA_DIR/blobs/ab/abcdef…`` (the first two hex digits as a folder). A blob is
written to ``DATA_DIR/blobs/tmp/`` while its hash is computed chunk by chunk (an upload is
never held in memory whole), then moved into place with ``os.replace`` — a reader sees a
whole blob or none, and writing the same content twice is harmless. Each blob also has
a row in ``fl_blobs`` saying what it is; nodes may fetch ``initial`` and ``global`` blobs
only (a node never downloads another node's update).

With several hub workers the data dir must be shared (one volume), as the SQLite file is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medfed.common.errors import BadRequest, Forbidden, MedfedError, NotFound
from medfed.common.resources import Role
from medfed.hub.config import HubSettings
from medfed.hub.db.models import User
from medfed.hub.db.models_fl import Blob
from medfed.hub.services.accounts import has_role

__all__ = [
    "NODE_READABLE",
    "BlobStore",
    "BlobWriter",
    "HubBlobAccess",
    "QuotaExceeded",
    "register",
    "store_for",
    "upload_allowance",
]

NODE_READABLE = frozenset({"initial", "global"})
_HASH_CHARS = frozenset("0123456789abcdef")


def _check_sha(sha256: str) -> str:
    if len(sha256) != 64 or not set(sha256) <= _HASH_CHARS:
        raise BadRequest(f"{sha256!r} is not a SHA-256 hex digest")
    return sha256


class BlobWriter:
    """One blob being written: feed chunks, then :meth:`finish` (or :meth:`abort`)."""

    def __init__(self, store: BlobStore, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        tmp = store.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp)
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise BadRequest(f"the blob is larger than the hub's limit of {self.max_bytes} bytes")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self, expected_sha256: str | None = None) -> tuple[str, int]:
        """Check the hash (when given) and move the blob into place."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = self._hash.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            self._path.unlink(missing_ok=True)
            raise BadRequest(
                f"the body hashes to {digest}, not the {expected_sha256} the sender announced"
            )
        final = self.store.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, final)
        return digest, self.size

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        _check_sha(sha256)
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def writer(self, max_bytes: int) -> BlobWriter:
        return BlobWriter(self, max_bytes)

    def write_bytes(self, data: bytes) -> str:
        writer = self.writer(max(len(data), 1))
        writer.write(data)
        return writer.finish()[0]

    def read(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} not found") from None


def store_for(settings: HubSettings) -> BlobStore:
    return BlobStore(settings.data_dir / "blobs")


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


def node_readable(session: Session, store: BlobStore, sha256: str) -> Path:
    """The path of a blob a node may fetch (initial or global weights)."""
    _check_sha(sha256)
    blob = session.get(Blob, sha256)
    if blob is None or not store.exists(sha256):
        raise NotFound(f"blob {sha256} not found")
    if blob.kind not in NODE_READABLE:
        raise Forbidden(f"blob {sha256[:12]}… is a {blob.kind} blob; nodes fetch weights only")
    return store.path(sha256)


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
