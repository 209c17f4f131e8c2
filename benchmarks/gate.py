"""Gate cost per task at a node with 1,000,000 rows and 10,000 remembered row sets.

Run: ``.venv/bin/python -m benchmarks.gate [--rows N] [--cells M] [--tasks T]``.

The table is synthetic (a seeded generator: no real dataset of a million patients ships
with the packages we may use), columns ``age``, ``site`` and ``visit``. The node's
row-set memory starts cut into ``M`` cells, as 10,000 released row sets that nest (each a
range of ``visit``) would leave it. Each task then does what the node does for a
``mean`` over a filter: ``RecordingData.select`` (DuckDB query, row ids, keyed
fingerprints of the row set and of each column's non-null rows) and
``RowSetMemory.release`` (refine, check, write when the partition changed) and the
dominance rules on the selected values (``magnitude`` + ``dominated``). A third of
the tasks select a union of remembered cells (released, nothing written), a third cut
cells into large parts (released, the new partition written), a third cut cells into
parts of 1-4 rows (refused). Reported per task, p50 and p99: the whole recorded select;
the gate part alone (masks, fingerprints and the partition check, without the DuckDB
query); the memory's resident size and its file on disk. Same run, side by side: the
plain ``TableStore.select`` the local step would make without the gate, as the reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medfed.common.filters import parse_filter
from medfed.node.gate import RecordingData, RowSetMemory
from medfed.node.gate.dominance import DominancePolicy, dominated, magnitude
from medfed.node.stores.tables import TableStore

K = 5


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=60)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    n = args.rows
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 95, n),
            "site": rng.integers(0, 20, n),
            "visit": np.repeat(np.arange(args.cells), n // args.cells + 1)[:n],
        }
    )
    store = TableStore(frame, name="synthetic.parquet")
    with tempfile.TemporaryDirectory() as tmp:
        memory = RowSetMemory(Path(tmp), "ab" * 32, n)
        memory._cells = frame["visit"].to_numpy(dtype=np.int64).copy()  # 10,000 nested sets
        memory._n_cells = args.cells
        memory._save(memory._cells)
        disk = memory.path.stat().st_size
        plain, recorded, gate = [], [], []
        decisions = {True: 0, False: 0}
        for i in range(args.tasks):
            edge = int(rng.integers(1, args.cells))
            # a third each: whole cells (visit < edge); cells cut in large parts (age < 60:
            # released, the partition written); cells cut in parts of 1-4 rows (refused)
            text: dict[str, object] = {"column": "visit", "op": "<", "value": edge}
            if i % 3:
                cut = 60 if i % 3 == 1 else 19
                text = {"and": [text, {"column": "age", "op": "<", "value": cut}]}
            where = parse_filter(text)
            started = time.perf_counter()
            store.select(["age"], where)
            plain.append(time.perf_counter() - started)
            data = RecordingData(store, key=b"k" * 32)
            started = time.perf_counter()
            selected_rows = data.select(["age"], where)
            selected = time.perf_counter()
            decision = memory.release(data.labelings, K)
            dominated({"age": magnitude(selected_rows["age"])}, DominancePolicy())
            done = time.perf_counter()
            recorded.append(done - started)
            gate.append((done - selected) + ((selected - started) - plain[-1]))
            decisions[decision.released] += 1
        figures = {
            "rows": n,
            "remembered_cells": args.cells,
            "tasks": args.tasks,
            "released": decisions[True],
            "refused": decisions[False],
            "plain_select_ms": {"p50": _pct(plain, 50), "p99": _pct(plain, 99)},
            "recorded_select_and_release_ms": {
                "p50": _pct(recorded, 50),
                "p99": _pct(recorded, 99),
            },
            "gate_only_ms": {"p50": _pct(gate, 50), "p99": _pct(gate, 99)},
            "ratio_recorded_to_plain_p50": _pct(recorded, 50) / _pct(plain, 50),
            "memory_resident_mb": memory._cells.nbytes / 2**20,
            "memory_file_mb": disk / 2**20,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        }
    print(json.dumps(figures, indent=2))
    out = Path(__file__).parent / "results" / "gate.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
