"""Blobs as chunks in the hub's PostgreSQL database (``blob_store = "database"``).

Every hub process on one PostgreSQL reads and writes the same blobs, so no hub keeps
state on a local disk. Tables ``blob_contents`` (one row per content: its SHA-256, size,
chunk count) and ``blob_chunks`` (its bytes in 1 MiB ``bytea`` rows) — plain rows, so
``pg_dump``, replication and backups carry them with everything else (large objects
would need ``lo_unlink`` bookkeeping and a separate dump flag).

How it runs:

- A streamed upload (:meth:`DatabaseBlobStore.writer`) hashes each chunk as it passes and
  buffers at most 1 MiB; each full chunk is inserted in its own short transaction under a
  ``blob_contents`` row whose ``sha256`` is still NULL, so no reader can find it and no
  connection or transaction is held between chunks (a slow upload pins nothing).
- :meth:`~medfed.hub.services.learning.blob_store.BlobWriter.finish` writes the last
  chunk and sets ``sha256`` in one transaction: from that commit on the whole blob is
  readable, before it nothing is. If that content is already stored (or another process
  stores it at the same moment: the unique ``sha256`` refuses the second), this copy is
  deleted and the first one stays — writing the same content twice is harmless.
- An aborted upload deletes its rows; one cut off by a crash is deleted by the next
  writer of any process once it is a day old (at most one such sweep an hour).
- :meth:`~DatabaseBlobStore.chunks` streams a download one chunk per short query;
  :meth:`~DatabaseBlobStore.write_bytes` (bytes already in memory: run outputs, global
  weights) stores a content in one transaction.

The store uses the app's engine (``HubSettings.engine``), its own short connections
beside the caller's session: a blob is committed before the row that refers to it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from medfed.common.errors import NotFound
from medfed.common.timeutil import utcnow
from medfed.hub.db.models_fl import BlobChunk, BlobContent
from medfed.hub.services.learning.blob_store import BlobStore, BlobWriter, check_sha

__all__ = ["ABANDONED_AFTER", "DatabaseBlobStore"]

log = logging.getLogger(__name__)

#: an upload whose content is still unnamed this long after it began is deleted
ABANDONED_AFTER = timedelta(days=1)
_SWEEP_EVERY_S = 3600.0
_last_sweep: dict[str, float] = {}


class _DatabaseWriter(BlobWriter):
    def __init__(self, store: DatabaseBlobStore, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self._store = store
        self._buffer = bytearray()
        self._content_id: int | None = None  # committed, still unnamed
        self._seq = 0

    def _put(self, chunk: bytes) -> None:
        self._buffer += chunk
        size = self._store.chunk_bytes
        while len(self._buffer) >= size:
            with self._store.engine.begin() as conn:
                self._content_id = self._add_chunk(conn, bytes(self._buffer[:size]))
            del self._buffer[:size]

    def _add_chunk(self, conn: Connection, data: bytes) -> int:
        content_id = self._content_id
        if content_id is None:
            content_id = conn.scalar(
                insert(BlobContent)
                .values(size=0, chunks=0, created_at=utcnow())
                .returning(BlobContent.id)
            )
            assert content_id is not None
        conn.execute(insert(BlobChunk).values(content_id=content_id, seq=self._seq, data=data))
        self._seq += 1
        return content_id

    def _publish(self, digest: str) -> None:
        if self._store.exists(digest):
            self.abort()
            return
        try:
            with self._store.engine.begin() as conn:
                content_id = self._add_chunk(conn, bytes(self._buffer))
                conn.execute(
                    update(BlobContent)
                    .where(BlobContent.id == content_id)
                    .values(sha256=digest, size=self.size, chunks=self._seq)
                )
        except IntegrityError:  # another process stored the same content just now
            self.abort()
            return
        self._buffer.clear()
        self._content_id = None

    def abort(self) -> None:
        self._buffer.clear()
        content_id, self._content_id = self._content_id, None
        if content_id is None:
            return
        try:
            with self._store.engine.begin() as conn:
                _delete_contents(conn, [content_id])
        except SQLAlchemyError as exc:  # the sweep deletes it later
            log.warning("blob store: could not delete an aborted upload: %s", exc)


def _delete_contents(conn: Connection, ids: list[int]) -> None:
    conn.execute(delete(BlobChunk).where(BlobChunk.content_id.in_(ids)))
    conn.execute(delete(BlobContent).where(BlobContent.id.in_(ids)))


class DatabaseBlobStore(BlobStore):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _find(self, sha256: str) -> tuple[int, int]:
        """(content id, chunk count) of a stored blob."""
        check_sha(sha256)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(BlobContent.id, BlobContent.chunks).where(BlobContent.sha256 == sha256)
            ).first()
        if row is None:
            raise NotFound(f"blob {sha256} not found")
        return int(row[0]), int(row[1])

    def exists(self, sha256: str) -> bool:
        check_sha(sha256)
        with self.engine.connect() as conn:
            return (
                conn.scalar(select(BlobContent.id).where(BlobContent.sha256 == sha256)) is not None
            )

    def size(self, sha256: str) -> int:
        check_sha(sha256)
        with self.engine.connect() as conn:
            size = conn.scalar(select(BlobContent.size).where(BlobContent.sha256 == sha256))
        if size is None:
            raise NotFound(f"blob {sha256} not found")
        return int(size)

    def writer(self, max_bytes: int) -> BlobWriter:
        self._sweep_abandoned()
        return _DatabaseWriter(self, max_bytes)

    def chunks(self, sha256: str) -> Iterator[bytes]:
        content_id, count = self._find(sha256)  # NotFound here, before the first byte
        return self._stream(content_id, count)

    def _stream(self, content_id: int, count: int) -> Iterator[bytes]:
        for seq in range(count):
            with self.engine.connect() as conn:
                data = conn.scalar(
                    select(BlobChunk.data).where(
                        BlobChunk.content_id == content_id, BlobChunk.seq == seq
                    )
                )
            assert data is not None, f"blob content {content_id} lacks chunk {seq}"
            yield bytes(data)

    def read(self, sha256: str) -> bytes:
        content_id, _ = self._find(sha256)
        with self.engine.connect() as conn:
            parts = conn.scalars(
                select(BlobChunk.data)
                .where(BlobChunk.content_id == content_id)
                .order_by(BlobChunk.seq)
            )
            return b"".join(parts)

    def write_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.exists(digest):
            return digest
        size = self.chunk_bytes
        try:
            with self.engine.begin() as conn:
                content_id = conn.scalar(
                    insert(BlobContent)
                    .values(
                        sha256=digest,
                        size=len(data),
                        chunks=max(1, -(-len(data) // size)),
                        created_at=utcnow(),
                    )
                    .returning(BlobContent.id)
                )
                for seq, start in enumerate(range(0, max(len(data), 1), size)):
                    conn.execute(
                        insert(BlobChunk).values(
                            content_id=content_id, seq=seq, data=data[start : start + size]
                        )
                    )
        except IntegrityError:  # stored by another process meanwhile: the same bytes
            pass
        return digest

    def _sweep_abandoned(self) -> None:
        key = self.engine.url.render_as_string(hide_password=True)
        now = time.monotonic()
        if now - _last_sweep.get(key, -_SWEEP_EVERY_S) < _SWEEP_EVERY_S:
            return
        _last_sweep[key] = now
        cutoff = utcnow() - ABANDONED_AFTER
        with self.engine.begin() as conn:
            ids = list(
                conn.scalars(
                    select(BlobContent.id).where(
                        BlobContent.sha256.is_(None), BlobContent.created_at < cutoff
                    )
                )
            )
            if ids:
                _delete_contents(conn, ids)
                log.info("blob store: deleted %d abandoned uploads", len(ids))
