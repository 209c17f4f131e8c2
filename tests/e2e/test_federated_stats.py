"""Federated statistics through a real hub and three real node processes equal pooled pandas."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

COLUMNS = ["age", "tsize", "pnodes", "progrec", "estrec", "time"]


def test_federated_count_equals_pooled_count_exactly(
    gbsg2_federation: Federation, gbsg2: pd.DataFrame
) -> None:
    client = gbsg2_federation.researcher
    assert client.tasks.run("count", datasets=["gbsg2"], progress=False).result.n == len(gbsg2)
    result = client.tasks.run("count", datasets=["gbsg2"], where="tsize > 20", progress=False)
    assert result.result.n == int((gbsg2.tsize > 20).sum())
    assert [n.status.value for n in result.nodes] == ["done"] * 3


def test_federated_mean_and_variance_equal_pooled_to_1e9(
    gbsg2_federation: Federation, gbsg2: pd.DataFrame
) -> None:
    client = gbsg2_federation.researcher
    result = client.tasks.run("variance", datasets=["gbsg2"], columns=COLUMNS, progress=False)
    for column in COLUMNS:
        stats = result.result.columns[column]
        assert stats.n == len(gbsg2)
        assert stats.mean == pytest.approx(gbsg2[column].mean(), rel=1e-9, abs=0)
        assert stats.variance == pytest.approx(gbsg2[column].var(ddof=1), rel=1e-9, abs=0)
    # the researcher sees how many nodes contributed, never which withheld or their values
    assert (result.contributing_nodes, result.withheld_nodes) == (3, 0)
    assert all(n.output_status is None for n in result.nodes)
    assert not hasattr(result.nodes[0], "output")


def test_federated_histogram_and_crosstab_equal_pooled_until_they_cross(
    fresh_gbsg2_federation: Federation, gbsg2: pd.DataFrame
) -> None:
    client = fresh_gbsg2_federation.researcher
    bins = [20.0, 40.0, 50.0, 90.0]
    hist = client.tasks.run(
        "histogram", datasets=["gbsg2"], column="age", bins=bins, progress=False
    )
    expected, _ = np.histogram(gbsg2["age"], bins=bins)
    assert hist.result.counts == expected.tolist()
    assert hist.result.suppressed_nodes == 0
    # a second grid over the same rows: a bin of age crossed with a cell of this table
    # holds 1..4 patients at some node, which the two answers together could isolate
    # (here every hospital withholds it, so the task fails: fewer than min_nodes answered)
    crossing = client.tasks.wait(
        client.tasks.submit("crosstab", datasets=["gbsg2"], row="tgrade", col="horTh").id,
        progress=False,
    )
    assert crossing.withheld_nodes >= 1


def test_federated_crosstab_equals_pooled(
    fresh_gbsg2_federation: Federation, gbsg2: pd.DataFrame
) -> None:
    client = fresh_gbsg2_federation.researcher
    tab = client.tasks.run(
        "crosstab", datasets=["gbsg2"], row="tgrade", col="horTh", progress=False
    )
    pooled = pd.crosstab(gbsg2["tgrade"], gbsg2["horTh"])
    got = pd.DataFrame(tab.result.table, index=tab.result.row_levels, columns=tab.result.col_levels)
    pd.testing.assert_frame_equal(
        got.sort_index().sort_index(axis=1), pooled, check_names=False, check_dtype=False
    )


def _cutoff_selecting(share: pd.DataFrame, n: int) -> int:
    ages = sorted(share["age"])
    for cutoff in range(min(ages), max(ages) + 2):
        if sum(a < cutoff for a in ages) == n:
            return cutoff
    raise AssertionError(f"no age cutoff selects exactly {n} rows")


def test_a_count_of_three_is_suppressed_and_never_reaches_the_hub_database(
    gbsg2_federation: Federation, gbsg2: pd.DataFrame
) -> None:
    share = split_gbsg2(gbsg2)["hospital-a"]
    cutoff = _cutoff_selecting(share, 3)
    client = gbsg2_federation.researcher
    task = client.tasks.wait(
        client.tasks.submit("count", datasets=["gbsg2"], where=f"age < {cutoff}").id,
        progress=False,
    )
    # the researcher learns how many nodes withheld (hospital-a and any node where the
    # split is small), not which ones
    assert task.withheld_nodes >= 1 and task.contributing_nodes + task.withheld_nodes == 3
    assert all(r.output_status is None and r.error is None for r in task.runs)
    # the hub's database holds no number for that node's run: its output is NULL
    db = sqlite3.connect(gbsg2_federation.hub.data_dir / "hub.db")
    try:
        rows = db.execute(
            "SELECT r.output, r.output_status FROM runs r JOIN nodes n ON n.id = r.node_id "
            "WHERE r.task_id = ? AND n.name = 'hospital-a'",
            (task.id,),
        ).fetchall()
    finally:
        db.close()
    assert rows == [(None, "suppressed")]
    if task.status.value == "completed":  # at least min_nodes (2) contributed
        assert task.result is not None and task.result["suppressed_nodes"] >= 1
    else:  # the failure counts contributors and names none
        assert task.error is not None and "hospital" not in task.error
