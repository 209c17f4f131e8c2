"""Resumable ingest: which source files are already done, in a small SQLite file.

How it runs: the runner (one process; workers never touch it) opens
``OUT/.ingest/state.sqlite``, reads every key once at the start, and records each
chunk's outcomes in one transaction as the chunk comes back. A key is the SHA-256 of the
source's absolute path, size, modification time and the run's configuration hash
(options, rectangles, node key fingerprint, engine version): a file that changed, or a
run with other settings, gets a new key and is processed again. Files with a leak are not
recorded, so a re-run checks them again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Recorded", "StateStore", "file_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    reason TEXT NOT NULL DEFAULT '',
    index_row TEXT,
    at REAL NOT NULL
)
"""


def file_key(path: Path, config_hash: str) -> str:
    stat = path.stat()
    text = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{config_hash}"
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Recorded:
    source: str
    status: str  # "done" or "quarantined"
    output: str | None
    reason: str
    index_row: dict[str, Any] | None


class StateStore:
    """The ingest state of one output folder."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def load(self) -> dict[str, Recorded]:
        rows = self._db.execute("SELECT key, source, status, output, reason, index_row FROM files")
        return {
            key: Recorded(source, status, output, reason, json.loads(row) if row else None)
            for key, source, status, output, reason, row in rows
        }

    def record(self, entries: Iterable[tuple[str, Recorded]]) -> None:
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        key,
                        r.source,
                        r.status,
                        r.output,
                        r.reason,
                        json.dumps(r.index_row, default=str) if r.index_row is not None else None,
                        now,
                    )
                    for key, r in entries
                ],
            )

    def close(self) -> None:
        self._db.close()
