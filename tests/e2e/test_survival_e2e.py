"""km, logrank and cox through a real hub and three real node processes equal lifelines.

``exact_federation`` runs its nodes with ``min_cell_count = 1``, so the risk-set rule
moves no event time and every result must equal the pooled analysis. ``gated_federation``
uses the default 5: there the tails are coarsened and ``km`` must stay within the
``max_error`` it reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_lung
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import median_survival_times

from medfed.algorithms.survival.results import CoxResult, KMResult, LogrankResult
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

TIGHT = {"precision": 1e-14, "r_precision": 1e-16}
CATEGORICAL = ["horTh", "menostat", "tgrade"]
COVARIATES = ["age", "tsize", "pnodes", "progrec", "estrec", *CATEGORICAL]


@pytest.fixture(scope="module")
def lung() -> pd.DataFrame:
    frame: pd.DataFrame = load_lung().dropna().reset_index(drop=True)
    return frame


def shares(gbsg2: pd.DataFrame, lung: pd.DataFrame) -> dict[str, dict[str, pd.DataFrame]]:
    cuts = [lung.inst <= 3, (lung.inst > 3) & (lung.inst <= 12), lung.inst > 12]
    return {
        name: {"gbsg2": share, "lung": lung[cut].reset_index(drop=True)}
        for (name, share), cut in zip(split_gbsg2(gbsg2).items(), cuts, strict=True)
    }


@pytest.fixture(scope="module")
def exact_federation(
    tmp_path_factory: pytest.TempPathFactory, gbsg2: pd.DataFrame, lung: pd.DataFrame
) -> Iterator[Federation]:
    root: Path = tmp_path_factory.mktemp("survival-exact")
    with Federation(root, shares(gbsg2, lung), min_cell_count=1) as federation:
        yield federation


@pytest.fixture(scope="module")
def gated_federation(
    tmp_path_factory: pytest.TempPathFactory, gbsg2: pd.DataFrame, lung: pd.DataFrame
) -> Iterator[Federation]:
    root: Path = tmp_path_factory.mktemp("survival-gated")
    with Federation(root, shares(gbsg2, lung), min_cell_count=5) as federation:
        yield federation


def test_km_by_group_equals_lifelines(exact_federation: Federation, gbsg2: pd.DataFrame) -> None:
    task = exact_federation.researcher.tasks.run(
        "km", datasets=["gbsg2"], progress=False, duration="time", event="cens", group="horTh"
    )
    result = task.result
    assert isinstance(result, KMResult) and task.rounds == 2
    for curve in result.curves:
        rows = gbsg2[gbsg2.horTh == curve.group]
        kmf = KaplanMeierFitter().fit(rows.time, rows.cens)
        np.testing.assert_allclose(
            curve.survival, kmf.survival_function_.iloc[:, 0].loc[curve.times], rtol=1e-12
        )
        ci = kmf.confidence_interval_.loc[curve.times]
        np.testing.assert_allclose(curve.ci_lower, ci.iloc[:, 0], rtol=1e-10)
        np.testing.assert_allclose(curve.ci_upper, ci.iloc[:, 1], rtol=1e-10)
        assert curve.median == kmf.median_survival_time_
        lower = median_survival_times(kmf.confidence_interval_).iloc[0, 0]
        assert curve.median_ci_lower == lower


def test_logrank_equals_lifelines(
    exact_federation: Federation, gbsg2: pd.DataFrame, lung: pd.DataFrame
) -> None:
    client = exact_federation.researcher
    for dataset, frame, event, group in (
        ("gbsg2", gbsg2, "cens", "tgrade"),
        ("lung", lung, "status", "sex"),
    ):
        task = client.tasks.run(
            "logrank", datasets=[dataset], progress=False, duration="time", event=event, group=group
        )
        assert isinstance(task.result, LogrankResult)
        ref = multivariate_logrank_test(frame.time, frame[group], frame[event])
        np.testing.assert_allclose(task.result.test_statistic, ref.test_statistic, rtol=1e-9)
        np.testing.assert_allclose(task.result.p_value, ref.p_value, rtol=1e-8)


def _assert_cox(result: CoxResult, ref: CoxPHFitter) -> None:
    np.testing.assert_allclose(result.coef, ref.params_, rtol=1e-6)
    np.testing.assert_allclose(result.se, ref.standard_errors_, rtol=1e-6)
    np.testing.assert_allclose(result.p, ref.summary["p"], rtol=1e-6)
    np.testing.assert_allclose(result.log_likelihood, ref.log_likelihood_, rtol=1e-9)


def _design(frame: pd.DataFrame) -> pd.DataFrame:
    design = pd.get_dummies(
        frame[["time", "cens", *COVARIATES]],
        columns=CATEGORICAL,
        prefix_sep="[T.",
        drop_first=True,
        dtype=float,
    )
    return design.rename(columns=lambda c: f"{c}]" if "[T." in c else c)


def test_cox_efron_equals_lifelines(exact_federation: Federation, gbsg2: pd.DataFrame) -> None:
    client = exact_federation.researcher
    task = client.tasks.run(
        "cox",
        datasets=["gbsg2"],
        progress=False,
        duration="time",
        event="cens",
        covariates=COVARIATES,
        categorical=CATEGORICAL,
    )
    assert isinstance(task.result, CoxResult)
    _assert_cox(task.result, CoxPHFitter().fit(_design(gbsg2), "time", "cens", fit_options=TIGHT))
    assert (task.contributing_nodes, task.withheld_nodes) == (3, 0)


def test_stratified_cox_equals_lifelines_strata(
    exact_federation: Federation, gbsg2: pd.DataFrame
) -> None:
    task = exact_federation.researcher.tasks.run(
        "cox",
        datasets=["gbsg2"],
        progress=False,
        duration="time",
        event="cens",
        covariates=["age", "tsize", "pnodes", "progrec", "horTh"],
        categorical=["horTh"],
        strata="tgrade",
    )
    dropped = ["estrec", "menostat[T.Pre]", "tgrade[T.II]", "tgrade[T.III]"]
    design = _design(gbsg2).drop(columns=dropped)
    design["tgrade"] = gbsg2.tgrade
    ref = CoxPHFitter().fit(design, "time", "cens", strata=["tgrade"], fit_options=TIGHT)
    _assert_cox(task.result, ref)
    assert task.result.strata == ["I", "II", "III"]


def test_coarsened_km_stays_within_its_reported_bound(
    gated_federation: Federation, gbsg2: pd.DataFrame
) -> None:
    task = gated_federation.researcher.tasks.run(
        "km", datasets=["gbsg2"], progress=False, duration="time", event="cens"
    )
    (curve,) = task.result.curves
    assert curve.coarsened and curve.time_step is not None
    kmf = KaplanMeierFitter().fit(gbsg2.time, gbsg2.cens)
    exact = kmf.survival_function_.iloc[:, 0]
    for t, s in exact.items():
        i = int(np.searchsorted(curve.times, t, side="right")) - 1
        fed = 1.0 if i < 0 else curve.survival[i]
        assert abs(fed - s) <= (curve.max_error_start if i < 0 else curve.max_error[i]) + 1e-12
    # no event time is released: interval ends on the grid, each interval >= 5 events
    assert all(e >= 5 for e in curve.events)
    ticks = np.asarray(curve.times) / curve.time_step
    np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-9)
    # the median lies well before the tails: the exact one is inside the reported interval
    assert curve.median_bounds is not None
    assert curve.median_bounds[0] < kmf.median_survival_time_ <= curve.median_bounds[1]
