"""Benchmark: a node table bigger than memory — count, mean, GLM and Cox over one Parquet file.

How it runs: writes a synthetic table from a seed (``medfed.testing.bigtable.write_table``),
times count and mean with DuckDB alone on the same file, then runs each step in a fresh
process (``run_steps``: ``TableStore.open`` + the real local and aggregate steps through the
gate) and prints its time, its peak RSS and, for count and mean, the ratio to DuckDB alone.

Command (the figures in ``docs/benchmarks.md``)::

    .venv/bin/python -m benchmarks.bigtable --rows 50000000 --steps count,mean,variance
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from medfed.testing.bigtable import run_steps, write_table


def duckdb_direct(path: Path) -> dict[str, float]:
    """Count and mean of x1 with DuckDB alone on the same file (seconds)."""
    import duckdb

    con = duckdb.connect()
    out: dict[str, float] = {}
    for label, sql in {
        "count": f"SELECT count(*) FROM read_parquet('{path}')",
        "mean": f"SELECT count(x1), avg(x1), count(age), avg(age) FROM read_parquet('{path}')",
    }.items():
        start = time.perf_counter()
        con.execute(sql).fetchall()
        out[label] = time.perf_counter() - start
    con.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--steps", default="count,mean,glm,cox")
    parser.add_argument("--dir", default=None, help="where to write the table (a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "big.parquet"
        start = time.perf_counter()
        write_table(path, args.rows)
        print(
            f"wrote {args.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        direct = duckdb_direct(path)
        for step in args.steps.split(","):
            got = run_steps(path, [step])[0]
            line = (
                f"{step:6s} {got['seconds']:8.2f} s  peak RSS {got['peak_rss_mb']:7.0f} MB "
                f"(after imports {got['rss_before_mb']:.0f} MB)"
            )
            if step in direct:
                ratio = got["seconds"] / direct[step]
                line += f"  DuckDB alone {direct[step]:.3f} s  ratio {ratio:.1f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
