"""The reported effect of the risk-set rule holds the truth: Cox coefficient and p value
ranges (``cox_bounds``) and log-rank ranges for any number of groups (``bounds``) contain
lifelines' fit and test on the raw pooled rows, on GBSG2 and lung split unevenly over 3
nodes at k = 5, 10 (and 20 for log-rank), and for random data and splits (hypothesis)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lifelines import CoxPHFitter
from lifelines.datasets import load_lung
from lifelines.statistics import multivariate_logrank_test

from medfed.algorithms.survival.cox_bounds import CoxBound, with_bound
from medfed.algorithms.survival.results import CoxResult, LogrankResult
from medfed.common.errors import BadRequest
from medfed.node.stores.tables import TableStore
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.local import run_locally

TIGHT = {"precision": 1e-14, "r_precision": 1e-16}


def stores(shares: list[pd.DataFrame]) -> list[TableStore]:
    return [TableStore(s, name=f"share{i}") for i, s in enumerate(shares)]


def design(frame: pd.DataFrame, columns: list[str], categorical: list[str]) -> pd.DataFrame:
    out = pd.get_dummies(
        frame[columns], columns=categorical, prefix_sep="[T.", drop_first=True, dtype=float
    )
    return out.rename(columns=lambda c: f"{c}]" if "[T." in c else c)


def raw_cox(frame: pd.DataFrame, params: dict, strata: str | None = None) -> CoxPHFitter:
    columns = [params["duration"], params["event"], *params["covariates"]]
    columns += [strata] if strata else []
    data = design(frame[columns], columns, params["categorical"])
    return CoxPHFitter().fit(
        data, params["duration"], params["event"], strata=strata, fit_options=TIGHT
    )


def assert_cox_bound_holds(result: dict, ref: CoxPHFitter) -> list[float]:
    """The raw fit's coefficients and p values lie in the ranges; widths in se units."""
    assert result["coarsened"] and result["coef_bounds"] is not None
    widths = []
    for i, name in enumerate(result["covariates"]):
        low, high = result["coef_bounds"][i]
        assert low <= ref.params_[name] <= high, (name, low, ref.params_[name], high)
        p_low, p_high = result["p_value_bounds"][i]
        assert p_low <= ref.summary.p[name] <= p_high, name
        assert result["p_value_may_cross_005"][i] is (p_low < 0.05 <= p_high)
        widths.append((high - low) / result["se"][i])
    return widths


GBSG2 = {"duration": "time", "event": "cens"}
SETS = [
    (["age", "tsize", "pnodes", "progrec", "horTh"], ["horTh"], None),
    (["age", "pnodes", "estrec", "tgrade"], ["tgrade"], None),
    (["tsize", "pnodes", "progrec"], [], "horTh"),
]


@pytest.fixture(scope="module")
def gbsg2() -> pd.DataFrame:
    return load_gbsg2()


@pytest.mark.parametrize("k", [5, 10])
@pytest.mark.parametrize("covariates,categorical,strata", SETS)
def test_cox_bounds_hold_the_raw_gbsg2_fit(
    gbsg2: pd.DataFrame, k: int, covariates: list[str], categorical: list[str], strata: str | None
) -> None:
    params = {**GBSG2, "covariates": covariates, "categorical": categorical}
    if strata:
        params["strata"] = strata
    shares = list(split_gbsg2(gbsg2).values())  # 161, 216 and 309 rows
    result = run_locally("cox", params, stores(shares), min_cell_count=k)
    widths = assert_cox_bound_holds(result, raw_cox(gbsg2, params, strata))
    assert result["bound"] in ("proven", "first_order_estimate")
    assert max(widths) < (6 if k == 5 else 20)  # finite, a few standard errors wide
    assert "uncoarsened fit" in CoxResult.model_validate(result).summary()


def test_cox_bounds_hold_the_raw_lung_fit() -> None:
    lung = load_lung().dropna().reset_index(drop=True)
    shares = [lung[lung.inst <= 3], lung[(lung.inst > 3) & (lung.inst <= 12)], lung[lung.inst > 12]]
    params = {"duration": "time", "event": "status", "covariates": ["age", "sex", "wt.loss"]}
    params["categorical"] = []
    shares = [s.reset_index(drop=True) for s in shares]
    result = run_locally("cox", params, stores(shares), min_cell_count=5)
    assert_cox_bound_holds(result, raw_cox(lung, params))


def test_an_exact_cox_fit_carries_no_bound(gbsg2: pd.DataFrame) -> None:
    shares = list(split_gbsg2(gbsg2).values())
    params = {**GBSG2, "covariates": ["age", "pnodes"]}
    result = run_locally("cox", params, stores(shares), min_cell_count=1)
    assert not result["coarsened"] and result["coef_bounds"] is None and result["bound"] is None


def test_the_p_value_flag_is_set_exactly_when_the_range_straddles_005() -> None:
    # coefficient 0.2 with se 0.1 (p = 0.0455): a range reaching 0 may cross, one
    # around 0.5 may not
    base = {"coef": [0.2, 0.5], "se": [0.1, 0.1]}
    bound = CoxBound(
        delta_low=np.array([-0.05, -0.05]),
        delta_high=np.array([0.05, 0.05]),
        se_low=np.array([0.09, 0.09]),
        se_high=np.array([0.11, 0.11]),
        radius=0.05,
        kind="proven",
    )
    out = with_bound(base, bound, np.ones(2))
    assert out["p_value_may_cross_005"] == [True, False]
    (low, high), _ = out["p_value_bounds"]
    assert low < 0.05 <= high
    np.testing.assert_allclose(out["coef_bounds"], [[0.15, 0.25], [0.45, 0.55]])


@pytest.mark.parametrize("k", [5, 10, 20])
@pytest.mark.parametrize("group", ["tgrade", "horTh", "menostat"])
def test_logrank_bounds_hold_the_raw_test_for_any_number_of_groups(
    gbsg2: pd.DataFrame, k: int, group: str
) -> None:
    shares = list(split_gbsg2(gbsg2).values())
    try:
        test = run_locally("logrank", {**GBSG2, "group": group}, stores(shares), min_cell_count=k)
    except BadRequest as exc:  # a group with fewer than k events pooled: refused
        assert "too few events" in exc.message
        return
    ref = multivariate_logrank_test(gbsg2.time, gbsg2[group], gbsg2.cens)
    low, high = test["statistic_bounds"]
    assert low <= ref.test_statistic and (high is None or ref.test_statistic <= high)
    p_low, p_high = test["p_value_bounds"]
    assert p_low <= ref.p_value <= p_high
    assert test["p_value_may_cross_005"] is (p_low < 0.05 <= p_high)
    if test["df"] > 1:
        assert "uncoarsened chi2 in" in LogrankResult.model_validate(test).summary()


@st.composite
def data_and_split(draw: st.DrawFn) -> tuple[pd.DataFrame, list[pd.DataFrame], int]:
    n = draw(st.integers(min_value=60, max_value=120))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    x = rng.normal(size=n)
    group = rng.choice(["a", "b", "c"], size=n)
    time = np.ceil(rng.exponential(20 * np.exp(-0.5 * x - 0.4 * (group == "b")))).astype(int)
    event = (rng.random(n) < 0.75).astype(int)
    frame = pd.DataFrame(
        {"time": time, "event": event, "x": x, "z": rng.normal(size=n), "g": group}
    )
    owner = rng.choice(3, size=n, p=[0.2, 0.3, 0.5])
    owner[:60] = np.repeat([0, 1, 2], 20)  # every node has at least 20 rows
    shares = [frame[owner == i].reset_index(drop=True) for i in range(3)]
    return frame, shares, draw(st.integers(min_value=2, max_value=6))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_and_split())
def test_the_truth_is_always_within_the_reported_ranges(
    case: tuple[pd.DataFrame, list[pd.DataFrame], int],
) -> None:
    frame, shares, k = case
    params = {"duration": "time", "event": "event", "covariates": ["x", "z"], "categorical": []}
    try:
        result = run_locally("cox", params, stores(shares), min_cell_count=k, min_rows=5)
        test = run_locally(
            "logrank", {**params, "group": "g"}, stores(shares), min_cell_count=k, min_rows=5
        )
    except BadRequest:
        return  # a refused or diverging fit reports nothing to check
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = raw_cox(frame, params)
    if result["coarsened"] and result["coef_bounds"] is not None:
        for i, name in enumerate(result["covariates"]):
            low, high = result["coef_bounds"][i]
            assert low - 1e-9 <= ref.params_[name] <= high + 1e-9
    raw = multivariate_logrank_test(frame.time, frame.g, frame.event).test_statistic
    if test["statistic_bounds"] is not None:
        low, high = test["statistic_bounds"]
        assert low - 1e-9 <= raw and (high is None or raw <= high + 1e-9)
