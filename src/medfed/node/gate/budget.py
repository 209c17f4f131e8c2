"""dp mode's ε budget: per project and dataset, kept by the node, durable across restarts.

How it runs: :class:`BudgetLedger` is one SQLite file, ``<data_dir>/dp/budget.sqlite3``,
with one row per charge (project, dataset, run, ε, time). Before a dp run's local step
touches the data, the node agent calls :meth:`BudgetLedger.charge`: in one ``BEGIN
IMMEDIATE`` transaction it sums what the project already spent on that dataset and either
refuses — :class:`~medfed.common.errors.PolicyRefused`, whose message holds ε figures and
names, never a data value — or records the charge and commits (SQLite's journal makes the
commit durable before the run goes on). Composition is sequential: the ε of a project's
runs on one dataset add up (pure ε-DP, Laplace mechanisms).

The charge is made before the data is read and never given back: a run that fails, is
withheld or is handed out again after a lost lease spent its ε (a second attempt draws
fresh noise, so it must be charged again). The numbers a researcher may read — ε of the
run, spent and budget — travel in the run's output (``"dp"``); the ledger itself never
leaves the node.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from medfed.common.errors import PolicyRefused

__all__ = ["BudgetLedger", "Charge"]

#: spends are sums of floats; this much over the budget is still within it
SLACK = 1e-9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dp_charge (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    run_id INTEGER,
    epsilon REAL NOT NULL CHECK (epsilon > 0),
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dp_charge_key ON dp_charge (project_id, dataset);
"""


@dataclass(frozen=True)
class Charge:
    """One accepted charge: the run's ε, and the project's total on the dataset after it."""

    epsilon: float
    spent: float
    budget: float

    @property
    def left(self) -> float:
        return max(self.budget - self.spent, 0.0)

    def entry(self) -> dict[str, float]:
        """What the run's output carries to the hub (and so to the researcher)."""
        return {"epsilon": self.epsilon, "spent": self.spent, "budget": self.budget}


class BudgetLedger:
    """The node's ε ledger (module docstring); safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        connection.execute("PRAGMA synchronous = FULL")
        if not self._ready:
            connection.executescript(_SCHEMA)
            self._ready = True
        return connection

    @staticmethod
    def _spent(connection: sqlite3.Connection, project_id: int, dataset: str) -> float:
        row = connection.execute(
            "SELECT COALESCE(SUM(epsilon), 0.0) FROM dp_charge "
            "WHERE project_id = ? AND dataset = ?",
            (project_id, dataset),
        ).fetchone()
        return float(row[0])

    def spent(self, project_id: int, dataset: str) -> float:
        """ε the project has spent on ``dataset`` at this node."""
        with self._lock:
            connection = self._connect()
            try:
                return self._spent(connection, project_id, dataset)
            finally:
                connection.close()

    def charge(
        self,
        *,
        project_id: int,
        dataset: str,
        epsilon: float,
        budget: float,
        run_id: int | None = None,
    ) -> Charge:
        """Record ``epsilon`` for the project on ``dataset``, or refuse past ``budget``."""
        if not epsilon > 0 or not budget > 0:
            raise ValueError("a dp charge needs epsilon > 0 and budget > 0")
        with self._lock:
            connection = self._connect()
            try:
                connection.execute("BEGIN IMMEDIATE")
                spent = self._spent(connection, project_id, dataset)
                if spent + epsilon > budget + SLACK:
                    connection.execute("ROLLBACK")
                    raise PolicyRefused(
                        f"dp budget: project {project_id} has spent ε {spent:g} of {budget:g} "
                        f"on dataset '{dataset}' at this node; this run needs ε {epsilon:g}"
                    )
                connection.execute(
                    "INSERT INTO dp_charge (project_id, dataset, run_id, epsilon, at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (project_id, dataset, run_id, epsilon, time.time()),
                )
                connection.execute("COMMIT")
            finally:
                connection.close()
        return Charge(epsilon=epsilon, spent=spent + epsilon, budget=budget)
