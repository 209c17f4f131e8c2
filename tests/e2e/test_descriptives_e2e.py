"""Descriptives and tests through a real hub and three real node processes equal the pool.

Each hospital holds a random third of GBSG2 and of NCCTG lung (rows with missing values
dropped); the gate's threshold is the default 5. Every figure is compared with numpy,
pandas or scipy on the pooled rows.

The tests share one federation, and its nodes remember every row set they released: a
grid that crosses earlier ones (GBSG2 by tgrade, then by menostat, then tgrade x horTh)
would cut cells of 1..4 patients and be withheld. So the GBSG2 grids here nest: tgrade,
horTh, tgrade x horTh.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2, load_lung
from scipy import stats

from medfed.sdk.results import TaskFailed
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

GBSG2 = load_gbsg2()
LUNG = load_lung().dropna().reset_index(drop=True)
HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]


def _thirds(frame: pd.DataFrame, seed: int) -> list[pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    return [frame.iloc[np.sort(p)].reset_index(drop=True) for p in np.array_split(order, 3)]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root: Path = tmp_path_factory.mktemp("descriptives")
    shares = {
        name: {"gbsg2": gbsg2, "lung": lung}
        for name, gbsg2, lung in zip(HOSPITALS, _thirds(GBSG2, 1), _thirds(LUNG, 2), strict=True)
    }
    with Federation(root, shares) as fed:
        yield fed


def test_quantiles_through_the_federation_are_numpy_quantiles(federation: Federation) -> None:
    client = federation.researcher
    probs = [0.1, 0.25, 0.5, 0.75, 0.9]
    run = client.tasks.run(
        "quantiles", datasets=["gbsg2"], column="age", probs=probs, progress=False
    )
    # every age decile and quartile is shared by at least k patients: exact, bit for bit
    assert all(q.exact for q in run.result.quantiles)
    assert [q.value for q in run.result.quantiles] == np.quantile(GBSG2.age, probs).tolist()
    assert run.rounds == run.result.rounds > 1
    # survival times are nearly all distinct: each is released as a bin of >= k rows
    run = client.tasks.run(
        "quantiles", datasets=["gbsg2"], column="time", probs=probs, progress=False
    )
    for q, want in zip(run.result.quantiles, np.quantile(GBSG2.time, probs), strict=True):
        assert q.coarsened and q.value is None and q.lower <= want <= q.upper
        assert ((GBSG2.time >= q.lower) & (GBSG2.time <= q.upper)).sum() >= 5
    tail = client.tasks.run(
        "quantiles", datasets=["gbsg2"], column="tsize", probs=[0.002], progress=False
    )
    (q,) = tail.result.quantiles
    assert q.exact is False and q.lower <= np.quantile(GBSG2.tsize, 0.002) <= q.upper


def test_correlation_and_covariance_equal_pandas(federation: Federation) -> None:
    columns = ["age", "ph.karno", "meal.cal", "wt.loss", "time"]
    for kind, expected in (
        ("correlation", LUNG[columns].corr()),
        ("covariance", LUNG[columns].cov()),
    ):
        run = federation.researcher.tasks.run(
            kind, datasets=["lung"], columns=columns, progress=False
        )
        np.testing.assert_allclose(np.array(run.result.matrix), expected.to_numpy(), rtol=1e-10)
        assert run.result.n[0][0] == len(LUNG)


def test_grouped_summary_equals_pandas_groupby(federation: Federation) -> None:
    columns = ["age", "tsize", "time"]
    run = federation.researcher.tasks.run(
        "grouped_summary", datasets=["gbsg2"], columns=columns, by="tgrade", progress=False
    )
    expected = GBSG2.groupby("tgrade")[columns].agg(["count", "mean", "var"])
    assert list(run.result.groups) == list(expected.index) and run.withheld_nodes == 0
    for level, row in expected.iterrows():
        for column in columns:
            got = run.result.groups[str(level)][column]
            assert got.n == row[(column, "count")]
            np.testing.assert_allclose(got.mean, row[(column, "mean")], rtol=1e-12)
            np.testing.assert_allclose(got.variance, row[(column, "var")], rtol=1e-12)


def test_welch_ttest_equals_scipy(federation: Federation) -> None:
    client = federation.researcher
    run = client.tasks.run("ttest", datasets=["gbsg2"], column="age", group="horTh", progress=False)
    no, yes = (GBSG2.age[GBSG2.horTh == level] for level in ("no", "yes"))
    want = stats.ttest_ind(no, yes, equal_var=False)
    result = run.result
    assert result.groups == ["no", "yes"] and result.n == [len(no), len(yes)]
    assert result.suppressed_nodes == 0
    np.testing.assert_allclose(result.statistic, want.statistic, rtol=1e-10)
    np.testing.assert_allclose(result.pvalue, want.pvalue, rtol=1e-9)
    np.testing.assert_allclose(result.df, want.df, rtol=1e-10)
    np.testing.assert_allclose(result.confidence_interval, want.confidence_interval(), rtol=1e-10)
    lung = client.tasks.run(
        "ttest", datasets=["lung"], column="wt.loss", group="sex", groups=[2, 1], progress=False
    )
    a, b = (LUNG["wt.loss"][LUNG.sex == v] for v in (2, 1))
    np.testing.assert_allclose(
        lung.result.pvalue, stats.ttest_ind(a, b, equal_var=False).pvalue, rtol=1e-9
    )


def test_chisq_equals_scipy_and_withholds_tables_with_a_small_cell(
    federation: Federation,
) -> None:
    client = federation.researcher
    run = client.tasks.run("chisq", datasets=["gbsg2"], row="tgrade", col="horTh", progress=False)
    table = pd.crosstab(GBSG2.tgrade, GBSG2.horTh)
    want = stats.chi2_contingency(table)
    assert run.result.observed == table.to_numpy().tolist()
    np.testing.assert_allclose(run.result.statistic, want.statistic, rtol=1e-12)
    np.testing.assert_allclose(run.result.pvalue, want.pvalue, rtol=1e-12)
    np.testing.assert_allclose(run.result.expected, want.expected_freq, rtol=1e-12)
    assert run.result.dof == want.dof
    two = client.tasks.run(
        "chisq",
        datasets=["gbsg2"],
        row="tgrade",
        col="horTh",
        row_levels=["II", "III"],
        progress=False,
    )
    inside = GBSG2[GBSG2.tgrade.isin(["II", "III"])]
    yates = stats.chi2_contingency(pd.crosstab(inside.tgrade, inside.horTh))
    assert two.result.dof == 1 and two.result.suppressed_nodes == 0
    np.testing.assert_allclose(two.result.statistic, yates.statistic, rtol=1e-12)
    np.testing.assert_allclose(two.result.pvalue, yates.pvalue, rtol=1e-12)
    # every hospital has a pnodes level with 1..4 patients: each withholds its whole table
    with pytest.raises(TaskFailed, match=r"only 0 node\(s\) gave an unsuppressed answer"):
        client.tasks.run("chisq", datasets=["gbsg2"], row="pnodes", col="horTh", progress=False)
