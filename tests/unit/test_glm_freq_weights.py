"""``glm`` with ``freq_weights`` on aggregated GBSG2 against statsmodels' GLM with freq_weights.

GBSG2 (lifelines) is reduced to a few covariates with few values each (hormone therapy,
menopausal status, tumour grade, age decade, tumour size over 25 mm) and aggregated into
its unique covariate-and-outcome patterns with a ``count`` column. The aggregated rows are
dealt unevenly to three in-process datasets and fitted with :func:`run_locally` (the real
gate, k = 5); the references are ``statsmodels`` GLM fits on the pooled aggregated rows
with ``freq_weights=count``, and the federated fit of the expanded (original) rows.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from lifelines.datasets import load_gbsg2

from medfed.algorithms.base import LocalContext
from medfed.algorithms.registry import get_algorithm
from medfed.common.errors import BadRequest
from medfed.node.gate import GatePolicy, apply_gate
from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally

RTOL = 1e-6

COVARIATES = ["horTh", "menostat", "tgrade", "decade", "big"]
RHS = " + ".join(COVARIATES)  # text columns: patsy names them as medfed does (tgrade[T.II])
FAMILIES = {
    "gaussian": sm.families.Gaussian,
    "binomial": sm.families.Binomial,
    "poisson": sm.families.Poisson,
}
OUTCOME = {"gaussian": "nodes", "binomial": "cens", "poisson": "nodes"}


def _expanded() -> pd.DataFrame:
    frame: pd.DataFrame = load_gbsg2()
    return frame.assign(
        decade=frame.age // 10,
        big=(frame.tsize > 25).astype(int),
        nodes=np.minimum(frame.pnodes, 10),
    )[[*COVARIATES, "nodes", "cens"]]


EXPANDED = _expanded()


def aggregated(outcome: str) -> pd.DataFrame:
    """One row per pattern of the covariates and ``outcome``, with its ``count``."""
    groups = EXPANDED.groupby([*COVARIATES, outcome])
    return groups.size().rename("count").reset_index().astype({"count": "int64"})


def shares(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """Three uneven shares (40 %, 35 %, 25 %) of a fixed permutation of the rows."""
    order = np.random.default_rng(11).permutation(len(frame))
    cuts = [len(frame) * 2 // 5, len(frame) * 3 // 4]
    return [frame.iloc[np.sort(part)].reset_index(drop=True) for part in np.split(order, cuts)]


def stores_of(parts: list[pd.DataFrame]) -> list[TableStore]:
    return [TableStore(share, name=f"share{i}") for i, share in enumerate(parts)]


def split(frame: pd.DataFrame) -> list[TableStore]:
    return stores_of(shares(frame))


def reference(frame: pd.DataFrame, family: str, outcome: str, **kw: Any) -> Any:
    formula = f"{outcome} ~ {RHS}"
    return smf.glm(formula, frame, family=FAMILIES[family](), **kw).fit()


STATISTICS = ("deviance", "null_deviance", "pearson_chi2", "scale", "log_likelihood", "aic")


def assert_matches(result: dict[str, Any], ref: Any, rtol: float = RTOL) -> None:
    """Coefficients and fit statistics equal statsmodels' with freq_weights at ``rtol``."""
    got = {c["name"]: c for c in result["coefficients"]}
    assert sorted(got) == sorted(ref.params.index)
    ci = ref.conf_int()
    for name in ref.params.index:
        actual = [got[name][k] for k in ("estimate", "std_error", "z", "p_value")]
        actual += [got[name]["ci_low"], got[name]["ci_high"]]
        expected = [s[name] for s in (ref.params, ref.bse, ref.tvalues, ref.pvalues)]
        expected += [ci.loc[name, 0], ci.loc[name, 1]]
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0, err_msg=name)
    expected_fit = (ref.deviance, ref.null_deviance, ref.pearson_chi2, ref.scale, ref.llf, ref.aic)
    np.testing.assert_allclose([result[k] for k in STATISTICS], expected_fit, rtol=rtol, atol=0)
    # n is the number of observations, statsmodels' wnobs (its results.nobs counts rows)
    assert result["n"] == ref.model.wnobs
    assert (result["df_resid"], result["df_model"]) == (ref.df_resid, ref.df_model)
    assert result["converged"]


def assert_same_fit(a: dict[str, Any], b: dict[str, Any], rtol: float = RTOL) -> None:
    """Two medfed results agree in every coefficient statistic and fit statistic."""
    keys = ("estimate", "std_error", "z", "p_value", "ci_low", "ci_high")
    first = {c["name"]: [c[k] for k in keys] for c in a["coefficients"]}
    second = {c["name"]: [c[k] for k in keys] for c in b["coefficients"]}
    assert sorted(first) == sorted(second)
    for name, values in first.items():
        np.testing.assert_allclose(values, second[name], rtol=rtol, atol=0, err_msg=name)
    np.testing.assert_allclose([a[k] for k in STATISTICS], [b[k] for k in STATISTICS], rtol=rtol)
    assert (a["n"], a["df_resid"], a["df_model"]) == (b["n"], b["df_resid"], b["df_model"])


def params_for(family: str, **extra: Any) -> dict[str, Any]:
    base = {"outcome": OUTCOME[family], "covariates": COVARIATES, "family": family}
    return base | {"freq_weights": "count"} | extra


@pytest.mark.parametrize("family", ["gaussian", "binomial", "poisson"])
def test_freq_weights_equal_statsmodels_and_the_expanded_rows(family: str) -> None:
    outcome = OUTCOME[family]
    frame = aggregated(outcome)
    assert len(frame) < len(EXPANDED) / 2 and frame["count"].sum() == len(EXPANDED)
    result = run_locally("glm", params_for(family), split(frame))
    ref = reference(frame, family, outcome, freq_weights=frame["count"])
    assert_matches(result, ref)
    assert result["n"] == len(EXPANDED) and result["df_resid"] == len(EXPANDED) - len(ref.params)
    if family != "gaussian":  # statsmodels' first check uses a stale scale (see glm.md)
        assert result["iterations"] == ref.fit_history["iteration"]
    # the same model on the original, unaggregated rows
    params = {k: v for k, v in params_for(family).items() if k != "freq_weights"}
    expanded = run_locally("glm", params, split(EXPANDED))
    assert_same_fit(result, expanded)
    assert_matches(expanded, reference(EXPANDED, family, outcome), rtol=RTOL)


def test_prior_weights_on_aggregated_rows_give_wrong_gaussian_standard_errors() -> None:
    # the bug freq_weights fixes: counts given as prior weights (statsmodels' var_weights)
    # estimate the same coefficients, but n, df_resid, the scale and the errors are wrong
    frame = aggregated("nodes")
    right = run_locally("glm", params_for("gaussian"), split(frame))
    as_prior = {**params_for("gaussian", weights="count"), "freq_weights": None}
    wrong = run_locally("glm", as_prior, split(frame))
    ref = reference(frame, "gaussian", "nodes", var_weights=frame["count"])
    np.testing.assert_allclose(wrong["scale"], ref.scale, rtol=RTOL)
    estimates = [[c["estimate"] for c in r["coefficients"]] for r in (right, wrong)]
    np.testing.assert_allclose(estimates[0], estimates[1], rtol=RTOL)
    errors = np.asarray([[c["std_error"] for c in r["coefficients"]] for r in (right, wrong)])
    assert (np.abs(errors[1] / errors[0] - 1.0) > 0.1).all()
    assert wrong["n"] == len(frame) and right["n"] == len(EXPANDED)


def test_freq_weights_with_prior_weights_and_offset_equal_statsmodels() -> None:
    frame = aggregated("nodes").assign(
        v=lambda f: (f.decade % 3) + 1.0, exposure=lambda f: np.log(f.decade)
    )
    gauss = run_locally("glm", params_for("gaussian", weights="v"), split(frame))
    kw: dict[str, Any] = {"freq_weights": frame["count"], "var_weights": frame.v}
    assert_matches(gauss, reference(frame, "gaussian", "nodes", **kw))
    # with an offset the null model is fitted by IRLS alongside, with the weights too
    params = params_for("poisson", weights="v", offset="exposure")
    pois = run_locally("glm", params, split(frame))
    assert_matches(pois, reference(frame, "poisson", "nodes", offset=frame.exposure, **kw))


def test_rows_of_weight_zero_are_left_out() -> None:
    frame = aggregated("cens")
    # copies of 40 patterns with the outcome flipped, weight 0: they must change nothing
    zeros = frame.iloc[:40].assign(cens=lambda f: 1 - f.cens, count=0)
    padded = pd.concat([frame, zeros], ignore_index=True)
    result = run_locally("glm", params_for("binomial"), split(padded))
    assert_matches(result, reference(padded, "binomial", "cens", freq_weights=padded["count"]))
    assert_same_fit(result, run_locally("glm", params_for("binomial"), split(frame)))


# ---- the gate counts rows, not weighted observations -----------------------------------


def _round0(store: TableStore, params: dict[str, Any], k: int) -> Any:
    glm = get_algorithm("glm")
    parsed = glm.parse_params(params)
    payload = glm.local(parsed, LocalContext(data=store, round=0, state={}, min_cell_count=k))
    return payload, apply_gate(payload, glm.disclosure(parsed), GatePolicy(min_cell_count=k))


def test_round0_counts_rows_and_sends_the_weighted_count_as_a_sum() -> None:
    frame = aggregated("cens")
    share = frame[frame.tgrade == "II"].iloc[:30].reset_index(drop=True)
    share.loc[:4, "count"] = 0  # five rows of weight 0 are not rows at all
    payload, gated = _round0(TableStore(share, name="s"), params_for("binomial"), k=5)
    kept = share[share["count"] > 0]
    assert payload["rows"] == len(kept) == 25
    assert payload["sums"]["nobs"] == kept["count"].sum() > 25
    ones = int((kept.cens == 1).sum())
    assert payload["outcome_counts"] == [len(kept) - ones, ones]
    assert payload["levels"]["menostat"] == kept.menostat.value_counts().to_dict()
    assert gated.status == "ok"
    # a gate threshold above the rows but below the weighted count suppresses the answer
    k = 26
    assert kept["count"].sum() > k
    gaussian = params_for("gaussian", outcome="cens")
    _, strict = _round0(TableStore(kept.reset_index(drop=True), name="s"), gaussian, k)
    assert strict.status == "suppressed" and strict.payload is None


def _heavy_shares(heavy: pd.DataFrame) -> list[pd.DataFrame]:
    """Two ordinary shares of the aggregated rows and ``heavy`` as the third."""
    return [*shares(aggregated("nodes"))[:2], heavy.reset_index(drop=True)]


def _grade2_rows(rows: int, weight: int = 50) -> pd.DataFrame:
    """``rows`` aggregated rows of grade II, each of weight ``weight``."""
    frame = aggregated("nodes")
    return frame[frame.tgrade == "II"].iloc[:rows].assign(count=weight)


def _assert_fit_over(result: dict[str, Any], parts: list[pd.DataFrame], family: str) -> None:
    """``result`` is statsmodels' fit with freq_weights over the pooled ``parts``."""
    pooled = pd.concat(parts, ignore_index=True)
    outcome = OUTCOME[family]
    assert_matches(result, reference(pooled, family, outcome, freq_weights=pooled["count"]))
    assert result["datasets"] == len(parts)


def test_min_rows_counts_rows_not_the_sum_of_weights() -> None:
    params = params_for("gaussian")
    loose: dict[str, Any] = {"min_cell_count": 1, "max_param_fraction": 1.0, "min_residual_df": 0}
    # nine rows of weight 50 (450 observations) are fewer than 10 rows: the node withholds
    parts = _heavy_shares(_grade2_rows(9))
    withheld: list[str] = []
    result = run_locally("glm", params, stores_of(parts), **loose, withheld=withheld)
    assert len(withheld) == 1 and withheld[0].startswith("gate: min_rows: fewer than 10 rows")
    assert "9" not in withheld[0] and "450" not in withheld[0]
    _assert_fit_over(result, parts[:2], "gaussian")
    # ten rows pass, and count
    parts = _heavy_shares(_grade2_rows(10))
    withheld.clear()
    result = run_locally("glm", params, stores_of(parts), **loose, withheld=withheld)
    assert withheld == []
    _assert_fit_over(result, parts, "gaussian")


def test_max_param_fraction_counts_rows_not_the_sum_of_weights() -> None:
    # seven parameters: 21 rows allow 7 at one third, 20 rows (1000 observations) only 6.67.
    # Rows covering every level, so the node's own round-0 design has all seven already
    frame = aggregated("nodes")
    mixed = frame.groupby(["horTh", "menostat", "tgrade"]).head(2).assign(count=50)
    params = params_for("gaussian")
    parts = _heavy_shares(mixed.iloc[:21])
    withheld: list[str] = []
    result = run_locally("glm", params, stores_of(parts), min_cell_count=1, withheld=withheld)
    assert withheld == []
    _assert_fit_over(result, parts, "gaussian")
    parts = _heavy_shares(mixed.iloc[:20])
    result = run_locally("glm", params, stores_of(parts), min_cell_count=1, withheld=withheld)
    assert len(withheld) == 1
    assert withheld[0].startswith("gate: max_param_fraction: the model has 7 parameters")
    assert "20" not in withheld[0] and "1000" not in withheld[0]
    _assert_fit_over(result, parts[:2], "gaussian")
    # 20 rows of grade II only: their own design has 3 parameters in round 0, so the node
    # answers it; the agreed 7 from round 1 are too many for 20 rows (though not for 1000
    # observations), so it withholds then and the fit fails rather than be inexact
    withheld.clear()
    with pytest.raises(BadRequest, match="contributed to round 0 withheld a later round"):
        run_locally(
            "glm",
            params,
            stores_of(_heavy_shares(_grade2_rows(20))),
            min_cell_count=1,
            withheld=withheld,
        )
    assert len(withheld) == 1
    assert withheld[0].startswith("gate: max_param_fraction: the model has 7 parameters")


def test_rare_levels_count_rows_not_the_sum_of_weights() -> None:
    frame = aggregated("nodes")
    grade1 = frame[frame.tgrade == "I"]
    # four rows of grade I of weight 100 (400 observations) are a rare level at k = 5: the
    # node's Grid rule withholds its whole answer (no reason raised), the others fit exactly
    heavy = pd.concat([frame[frame.tgrade == "II"], grade1.iloc[:4].assign(count=100)])
    parts = _heavy_shares(heavy)
    withheld: list[str] = []
    result = run_locally("glm", params_for("gaussian"), stores_of(parts), withheld=withheld)
    assert withheld == []
    _assert_fit_over(result, parts[:2], "gaussian")
    # five rows of weight 1 are not rare: the node counts
    heavy = pd.concat([frame[frame.tgrade == "II"], grade1.iloc[:5].assign(count=1)])
    parts = _heavy_shares(heavy)
    result = run_locally("glm", params_for("gaussian"), stores_of(parts), withheld=withheld)
    assert withheld == []
    _assert_fit_over(result, parts, "gaussian")


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"freq_weights": "nope"}, "unknown column 'nope'"),
        ({"freq_weights": "label"}, "column 'label' is string, not numeric"),
        ({"freq_weights": "flag"}, "column 'flag' is boolean, not numeric"),
        ({"freq_weights": "nodes"}, "must be different columns"),
        ({"freq_weights": "big"}, "column 'big' is both the freq_weights and a covariate"),
        ({"weights": "count"}, "must be different columns"),
        ({"freq_weights": ""}, "parameter freq_weights"),
    ],
)
def test_bad_freq_weights_parameters_are_clear_errors(extra: dict[str, Any], message: str) -> None:
    frame = aggregated("nodes").assign(flag=lambda f: f["count"] > 1, label=lambda f: f.horTh)
    with pytest.raises(BadRequest, match=re.escape(message)):
        run_locally("glm", params_for("gaussian", **extra), split(frame))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-3, "has a negative value at this node"),
        (2.5, "has a value that is not a whole number at this node"),
        (None, "has a null value at this node"),
        (np.inf, "has an infinite value at this node"),
    ],
)
def test_bad_freq_weight_values_withhold_the_node_without_the_value(
    value: Any, problem: str
) -> None:
    frame = aggregated("nodes").astype({"count": "float64"})
    frame.loc[7, "count"] = value
    parts = shares(frame)
    good = shares(aggregated("nodes").astype({"count": "float64"}))
    (bad,) = [
        i for i, (part, ok) in enumerate(zip(parts, good, strict=True)) if not part.equals(ok)
    ]
    others = [part for i, part in enumerate(parts) if i != bad]
    # the node with the bad weight withholds; the reason (in its log) names the column and
    # the problem, never the value; the fit is exact over the two others
    withheld: list[str] = []
    result = run_locally("glm", params_for("gaussian"), stores_of(parts), withheld=withheld)
    assert len(withheld) == 1 and withheld[0].startswith(f"glm: freq_weights 'count' {problem}")
    assert not re.search(r"\d", withheld[0]), withheld[0]  # no value, row number or count
    _assert_fit_over(result, others, "gaussian")
    # an integer column with a null (a nullable column at the node) is withheld the same way
    if value is None:
        ints = aggregated("nodes").astype({"count": "Int64"})
        ints.loc[7, "count"] = pd.NA
        withheld.clear()
        result = run_locally("glm", params_for("gaussian"), split(ints), withheld=withheld)
        assert len(withheld) == 1 and "has a null value at this node" in withheld[0]
        _assert_fit_over(result, [good[i] for i in range(3) if i != bad], "gaussian")
    # every node with a bad weight: no node contributes
    everywhere = aggregated("nodes").astype({"count": "float64"})
    everywhere["count"] = everywhere["count"].where(everywhere.index % 2 == 1, value)
    withheld.clear()
    with pytest.raises(BadRequest, match="glm: no node contributed to the fit") as err:
        run_locally("glm", params_for("gaussian"), split(everywhere), withheld=withheld)
    assert len(withheld) == 3 and not re.search(r"\d", err.value.message)


def test_a_bad_weight_in_rows_that_where_leaves_out_does_not_matter() -> None:
    frame = aggregated("nodes").astype({"count": "float64"})
    frame.loc[frame.decade == 2, "count"] = np.nan
    where = {"column": "decade", "op": ">", "value": 2}
    result = run_locally("glm", params_for("gaussian", where=where), split(frame))
    subset = frame[frame.decade > 2]
    assert_matches(result, reference(subset, "gaussian", "nodes", freq_weights=subset["count"]))
