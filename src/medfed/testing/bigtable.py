"""A synthetic node table bigger than memory, and a process that runs local steps on it.

How it runs: :func:`write_table` writes a synthetic Parquet table from a seed (DuckDB
generates it in SQL, so 50 M rows need little memory) with a logistic outcome ``y`` and a
survival time ``time``/``event`` whose true log-hazard coefficients are :data:`TRUE_COX`.
:func:`run_steps` starts a fresh Python process (:func:`child`) that opens the file as a
node does (``TableStore.open``: a DuckDB view, nothing loaded), runs the algorithms' real
local and aggregate steps through the gate (``run_locally``) and reports, per step, its
seconds and the process's peak RSS (``VmHWM``); each step's first round also runs as at a
node, through the row-set memory (:func:`node_round`). Used by
``tests/unit/test_bigtable.py`` (2 M rows) and ``benchmarks/bigtable.py`` (50 M rows);
not by the product.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["STEPS", "TRUE_COX", "child", "node_round", "rss_mb", "run_steps", "write_table"]

#: the generating log-hazard ratios of ``x1`` and ``x2`` (Cox) — also the logistic ones
TRUE_COX = {"x1": 0.5, "x2": -0.25}

STEPS: dict[str, tuple[str, dict[str, Any]]] = {
    "count": ("count", {}),
    "mean": ("mean", {"columns": ["x1", "age"]}),
    "variance": ("variance", {"columns": ["x1", "age"]}),
    "glm": (
        "glm",
        {"outcome": "y", "covariates": ["x1", "x2", "age"], "family": "binomial"},
    ),
    "glm_gaussian": (
        "glm",
        {"outcome": "time", "covariates": ["x1", "x2", "age"], "family": "gaussian"},
    ),
    "cox": ("cox", {"duration": "time", "event": "event", "covariates": ["x1", "x2"]}),
    "histogram": ("histogram", {"column": "x1", "bins": [-3.0, -1.0, 0.0, 1.0, 3.0]}),
    "quantiles": ("quantiles", {"column": "age", "probs": [0.25, 0.5, 0.75]}),
    "km": ("km", {"duration": "time", "event": "event", "group": "y"}),
    "crosstab": ("crosstab", {"row": "y", "col": "event"}),
    "grouped": ("grouped_summary", {"by": "y", "columns": ["x1", "age"]}),
    "ttest": ("ttest", {"column": "x1", "group": "y"}),
    "covariance": ("covariance", {"columns": ["x1", "x2", "age"]}),
}


def write_table(path: Path, rows: int, *, seed: int = 7) -> None:
    """Synthetic rows from ``seed``: x1, x2 ~ N(0, 1), age, logistic y, exponential times.

    Times are rounded up to whole days and censored at 365 (few distinct event times, as
    in registry data); ``y`` is Bernoulli(expit(-0.5 + x1/2 - x2/4 + (age - 60)/100)).
    """
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET memory_limit = '512MB'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SELECT setseed({1.0 / (seed + 1)})")
    # Box-Muller normals from uniform random(); the generated values are the data
    con.execute(
        f"""
        COPY (
          WITH base AS (
            SELECT i,
                   sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS x1,
                   sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS x2,
                   CAST(30 + floor(random() * 60) AS BIGINT) AS age,
                   random() AS u, random() AS v
            FROM range({int(rows)}) t(i)
          ), timed AS (
            SELECT *, -ln(1 - u) / (0.01 * exp({TRUE_COX["x1"]} * x1 + {TRUE_COX["x2"]} * x2))
                     AS t
            FROM base
          )
          SELECT x1, x2, age,
                 CAST(v < 1 / (1 + exp(-(-0.5 + 0.5 * x1 - 0.25 * x2 + (age - 60) / 100.0)))
                      AS BIGINT) AS y,
                 CAST(least(ceil(t), 365) AS BIGINT) AS time,
                 CAST(t <= 365 AS BIGINT) AS event
          FROM timed
        ) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)
        """
    )
    con.close()


def rss_mb() -> float:
    """This process's peak resident set size so far, in MB.

    Linux's ``VmHWM`` (reset when the process execs, unlike ``getrusage``'s ``ru_maxrss``,
    which a child started by a large parent inherits); ``getrusage`` elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def node_round(store: Any, name: str, params: dict[str, Any], memory: Any) -> dict[str, Any]:
    """Round 0 of ``name`` as a node agent runs it: the local step over
    :class:`~medfed.node.gate.RecordingData`, the gate, the dominance rules and the row-set
    memory's release (its decision and cell count)."""
    from medfed.algorithms.base import LocalContext
    from medfed.algorithms.registry import get_algorithm
    from medfed.node.gate import GatePolicy, RecordingData, apply_gate
    from medfed.node.gate.dominance import DominancePolicy, dominated

    algorithm = get_algorithm(name)
    parsed = algorithm.parse_params(params)
    data = RecordingData(store, key=b"bigtable" * 4)
    output = algorithm.local(parsed, LocalContext(data=data, recorder=data))
    gated = apply_gate(output, algorithm.disclosure(parsed), GatePolicy(min_cell_count=5))
    decision = memory.release(data.labelings, 5)
    return {
        "gate": gated.status,
        "dominance": dominated(data.magnitudes_seen, DominancePolicy()),
        "released": decision.released,
        "cells": decision.cells_after,
    }


def child(path: str, steps: list[str]) -> list[dict[str, Any]]:
    """Run ``steps`` over the file in this process: per step its seconds, peak RSS, result.

    Each step's round 0 first runs as at a node (:func:`node_round`: row sets recorded and
    released in a row-set memory), then the whole algorithm through ``run_locally``; the
    seconds are the latter's, the peak RSS covers both.
    """
    import tempfile

    from medfed.node.gate import RowSetMemory
    from medfed.node.stores.tables import TableStore
    from medfed.testing.local import run_locally

    before = rss_mb()
    store = TableStore.open(path)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        memory = RowSetMemory(Path(folder), "b1" * 32, store.row_count, hidden=store.hidden_mask())
        for step in steps:
            name, params = STEPS[step]
            node = node_round(store, name, params, memory)
            start = time.perf_counter()
            result = run_locally(name, params, [store])
            seconds = time.perf_counter() - start
            out.append(
                {
                    "step": step,
                    "seconds": seconds,
                    "rss_before_mb": before,
                    "peak_rss_mb": rss_mb(),
                    "node": node,
                    "result": result,
                }
            )
    store.close()
    return out


def run_steps(path: Path, steps: list[str]) -> list[dict[str, Any]]:
    """:func:`child` in a fresh interpreter (its own peak RSS), parsed from its output."""
    code = (
        "import json, sys; from medfed.testing.bigtable import child; "
        "print(json.dumps(child(sys.argv[1], sys.argv[2].split(',')), default=str))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), ",".join(steps)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"steps {steps} failed: {done.stderr[-2000:]}")
    return list(json.loads(done.stdout.strip().splitlines()[-1]))
