"""The node's airlock: script outputs the automatic checks cannot classify, for the steward.

How it runs: :class:`Airlock` is one SQLite file, ``<data_dir>/airlock/airlock.sqlite3``,
with one item per held run (``script.run``). The agent's script executor
(:mod:`medfed.node.executors.scripts`) :meth:`~Airlock.hold`\\ s a run when any of its
outputs is ``review`` (:mod:`medfed.node.outputcheck`): the item keeps every output of the
run with its verdict — those that passed and failed already decided, the held ones
waiting — and the run's lease. The run stays claimed at the hub: the agent lists
:meth:`~Airlock.held_runs` in its heartbeats, so its lease does not run out; a node that
was down longer than the lease gets the run handed back and finds it here by run id
(:meth:`~Airlock.set_lease`), without running the script again.

The steward decides with ``medfed node airlock list|show|release|refuse`` or on the node's
web pages (:mod:`medfed.node.web.airlock_pages`): :meth:`~Airlock.decide` moves an item
from ``held`` to ``released`` or ``refused`` (with a reason) in one ``BEGIN IMMEDIATE``
transaction, once. The running agent polls :meth:`~Airlock.undelivered`, posts the run's
outcome (released outputs with their data, refused ones without), records the decision
in its run log and the hub's ledger, and marks the item delivered — one writer for the
run log, the agent. Because every state is in the file, a restart loses nothing: an item
decided while the agent was down is delivered when it starts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medfed.common.errors import BadRequest, Conflict, NotFound

__all__ = ["Airlock", "AirlockItem"]

Status = Literal["held", "released", "refused"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS airlock_item (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL UNIQUE,
    task_id INTEGER NOT NULL,
    project_id INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    script TEXT NOT NULL,
    lease_id TEXT NOT NULL,
    outputs TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('held', 'released', 'refused')),
    reason TEXT,
    decided_by TEXT,
    created_at REAL NOT NULL,
    decided_at REAL,
    delivered_at REAL
);
"""


@dataclass(frozen=True)
class AirlockItem:
    id: int
    run_id: int
    task_id: int
    project_id: int
    dataset: str
    script: str
    lease_id: str
    #: every output of the run: ``{name: {"kind", "verdict", "rule", "data"}}``
    outputs: dict[str, dict[str, Any]]
    status: Status
    reason: str | None
    decided_by: str | None
    created_at: float
    decided_at: float | None
    delivered_at: float | None

    @property
    def held_names(self) -> list[str]:
        return sorted(n for n, o in self.outputs.items() if o.get("verdict") == "review")


class Airlock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "airlock" / "airlock.sqlite3"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            connection.executescript(_SCHEMA)
            yield connection
        finally:
            connection.close()

    def hold(
        self,
        *,
        run_id: int,
        task_id: int,
        project_id: int,
        dataset: str,
        script: str,
        lease_id: str,
        outputs: dict[str, dict[str, Any]],
    ) -> AirlockItem:
        """Keep a run's outputs for the steward; the same run again returns its item."""
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO airlock_item (run_id, task_id, project_id, dataset, "
                "script, lease_id, outputs, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, "
                "'held', ?)",
                (
                    run_id,
                    task_id,
                    project_id,
                    dataset,
                    script,
                    lease_id,
                    json.dumps(outputs),
                    time.time(),
                ),
            )
            row = db.execute("SELECT * FROM airlock_item WHERE run_id = ?", (run_id,)).fetchone()
        return _item(row)

    def get(self, item_id: int) -> AirlockItem:
        with self._db() as db:
            row = db.execute("SELECT * FROM airlock_item WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise NotFound(f"airlock item {item_id} not found")
        return _item(row)

    def by_run(self, run_id: int) -> AirlockItem | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM airlock_item WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _item(row)

    def items(self, status: Status | None = None) -> list[AirlockItem]:
        with self._db() as db:
            if status is None:
                rows = db.execute("SELECT * FROM airlock_item ORDER BY id").fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM airlock_item WHERE status = ? ORDER BY id", (status,)
                ).fetchall()
        return [_item(row) for row in rows]

    def held_runs(self) -> list[int]:
        """Runs whose outcome is not posted yet (their leases must be kept)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT run_id FROM airlock_item WHERE delivered_at IS NULL ORDER BY run_id"
            ).fetchall()
        return [int(row[0]) for row in rows]

    def decide(
        self,
        item_id: int,
        decision: Literal["released", "refused"],
        *,
        reason: str = "",
        by: str = "steward",
    ) -> AirlockItem:
        """The steward's decision on a held item, once; a refusal needs its reason."""
        if decision not in ("released", "refused"):
            raise BadRequest(f"an airlock decision is released or refused, not {decision!r}")
        reason = reason.strip()
        if decision == "refused" and not reason:
            raise BadRequest("refusing an airlock item needs a reason")
        if len(reason) > 2000:
            raise BadRequest("the reason is longer than 2000 characters")
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT * FROM airlock_item WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                raise NotFound(f"airlock item {item_id} not found")
            if row["status"] != "held":
                db.execute("ROLLBACK")
                raise Conflict(f"airlock item {item_id} was {row['status']} already")
            db.execute(
                "UPDATE airlock_item SET status = ?, reason = ?, decided_by = ?, decided_at = ? "
                "WHERE id = ?",
                (decision, reason or None, by, time.time(), item_id),
            )
            db.execute("COMMIT")
        return self.get(item_id)

    def set_lease(self, run_id: int, lease_id: str) -> None:
        """The run was handed back to this node under a new lease."""
        with self._db() as db:
            db.execute("UPDATE airlock_item SET lease_id = ? WHERE run_id = ?", (lease_id, run_id))

    def undelivered(self) -> list[AirlockItem]:
        """Decided items whose outcome the agent has not posted yet."""
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM airlock_item WHERE status != 'held' AND delivered_at IS NULL "
                "ORDER BY id"
            ).fetchall()
        return [_item(row) for row in rows]

    def mark_delivered(self, item_id: int) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE airlock_item SET delivered_at = ? WHERE id = ?", (time.time(), item_id)
            )


def _item(row: sqlite3.Row) -> AirlockItem:
    return AirlockItem(
        id=int(row["id"]),
        run_id=int(row["run_id"]),
        task_id=int(row["task_id"]),
        project_id=int(row["project_id"]),
        dataset=str(row["dataset"]),
        script=str(row["script"]),
        lease_id=str(row["lease_id"]),
        outputs=json.loads(row["outputs"]),
        status=row["status"],
        reason=row["reason"],
        decided_by=row["decided_by"],
        created_at=float(row["created_at"]),
        decided_at=row["decided_at"],
        delivered_at=row["delivered_at"],
    )
