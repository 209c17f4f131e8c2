"""A 2,000,000-row node table (Parquet): count, mean, histogram, GLM, Cox, KM, crosstab and
grouped statistics in bounded memory.

The table is synthetic, generated from a seed by ``benchmarks.bigtable.write_table``
(DuckDB SQL: normal covariates, a logistic outcome, exponential survival times with known
log-hazard ratios). A fresh Python process opens it as a node does (``TableStore.open``,
a DuckDB view) and runs the algorithms' real local and aggregate steps through the gate
(``run_locally``; round 0 also as at a node, through ``RecordingData`` and a row-set
memory), reporting its peak RSS (Linux ``VmHWM``). The results are checked
against DuckDB and statsmodels on the same file; Cox (too slow for lifelines at this size;
its exactness is tested on real data in ``test_survival.py``) against the generating
coefficients.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import statsmodels.api as sm

from medfed.testing.bigtable import TRUE_COX, run_steps, write_table

ROWS = 2_000_000
#: growth of the node process's peak RSS over its size after imports (generous: the
#: whole table in pandas would be ~100 MB; the Cox and GLM steps hold a few column copies)
MAX_GROWTH_MB = 900


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bigtable") / "big.parquet"
    write_table(path, ROWS, seed=7)
    return path


@pytest.fixture(scope="module")
def steps(table: Path) -> dict[str, dict[str, Any]]:
    steps = ["count", "mean", "histogram", "glm_gaussian", "cox", "km", "crosstab", "grouped"]
    done = run_steps(table, steps)
    return {d["step"]: d for d in done}


def test_memory_stays_bounded(steps: dict[str, dict[str, Any]]) -> None:
    for step in steps.values():
        growth = step["peak_rss_mb"] - step["rss_before_mb"]
        assert growth < MAX_GROWTH_MB, (step["step"], growth)
    # count and mean are pushed down to DuckDB (their row sets recorded as one-byte masks
    # and released through a row-set memory, as at a node): far under the whole table
    assert steps["mean"]["peak_rss_mb"] - steps["mean"]["rss_before_mb"] < 300
    # histogram reads its column in batches (its bin cells recorded batch by batch)
    assert steps["histogram"]["peak_rss_mb"] - steps["histogram"]["rss_before_mb"] < 300
    # cox reads its columns in batches too: a batch and the sums per agreed event time.
    # The peak is the process's so far (the steps before it ran in the same process);
    # cox alone, first in a process: 270 MB, 644 MB when it read one frame
    assert steps["cox"]["peak_rss_mb"] - steps["cox"]["rss_before_mb"] < 500


def test_count_and_mean_pass_the_node_rules(steps: dict[str, dict[str, Any]]) -> None:
    for step in ("count", "mean"):
        node = steps[step]["node"]
        assert (node["gate"], node["dominance"], node["released"]) == ("ok", None, True)


def test_count_and_mean_equal_duckdb(table: Path, steps: dict[str, dict[str, Any]]) -> None:
    n, x1, age = (
        duckdb.connect()
        .execute(f"SELECT count(*), avg(x1), avg(age) FROM read_parquet('{table}')")
        .fetchall()[0]
    )
    assert n == ROWS
    assert steps["count"]["result"]["n"] == ROWS
    means = steps["mean"]["result"]["columns"]
    assert means["x1"]["n"] == ROWS
    assert means["x1"]["mean"] == pytest.approx(x1, rel=1e-12, abs=1e-15)
    assert means["age"]["mean"] == pytest.approx(age, rel=1e-12)


def test_histogram_equals_duckdb(table: Path, steps: dict[str, dict[str, Any]]) -> None:
    edges = [-3.0, -1.0, 0.0, 1.0, 3.0]
    cases = ", ".join(
        f"count(*) FILTER (WHERE x1 >= {lo} AND x1 {'<=' if hi == edges[-1] else '<'} {hi})"
        for lo, hi in itertools.pairwise(edges)
    )
    row = duckdb.connect().execute(f"SELECT {cases} FROM read_parquet('{table}')").fetchall()[0]
    got = steps["histogram"]["result"]
    assert got["counts"] == list(row)
    node = steps["histogram"]["node"]
    assert (node["gate"], node["released"]) == ("ok", True)


def test_glm_equals_statsmodels(table: Path, steps: dict[str, dict[str, Any]]) -> None:
    con = duckdb.connect()
    frame = con.execute(f"SELECT time, x1, x2, age FROM read_parquet('{table}')").df()
    design = sm.add_constant(frame[["x1", "x2", "age"]])
    fit = sm.GLM(frame["time"], design, family=sm.families.Gaussian()).fit()
    got = steps["glm_gaussian"]["result"]
    coef = {c["name"]: c for c in got["coefficients"]}
    for name in ["const", "x1", "x2", "age"]:
        key = "Intercept" if name == "const" else name
        assert coef[key]["estimate"] == pytest.approx(fit.params[name], rel=1e-8)
        assert coef[key]["std_error"] == pytest.approx(fit.bse[name], rel=1e-6)


def test_cox_recovers_the_generating_coefficients(steps: dict[str, dict[str, Any]]) -> None:
    got = steps["cox"]["result"]
    coef = dict(zip(got["covariates"], got["coef"], strict=True))
    for name, truth in TRUE_COX.items():
        assert np.isclose(coef[name], truth, atol=0.02), (name, coef[name])


def test_batched_grids_equal_duckdb(table: Path, steps: dict[str, dict[str, Any]]) -> None:
    """km, crosstab and grouped_summary read their columns in batches: their counts and
    means are DuckDB's on the same file."""
    con = duckdb.connect()
    by_y = con.execute(
        f"SELECT y, count(*), sum(event), avg(x1), var_samp(x1), avg(age) "
        f"FROM read_parquet('{table}') GROUP BY y ORDER BY y"
    ).fetchall()
    curves = {c["group"]: c for c in steps["km"]["result"]["curves"]}
    grouped = steps["grouped"]["result"]["groups"]
    for y, n, events, mean_x1, var_x1, mean_age in by_y:
        assert (curves[str(y)]["rows"], curves[str(y)]["events_total"]) == (n, events)
        assert grouped[str(y)]["x1"]["n"] == n
        assert grouped[str(y)]["x1"]["mean"] == pytest.approx(mean_x1, rel=1e-11, abs=1e-14)
        assert grouped[str(y)]["x1"]["variance"] == pytest.approx(var_x1, rel=1e-11)
        assert grouped[str(y)]["age"]["mean"] == pytest.approx(mean_age, rel=1e-12)
    cells = con.execute(
        f"SELECT y, event, count(*) FROM read_parquet('{table}') GROUP BY y, event"
    ).fetchall()
    table_ = steps["crosstab"]["result"]
    got = {
        (r, c): table_["table"][i][j]
        for i, r in enumerate(table_["row_levels"])
        for j, c in enumerate(table_["col_levels"])
    }
    assert got == {(str(y), str(e)): n for y, e, n in cells}
