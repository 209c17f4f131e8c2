"""km, logrank and cox over three shares equal lifelines / statsmodels on the pooled rows.

Exactness tests run with ``min_cell_count=1``: the risk-set rule then moves nothing (a
unit's boundary is its largest duration). The coarsening tests use 5 and 10 and check
the stated guarantees: equal to the pooled analysis of the coarsened data, and ``km``
within its reported ``max_error`` of the exact curve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_lung
from lifelines.statistics import logrank_test, multivariate_logrank_test
from lifelines.utils import median_survival_times

from medfed.algorithms.base import NodeOutput
from medfed.algorithms.registry import get_algorithm
from medfed.algorithms.survival.km import KMParams
from medfed.algorithms.survival.results import CoxResult, KMResult, LogrankResult
from medfed.common.errors import BadRequest
from medfed.node.stores.tables import TableStore
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.local import run_locally

GBSG2_COVARIATES = ["age", "tsize", "pnodes", "progrec", "estrec", "horTh", "menostat", "tgrade"]
GBSG2_CATEGORICAL = ["horTh", "menostat", "tgrade"]
LUNG_COVARIATES = ["age", "sex", "ph.ecog", "ph.karno", "wt.loss"]
TIGHT = {"precision": 1e-14, "r_precision": 1e-16}  # lifelines run to convergence
FIT = {"fit_options": TIGHT}
G = {"duration": "time", "event": "cens"}  # GBSG2's survival columns
COX = {**G, "covariates": GBSG2_COVARIATES, "categorical": GBSG2_CATEGORICAL}


@pytest.fixture(scope="module")
def gbsg2() -> pd.DataFrame:
    return load_gbsg2()


@pytest.fixture(scope="module")
def gbsg2_shares(gbsg2: pd.DataFrame) -> list[pd.DataFrame]:
    return list(split_gbsg2(gbsg2).values())


@pytest.fixture(scope="module")
def lung() -> pd.DataFrame:
    frame: pd.DataFrame = load_lung().dropna().reset_index(drop=True)
    return frame


def split_lung(lung: pd.DataFrame) -> list[pd.DataFrame]:
    """By institution: 1-3, 4-12, 13 and above (44, 63 and 60 patients)."""
    cuts = [lung.inst <= 3, (lung.inst > 3) & (lung.inst <= 12), lung.inst > 12]
    return [lung[c].reset_index(drop=True) for c in cuts]


def stores(shares: list[pd.DataFrame]) -> list[TableStore]:
    return [TableStore(s, name=f"share{i}") for i, s in enumerate(shares)]


def cox_design(frame: pd.DataFrame) -> pd.DataFrame:
    """Pooled design with medfed's dummy names (first sorted level as reference)."""
    design = pd.get_dummies(
        frame[["time", "cens", *GBSG2_COVARIATES]],
        columns=GBSG2_CATEGORICAL,
        prefix_sep="[T.",
        drop_first=True,
        dtype=float,
    )
    return design.rename(columns=lambda c: f"{c}]" if "[T." in c else c)


def assert_km_equals_lifelines(
    curve: dict, durations: pd.Series, events: pd.Series, alpha: float
) -> None:
    kmf = KaplanMeierFitter(alpha=alpha).fit(durations, events)
    times = np.asarray(curve["times"])
    np.testing.assert_array_equal(times, np.unique(durations[events == 1]))
    np.testing.assert_allclose(
        curve["survival"], kmf.survival_function_.iloc[:, 0].loc[times], rtol=1e-12, atol=1e-15
    )
    ci = kmf.confidence_interval_.loc[times]
    np.testing.assert_allclose(curve["ci_lower"], ci.iloc[:, 0], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(curve["ci_upper"], ci.iloc[:, 1], rtol=1e-10, atol=1e-14)
    table = kmf.event_table.loc[times]
    assert curve["at_risk"] == table["at_risk"].astype(int).tolist()
    assert curve["events"] == table["observed"].astype(int).tolist()
    assert curve["median"] == finite(kmf.median_survival_time_)
    lower, upper = median_survival_times(kmf.confidence_interval_).iloc[0]
    assert (curve["median_ci_lower"], curve["median_ci_upper"]) == (finite(lower), finite(upper))
    assert not curve["coarsened"] and not any(curve["max_error"])


def finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def test_km_by_group_equals_lifelines_on_gbsg2(
    gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame]
) -> None:
    params = {**G, "group": "tgrade"}
    result = run_locally("km", params, stores(gbsg2_shares), min_cell_count=1)
    assert [c["group"] for c in result["curves"]] == ["I", "II", "III"]
    for curve in result["curves"]:
        rows = gbsg2[gbsg2.tgrade == curve["group"]]
        assert curve["rows"] == len(rows)
        assert_km_equals_lifelines(curve, rows.time, rows.cens, 0.05)


def test_km_without_group_and_other_alpha_equals_lifelines_on_lung(lung: pd.DataFrame) -> None:
    params = {"duration": "time", "event": "status", "alpha": 0.1}
    result = run_locally("km", params, stores(split_lung(lung)), min_cell_count=1)
    (curve,) = result["curves"]
    assert curve["group"] is None and result["rows"] == len(lung)
    assert_km_equals_lifelines(curve, lung.time, lung.status, 0.1)


def test_km_where_filter_equals_lifelines_on_the_filtered_rows(
    gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame]
) -> None:
    where = {"column": "age", "op": ">=", "value": 50}
    params = {**G, "where": where}
    (curve,) = run_locally("km", params, stores(gbsg2_shares), min_cell_count=1)["curves"]
    rows = gbsg2[gbsg2.age >= 50]
    assert_km_equals_lifelines(curve, rows.time, rows.cens, 0.05)


@pytest.mark.parametrize("group", ["tgrade", "horTh", "menostat"])
def test_logrank_equals_lifelines_on_gbsg2(
    gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame], group: str
) -> None:
    params = {**G, "group": group}
    result = run_locally("logrank", params, stores(gbsg2_shares), min_cell_count=1)
    ref = multivariate_logrank_test(gbsg2.time, gbsg2[group], gbsg2.cens)
    assert result["df"] == ref.degrees_of_freedom
    np.testing.assert_allclose(result["test_statistic"], ref.test_statistic, rtol=1e-9)
    np.testing.assert_allclose(result["p_value"], ref.p_value, rtol=1e-8)
    if gbsg2[group].nunique() == 2:
        a, b = (gbsg2[gbsg2[group] == level] for level in result["groups"])
        two = logrank_test(a.time, b.time, a.cens, b.cens)
        np.testing.assert_allclose(result["test_statistic"], two.test_statistic, rtol=1e-9)
        np.testing.assert_allclose(result["p_value"], two.p_value, rtol=1e-8)


def test_logrank_equals_lifelines_on_lung(lung: pd.DataFrame) -> None:
    params = {"duration": "time", "event": "status", "group": "sex"}
    result = run_locally("logrank", params, stores(split_lung(lung)), min_cell_count=1)
    ref = multivariate_logrank_test(lung.time, lung.sex, lung.status)
    np.testing.assert_allclose(result["test_statistic"], ref.test_statistic, rtol=1e-9)
    np.testing.assert_allclose(result["p_value"], ref.p_value, rtol=1e-8)
    assert result["observed"] == [int(lung.status[lung.sex == s].sum()) for s in (1, 2)]


def assert_cox_equals(result: dict, ref: CoxPHFitter, rtol: float = 1e-6) -> None:
    assert result["covariates"] == list(ref.params_.index)
    np.testing.assert_allclose(result["coef"], ref.params_, rtol=rtol)
    np.testing.assert_allclose(result["se"], ref.standard_errors_, rtol=rtol)
    np.testing.assert_allclose(result["p"], ref.summary["p"], rtol=rtol)
    np.testing.assert_allclose(result["log_likelihood"], ref.log_likelihood_, rtol=rtol)


def test_cox_efron_equals_lifelines_on_gbsg2(
    gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame]
) -> None:
    result = run_locally("cox", COX, stores(gbsg2_shares), min_cell_count=1)
    design = cox_design(gbsg2)
    assert_cox_equals(result, CoxPHFitter().fit(design, "time", "cens", fit_options=TIGHT))
    # lifelines' default stopping rule leaves its own estimate ~1e-5 from the maximum
    default = CoxPHFitter().fit(design, "time", "cens")
    np.testing.assert_allclose(result["coef"], default.params_, rtol=1e-4)
    np.testing.assert_allclose(result["se"], default.standard_errors_, rtol=1e-4)
    assert result["rows"] == len(gbsg2) and result["events"] == int(gbsg2.cens.sum())
    ref = CoxPHFitter().fit(design, "time", "cens", fit_options=TIGHT)
    lr = ref.log_likelihood_ratio_test()
    np.testing.assert_allclose(result["lr_statistic"], lr.test_statistic, rtol=1e-6)
    np.testing.assert_allclose(result["hr_lower"], np.exp(ref.confidence_intervals_.iloc[:, 0]))


def test_cox_efron_equals_lifelines_on_lung_with_ties(lung: pd.DataFrame) -> None:
    assert lung.time[lung.status == 1].duplicated().any()  # tied event times exist
    params = {"duration": "time", "event": "status", "covariates": LUNG_COVARIATES}
    result = run_locally("cox", params, stores(split_lung(lung)), min_cell_count=1)
    ref = CoxPHFitter().fit(
        lung[["time", "status", *LUNG_COVARIATES]], "time", "status", fit_options=TIGHT
    )
    assert_cox_equals(result, ref)


def test_cox_efron_assembled_in_small_chunks_equals_lifelines(
    lung: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub expands Efron's tied-event terms a chunk of times at a time (bounded memory
    for millions of events); chunks of 2 terms give lifelines' fit on lung's ties."""
    from medfed.algorithms.survival import cox_math

    monkeypatch.setattr(cox_math, "TERMS_PER_CHUNK", 2)
    params = {"duration": "time", "event": "status", "covariates": LUNG_COVARIATES}
    result = run_locally("cox", params, stores(split_lung(lung)), min_cell_count=1)
    ref = CoxPHFitter().fit(
        lung[["time", "status", *LUNG_COVARIATES]], "time", "status", fit_options=TIGHT
    )
    assert_cox_equals(result, ref)


def test_cox_stratified_equals_lifelines_strata(
    gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame]
) -> None:
    covariates = ["age", "tsize", "pnodes", "progrec", "horTh", "tgrade"]
    params = {
        **G,
        "covariates": covariates,
        "categorical": ["horTh", "tgrade"],
        "strata": "menostat",
    }
    result = run_locally("cox", params, stores(gbsg2_shares), min_cell_count=1)
    design = cox_design(gbsg2).drop(columns=["estrec", "menostat[T.Pre]"])
    design["menostat"] = gbsg2.menostat
    ref = CoxPHFitter().fit(design, "time", "cens", strata=["menostat"], fit_options=TIGHT)
    assert_cox_equals(result, ref)
    assert result["strata"] == ["Post", "Pre"]


@pytest.mark.parametrize("data", ["lung", "gbsg2"])
def test_cox_breslow_equals_statsmodels_phreg(
    data: str, lung: pd.DataFrame, gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame]
) -> None:
    if data == "lung":
        frame, shares, event, covariates = lung, split_lung(lung), "status", LUNG_COVARIATES
    else:
        frame, shares, event = gbsg2, gbsg2_shares, "cens"
        covariates = ["age", "tsize", "pnodes", "progrec", "estrec"]
    params = {"duration": "time", "event": event, "covariates": covariates, "ties": "breslow"}
    result = run_locally("cox", params, stores(shares), min_cell_count=1)
    ref = sm.PHReg(frame.time, frame[covariates], status=frame[event], ties="breslow").fit()
    np.testing.assert_allclose(result["coef"], ref.params, rtol=1e-6)
    np.testing.assert_allclose(result["se"], ref.bse, rtol=1e-6)
    np.testing.assert_allclose(result["p"], ref.pvalues, rtol=1e-6)
    np.testing.assert_allclose(result["log_likelihood"], ref.llf, rtol=1e-9)


# --- coarsening: the risk-set rule at min_cell_count > 1 -------------------------------


def coarsened(share: pd.DataFrame, k: int, by: str | None = None) -> pd.DataFrame:
    """The rule, written out again: durations above the k-th largest move down to it."""
    out = share.copy()
    groups = [out.index] if by is None else [g.index for _, g in out.groupby(by)]
    for index in groups:
        boundary = np.sort(out.loc[index, "time"].to_numpy())[-k]
        out.loc[index, "time"] = np.minimum(out.loc[index, "time"], boundary)
    return out


@pytest.mark.parametrize("k", [5, 10])
def test_coarsened_km_is_exact_for_coarsened_data_and_within_its_bound(
    gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame], k: int
) -> None:
    params = {**G, "group": "horTh"}
    result = KMResult.model_validate(
        run_locally("km", params, stores(gbsg2_shares), min_cell_count=k)
    )
    moved = pd.concat([coarsened(s, k, by="horTh") for s in gbsg2_shares])
    for curve in result.curves:
        assert curve.coarsened
        rows = moved[moved.horTh == curve.group]
        kmf = KaplanMeierFitter().fit(rows.time, rows.cens)
        # at the released interval ends, exactly the pooled curve of the coarsened data
        np.testing.assert_allclose(
            curve.survival, kmf.survival_function_at_times(curve.times), rtol=1e-12
        )
        exact = gbsg2[gbsg2.horTh == curve.group]
        truth = KaplanMeierFitter().fit(exact.time, exact.cens).survival_function_.iloc[:, 0]
        first_boundary = min(
            s[s.horTh == curve.group].time.sort_values().iloc[-k] for s in gbsg2_shares
        )
        for t, s in truth.items():
            i = int(np.searchsorted(curve.times, t, side="right")) - 1
            fed = 1.0 if i < 0 else curve.survival[i]
            bound = curve.max_error_start if i < 0 else curve.max_error[i]
            assert abs(fed - s) <= bound + 1e-12, (t, fed, s, bound)
        for t, fed in zip(curve.times, curve.survival, strict=True):
            if t < first_boundary:  # exact before any boundary
                assert abs(fed - float(truth[truth.index <= t].iloc[-1])) < 1e-12


@pytest.mark.parametrize("data", ["gbsg2", "lung"])
def test_km_under_the_default_policy_releases_no_event_time(
    data: str, gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame], lung: pd.DataFrame
) -> None:
    # k = 5: the curve is given at the ends of grid intervals that hold at least 5 events;
    # there it equals lifelines' curve on the pooled rows (before any tail boundary)
    frame, shares, event = (
        (gbsg2, gbsg2_shares, "cens") if data == "gbsg2" else (lung, split_lung(lung), "status")
    )
    params = {"duration": "time", "event": event}
    result = KMResult.model_validate(run_locally("km", params, stores(shares)))
    (curve,) = result.curves
    kmf = KaplanMeierFitter().fit(frame.time, frame[event])
    step = curve.time_step
    assert step is not None and step > 0
    event_times = set(frame.time[frame[event] == 1])
    ticks = np.asarray(curve.times) / step
    np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-9)  # grid points only
    assert all(e >= 5 for e in curve.events) and sum(curve.events) == curve.events_total
    assert curve.events_total == int(frame[event].sum())
    first_boundary = min(s.time.sort_values().iloc[-5] for s in shares)
    exact_ends = [t for t in curve.times if t < first_boundary]
    assert len(exact_ends) >= 5 and not set(exact_ends) <= event_times
    np.testing.assert_allclose(
        curve.survival[: len(exact_ends)], kmf.survival_function_at_times(exact_ends), rtol=1e-12
    )
    ci = kmf.confidence_interval_
    for t, lo, hi in zip(exact_ends, curve.ci_lower, curve.ci_upper, strict=False):
        row = ci[ci.index <= t].iloc[-1]
        assert abs(lo - row.iloc[0]) < 1e-10 and abs(hi - row.iloc[1]) < 1e-10
    assert curve.median_bounds is not None and curve.median == curve.median_bounds[1]
    low, high = curve.median_bounds
    assert low < kmf.median_survival_time_ <= high
    assert "no event time released" in result.summary()


def test_coarsened_logrank_and_cox_equal_the_coarsened_pooled_analysis(
    gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame]
) -> None:
    k = 5
    params = {**G, "group": "tgrade"}
    result = run_locally("logrank", params, stores(gbsg2_shares), min_cell_count=k)
    assert result["coarsened"]
    moved = pd.concat([coarsened(s, k, by="tgrade") for s in gbsg2_shares])
    ref = multivariate_logrank_test(moved.time, moved.tgrade, moved.cens)
    np.testing.assert_allclose(result["test_statistic"], ref.test_statistic, rtol=1e-9)
    raw = multivariate_logrank_test(gbsg2.time, gbsg2.tgrade, gbsg2.cens).test_statistic
    assert abs(result["test_statistic"] - raw) < 0.05 * raw

    fed = run_locally("cox", COX, stores(gbsg2_shares), min_cell_count=k)
    assert fed["coarsened"]
    moved = pd.concat([coarsened(s, k) for s in gbsg2_shares])
    assert_cox_equals(fed, CoxPHFitter().fit(cox_design(moved), "time", "cens", fit_options=TIGHT))
    exact = CoxPHFitter().fit(cox_design(gbsg2), "time", "cens", fit_options=TIGHT)
    shift = np.abs(np.asarray(fed["coef"]) - exact.params_) / exact.standard_errors_
    assert shift.max() < 0.1  # the stated, measured bound: a tenth of a standard error


# --- gate refusals and errors ------------------------------------------------------------


def test_a_node_with_fewer_than_min_rows_withholds(gbsg2_shares: list[pd.DataFrame]) -> None:
    # the third node has 9 rows: it withholds (the reason stays in its log, without its
    # row count), and km, logrank and cox are exact over the two others
    small = [*gbsg2_shares[:2], gbsg2_shares[2].iloc[:9]]
    others = pd.concat(gbsg2_shares[:2])
    for name, extra in (
        ("km", {}),
        ("logrank", {"group": "horTh"}),
        ("cox", {"covariates": ["age"]}),
    ):
        params = {**G, **extra}
        withheld: list[str] = []
        result = run_locally(
            name, params, stores(small), min_cell_count=1, min_rows=10, withheld=withheld
        )
        assert withheld and all(w.startswith(f"gate: min_rows: {name} needs") for w in withheld)
        assert not any("9" in w for w in withheld)
        assert result["suppressed_nodes"] == 1
        if name == "km":
            (curve,) = result["curves"]
            assert result["rows"] == len(others)
            assert_km_equals_lifelines(curve, others.time, others.cens, 0.05)
        elif name == "logrank":
            ref = multivariate_logrank_test(others.time, others.horTh, others.cens)
            np.testing.assert_allclose(result["test_statistic"], ref.test_statistic, rtol=1e-9)
            np.testing.assert_allclose(result["p_value"], ref.p_value, rtol=1e-8)
        else:
            ref = CoxPHFitter().fit(others[["time", "cens", "age"]], "time", "cens", **FIT)
            assert_cox_equals(result, ref)
            assert result["rows"] == len(others)
    # when every node has too few rows, no node contributes
    tiny = [share.iloc[:9] for share in gbsg2_shares]
    withheld = []
    with pytest.raises(BadRequest, match="km: no node gave an unsuppressed answer"):
        run_locally("km", G, stores(tiny), min_cell_count=1, min_rows=10, withheld=withheld)
    assert len(withheld) == 3


def test_a_rare_group_level_or_stratum_withholds_the_node(
    gbsg2_shares: list[pd.DataFrame],
) -> None:
    # the second node keeps 2 rows of its rarest grade: at k = 5 it withholds km by
    # tgrade, cox stratified by tgrade and cox with tgrade as a covariate. The results
    # equal the pooled analysis of the two other nodes (each unit coarsened by the
    # risk-set rule, which is exact for the coarsened data)
    k = 5
    share = gbsg2_shares[1]
    level = share.tgrade.value_counts().idxmin()
    rare = pd.concat([share[share.tgrade != level], share[share.tgrade == level].iloc[:2]])
    shares = stores([gbsg2_shares[0], rare, gbsg2_shares[2]])
    others = [gbsg2_shares[0], gbsg2_shares[2]]

    withheld: list[str] = []
    km = run_locally("km", {**G, "group": "tgrade"}, shares, k, withheld=withheld)
    assert len(withheld) == 2  # both rounds
    assert all(w.startswith("gate: min_cell_count: a group level of 'tgrade'") for w in withheld)
    assert km["suppressed_nodes"] == 1
    moved = pd.concat([coarsened(s, k, by="tgrade") for s in others])
    assert [c["group"] for c in km["curves"]] == ["I", "II", "III"]
    for curve in km["curves"]:
        rows = moved[moved.tgrade == curve["group"]]
        assert curve["rows"] == len(rows)
        kmf = KaplanMeierFitter().fit(rows.time, rows.cens)
        np.testing.assert_allclose(
            curve["survival"], kmf.survival_function_at_times(curve["times"]), rtol=1e-12
        )

    withheld.clear()
    params = {**G, "covariates": ["age"], "strata": "tgrade"}
    cox = run_locally("cox", params, shares, k, withheld=withheld)
    assert withheld and all(
        w.startswith("gate: min_cell_count: a stratum level of 'tgrade'") for w in withheld
    )
    assert cox["suppressed_nodes"] == 1 and cox["strata"] == ["I", "II", "III"]
    data = moved[["time", "cens", "age", "tgrade"]]
    assert_cox_equals(cox, CoxPHFitter().fit(data, "time", "cens", strata=["tgrade"], **FIT))

    withheld.clear()
    params = {**G, "covariates": ["age", "tgrade"], "categorical": ["tgrade"]}
    cox = run_locally("cox", params, shares, k, withheld=withheld)
    assert withheld and all(
        w.startswith("gate: min_cell_count: a level of categorical covariate 'tgrade'")
        for w in withheld
    )
    assert cox["suppressed_nodes"] == 1
    moved = pd.concat([coarsened(s, k) for s in others])
    design = pd.get_dummies(
        moved[["time", "cens", "age", "tgrade"]],
        columns=["tgrade"],
        prefix_sep="[T.",
        drop_first=True,
        dtype=float,
    ).rename(columns=lambda c: f"{c}]" if "[T." in c else c)
    assert_cox_equals(cox, CoxPHFitter().fit(design, "time", "cens", **FIT))
    # the texts name the rule and the column, never the level or its count
    assert not any(f"'{level}'" in w or "2 rows" in w for w in withheld)


def test_cox_with_more_parameters_than_a_third_of_the_rows_withholds_the_node(
    gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame]
) -> None:
    a, b, c = gbsg2_shares
    small = [a, b.iloc[:20], c]
    params = {**G, "covariates": GBSG2_COVARIATES[:5]}
    withheld: list[str] = []
    result = run_locally(
        "cox", params, stores(small), min_cell_count=1, max_param_fraction=1 / 3, withheld=withheld
    )
    assert withheld == [] and result["suppressed_nodes"] == 0
    pooled = pd.concat(small)
    ref = CoxPHFitter().fit(pooled[["time", "cens", *GBSG2_COVARIATES[:5]]], "time", "cens", **FIT)
    assert_cox_equals(result, ref)
    # the full model has more parameters than a third of the 20 rows: that node withholds
    result = run_locally(
        "cox", COX, stores(small), min_cell_count=1, max_param_fraction=1 / 3, withheld=withheld
    )
    assert withheld and all(w.startswith("gate: max_param_fraction") for w in withheld)
    assert not any("20" in w for w in withheld)  # the node's row count stays at the node
    assert result["suppressed_nodes"] == 1 and result["rows"] == len(a) + len(c)
    ref = CoxPHFitter().fit(cox_design(pd.concat([a, c])), "time", "cens", **FIT)
    assert_cox_equals(result, ref)


def test_bad_requests_name_the_problem(gbsg2_shares: list[pd.DataFrame]) -> None:
    s = stores(gbsg2_shares)
    with pytest.raises(BadRequest, match="unknown column 'days'"):
        run_locally("km", {"duration": "days", "event": "cens"}, s)
    with pytest.raises(BadRequest, match="'horTh' is string; list it in categorical"):
        run_locally("cox", {**G, "covariates": ["horTh"]}, s)
    with pytest.raises(BadRequest, match="ties"):
        run_locally("cox", {**G, "covariates": ["age"], "ties": "exact"}, s)


def test_bad_values_withhold_the_node_without_naming_them(
    gbsg2_shares: list[pd.DataFrame],
) -> None:
    # a value check at the node is a data-dependent refusal: the node withholds, the text
    # stays in its log, and the researcher sees only that no node (or fewer) contributed
    s = stores(gbsg2_shares)
    withheld: list[str] = []
    with pytest.raises(BadRequest, match="km: no node gave an unsuppressed answer"):
        run_locally("km", {"duration": "time", "event": "pnodes"}, s, 1, withheld=withheld)
    assert withheld == ["km: event 'pnodes' must be 0/1 (1 = event observed)"] * 3
    # one negative duration at one node: that node withholds, the others are exact
    bad = gbsg2_shares[2].reset_index(drop=True)
    bad.loc[3, "time"] = -17
    withheld.clear()
    result = run_locally(
        "km", G, stores([*gbsg2_shares[:2], bad]), min_cell_count=1, withheld=withheld
    )
    assert withheld and all(
        w == "km: duration 'time' has negative or infinite values" for w in withheld
    )
    assert result["suppressed_nodes"] == 1
    others = pd.concat(gbsg2_shares[:2])
    (curve,) = result["curves"]
    assert_km_equals_lifelines(curve, others.time, others.cens, 0.05)


def test_cox_singular_design_and_non_convergence_are_clear_errors(
    gbsg2_shares: list[pd.DataFrame],
) -> None:
    twice = [s.assign(age2=2 * s.age + 1) for s in gbsg2_shares]
    params = {**G, "covariates": ["age", "tsize", "age2"]}
    with pytest.raises(BadRequest, match=r"singular design.*age, .*age2"):
        run_locally("cox", params, stores(twice), min_cell_count=1)
    constant = [s.assign(one=1.0) for s in gbsg2_shares]
    params["covariates"] = ["age", "one"]
    with pytest.raises(BadRequest, match="singular design: covariate 'one' is constant"):
        run_locally("cox", params, stores(constant), min_cell_count=1)
    params = {**G, "covariates": ["age"], "max_iter": 2}
    with pytest.raises(BadRequest, match="did not converge in 2 iterations"):
        run_locally("cox", params, stores(gbsg2_shares), min_cell_count=1)
    separated = [s.assign(sep=s.cens * 1.0) for s in gbsg2_shares]  # monotone likelihood
    params = {**G, "covariates": ["sep"]}
    with pytest.raises(BadRequest, match="monotone likelihood"):
        run_locally("cox", params, stores(separated), min_cell_count=1)


def test_a_node_that_drops_out_after_round_zero_fails_the_task() -> None:
    km = get_algorithm("km")
    params = KMParams(duration="time", event="cens")
    outputs = [NodeOutput(node_id=1, dataset_id=1, status="ok", payload={"rows": 10})]
    with pytest.raises(BadRequest, match="contributed to round 0 withheld a later round"):
        km.aggregate(params, 1, {"times": [1.0], "datasets": [1, 2]}, outputs)


def test_results_have_a_summary_and_a_plot(
    gbsg2_shares: list[pd.DataFrame], tmp_path: Path
) -> None:
    s = stores(gbsg2_shares)
    km = KMResult.model_validate(run_locally("km", {**G, "group": "horTh"}, s, 1))
    lr = LogrankResult.model_validate(run_locally("logrank", {**G, "group": "horTh"}, s, 1))
    params = {**G, "covariates": ["age", "horTh"], "categorical": ["horTh"]}
    cox = CoxResult.model_validate(run_locally("cox", params, s, 1))
    assert "median" in km.summary() and "yes" in km.summary()
    assert "chi2" in lr.summary()
    assert "horTh[T.yes]" in cox.summary() and "exp(coef)" in cox.summary()
    for name, result in (("km", km), ("cox", cox)):
        path = tmp_path / f"{name}.png"
        result.plot(str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("group", ["horTh", "menostat"])
def test_coarsened_logrank_reports_a_bound_that_holds_the_raw_test(
    gbsg2: pd.DataFrame, gbsg2_shares: list[pd.DataFrame], group: str
) -> None:
    # default policy (k = 5): the statistic is that of the coarsened data; its reported
    # range holds lifelines' statistic and p value on the raw pooled rows
    params = {**G, "group": group}
    test = run_locally("logrank", params, stores(gbsg2_shares))
    ref = multivariate_logrank_test(gbsg2.time, gbsg2[group], gbsg2.cens)
    low, high = test["statistic_bounds"]
    assert test["coarsened"] and low <= ref.test_statistic <= high
    p_low, p_high = test["p_value_bounds"]
    assert p_low <= ref.p_value <= p_high
    assert test["p_value_may_cross_005"] is (p_low < 0.05 <= p_high)
    assert "uncoarsened chi2 in" in LogrankResult.model_validate(test).summary()


def test_logrank_with_a_group_of_few_events_is_refused_uniformly(
    gbsg2_shares: list[pd.DataFrame],
) -> None:
    # a group with 1..k-1 events pooled, and one with none, get the same refusal
    def few(events: int) -> list[pd.DataFrame]:
        out = []
        for share in gbsg2_shares:
            share = share.copy()
            rows = share.index[share.horTh == "yes"]
            share.loc[rows, "cens"] = 0
            out.append(share)
        out[0].loc[out[0].index[out[0].horTh == "yes"][:events], "cens"] = 1
        return out

    messages = set()
    for events in (0, 3):
        with pytest.raises(BadRequest) as err:
            run_locally("logrank", {**G, "group": "horTh"}, stores(few(events)))
        messages.add(err.value.message)
    assert len(messages) == 1 and "too few events" in messages.pop()
