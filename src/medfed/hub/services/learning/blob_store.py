"""The one blob-store interface: content named by SHA-256, written as a stream, read whole.

How it runs: :meth:`BlobStore.writer` opens a :class:`BlobWriter`; the caller feeds it
chunks (:meth:`BlobWriter.write` hashes each chunk as it passes and refuses a blob past
``max_bytes``), then :meth:`BlobWriter.finish` checks the announced hash and makes the
whole content visible at once under its SHA-256 — or :meth:`BlobWriter.abort` leaves
nothing behind. Writing a content that is already stored is harmless (the first copy
stays). Readers get the whole content (:meth:`BlobStore.read`) or a stream of chunks
(:meth:`BlobStore.chunks`) for a download. Two backends implement it: files under the
hub's data folder (``blob_files``) and chunks in PostgreSQL (``blob_database``);
``medfed.hub.services.learning.blobs.store_for`` picks one from the settings.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

from medfed.common.errors import BadRequest

__all__ = ["BlobStore", "BlobWriter", "check_sha"]

_HASH_CHARS = frozenset("0123456789abcdef")


def check_sha(sha256: str) -> str:
    """``sha256`` when it is 64 lowercase hex digits (else a 422 naming it)."""
    if len(sha256) != 64 or not set(sha256) <= _HASH_CHARS:
        raise BadRequest(f"{sha256!r} is not a SHA-256 hex digest")
    return sha256


class BlobWriter(ABC):
    """One blob being written: feed chunks, then :meth:`finish` (or :meth:`abort`)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise BadRequest(f"the blob is larger than the hub's limit of {self.max_bytes} bytes")
        self._hash.update(chunk)
        self._put(chunk)

    def finish(self, expected_sha256: str | None = None) -> tuple[str, int]:
        """Check the hash (when given) and make the whole blob visible; (sha256, size)."""
        digest = self._hash.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            self.abort()
            raise BadRequest(
                f"the body hashes to {digest}, not the {expected_sha256} the sender announced"
            )
        self._publish(digest)
        return digest, self.size

    @abstractmethod
    def _put(self, chunk: bytes) -> None:
        """Keep ``chunk`` (not yet visible to readers)."""

    @abstractmethod
    def _publish(self, digest: str) -> None:
        """Make what was written readable as ``digest`` (or drop it: already stored)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what was written; safe to call twice."""


class BlobStore(ABC):
    """Content-addressed bytes (see the module doc); ``kind`` rules live in ``blobs``."""

    #: a download's chunk size
    chunk_bytes = 1 << 20

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def size(self, sha256: str) -> int:
        """The stored blob's size in bytes (NotFound when it is not stored)."""

    @abstractmethod
    def writer(self, max_bytes: int) -> BlobWriter: ...

    @abstractmethod
    def chunks(self, sha256: str) -> Iterator[bytes]:
        """The blob's bytes in order, a chunk at a time (NotFound before the first)."""

    def read(self, sha256: str) -> bytes:
        return b"".join(self.chunks(sha256))

    def write_bytes(self, data: bytes) -> str:
        writer = self.writer(max(len(data), 1))
        try:
            writer.write(data)
            return writer.finish()[0]
        except BaseException:
            writer.abort()
            raise
