"""The node's own log of every run it executed (append-only JSON lines, fsynced).

Each line records the run, task and project ids, the algorithm and its version, the
dataset's content hash, what the node decided (done, refused, failed) and the SHA-256 of
exactly the bytes that left the node. Values themselves are never written here. Lines
carry ``index`` and ``prev`` (the RFC 9162 leaf hash of the line before) like the hub's
log, and :meth:`RunLog.root` gives the Merkle root over them, so the node's history can
be verified and compared with the hub's (``medfed audit compare``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from medfed.common.timeutil import utcnow
from medfed.ledger.entries import GENESIS_PREV
from medfed.ledger.merkle import MemoryTree, leaf_hash


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RunLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._next: tuple[int, str] | None = None

    def _tail(self) -> tuple[int, str]:
        if self._next is None:
            lines = self.lines()
            self._next = (len(lines), leaf_hash(lines[-1]).hex() if lines else GENESIS_PREV)
        return self._next

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            index, prev = self._tail()
            line = canonical_json(
                {"index": index, "prev": prev, "time": utcnow().isoformat(), **entry}
            )
            with open(self.path, "ab") as handle:
                handle.write(line + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._next = (index + 1, leaf_hash(line).hex())

    def lines(self) -> list[bytes]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as handle:
            return [line.rstrip(b"\n") for line in handle if line.strip()]

    def root(self) -> str:
        return MemoryTree(leaf_hash(line) for line in self.lines()).root().hex()

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as handle:
            return [json.loads(line) for line in handle if line.strip()]


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
