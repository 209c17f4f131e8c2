"""Results waiting for the hub's acknowledgement, kept on disk (``<data_dir>/outbox/``).

How it runs: once the node has computed a run's outcome — the gate has decided, the
row-set memory and any ε budget are already updated — the agent writes the exact bytes it
will post, with the run log entry that goes with them, to one file per run
(``<run_id>-<lease_id>.json``), atomically: a temporary file in the same folder, flushed
and fsynced, then renamed over the final name, so a crash leaves the old state or the new
one, never half a file. Only when the hub has answered — accepted (200), or the lease is
gone (409) or the run unknown (404) — is the file removed. On start the agent posts
whatever is still here before it asks for new work, so a node killed between computing and
delivering re-sends the same bytes under the same lease; the hub accepts one answer per
lease (a repeat of an accepted one is a no-op), so nothing is doubled, and a lease that
expired meanwhile gets 409: the node logs it and drops the file (the hub has handed the
run out again and the node computes it afresh). The files hold what leaves the node
anyway (the gated output) and the run log's keyed hashes; mode 0600. A binary outcome
(arrays, :mod:`medfed.common.arrays`) is kept as base64 under ``body_b64``.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.common.arrays import MAGIC
from medfed.common.errors import BadRequest

__all__ = ["Outbox", "Pending"]

_NAME = re.compile(r"^(\d+)-([0-9A-Za-z_-]{1,128})\.json$")


@dataclass(frozen=True)
class Pending:
    """One stored result: the bytes to post and the run log entry to write once answered."""

    run_id: int
    lease_id: str
    body: bytes
    entry: dict[str, Any]
    path: Path


class Outbox:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, run_id: int, lease_id: str, body: bytes, entry: dict[str, Any]) -> Pending:
        """Store a result durably before it is posted; returns what was stored."""
        if not re.fullmatch(r"[0-9A-Za-z_-]{1,128}", lease_id):
            raise BadRequest("outbox: a lease id of letters, digits, '-' and '_' is required")
        path = self.folder / f"{run_id}-{lease_id}.json"
        record: dict[str, Any] = {"run_id": run_id, "lease_id": lease_id, "entry": entry}
        if body.startswith(MAGIC):  # a binary outcome (medfed.common.arrays): base64
            record["body_b64"] = base64.b64encode(body).decode()
        else:
            record["body"] = body.decode()
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(record, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        self._sync_folder()
        return Pending(run_id, lease_id, body, entry, path)

    def pending(self) -> list[Pending]:
        """Every stored result, oldest run first (unreadable files are an error)."""
        found: list[Pending] = []
        for path in sorted(self.folder.iterdir()):
            match = _NAME.match(path.name)
            if match is None:
                continue  # a temporary file of a write that a crash interrupted
            try:
                record = json.loads(path.read_text())
                body = (
                    base64.b64decode(record["body_b64"])
                    if "body_b64" in record
                    else str(record["body"]).encode()
                )
                entry = dict(record["entry"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BadRequest(f"outbox: cannot read {path}: {exc}") from None
            found.append(Pending(int(match[1]), match[2], body, entry, path))
        return sorted(found, key=lambda p: p.run_id)

    def remove(self, item: Pending) -> None:
        """The hub answered: forget the stored result."""
        item.path.unlink(missing_ok=True)
        self._sync_folder()

    def run_ids(self) -> list[int]:
        """Runs whose result waits here (their leases are kept alive by heartbeats)."""
        return [int(m[1]) for p in self.folder.iterdir() if (m := _NAME.match(p.name))]

    def _sync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
