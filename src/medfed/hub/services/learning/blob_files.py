"""Blobs as files under the hub's data folder (``blob_store = "files"``, SQLite's default).

Layout: ``DATA_DIR/blobs/ab/abcdef…`` (the first two hex digits as a folder). A blob is
written to ``DATA_DIR/blobs/tmp/`` while its hash is computed chunk by chunk, fsynced, then
moved into place with ``os.replace`` — a reader sees a whole blob or none, and two writers
of the same content (names are content hashes) leave one file. Files are 0600, folders
0700 (ethics approval documents, which name people, are blobs too). With several hub
processes this folder must be one shared volume; on PostgreSQL use the database backend.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from medfed.common.errors import NotFound
from medfed.hub.services.learning.blob_store import BlobStore, BlobWriter, check_sha

__all__ = ["FileBlobStore"]


class _FileWriter(BlobWriter):
    def __init__(self, store: FileBlobStore, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self._store = store
        tmp = store.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(dir=tmp)  # 0600
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def _put(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _publish(self, digest: str) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._store.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(self._path, final)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)


class FileBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        check_sha(sha256)
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} not found") from None

    def writer(self, max_bytes: int) -> BlobWriter:
        return _FileWriter(self, max_bytes)

    def chunks(self, sha256: str) -> Iterator[bytes]:
        try:
            handle = self.path(sha256).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} not found") from None
        return _file_chunks(handle, self.chunk_bytes)

    def read(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} not found") from None


def _file_chunks(handle: IO[bytes], size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(size):
            yield chunk
