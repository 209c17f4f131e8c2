"""``glm`` on three shares of GBSG2 and NCCTG lung against statsmodels' GLM on the pooled rows.

Every run goes through :func:`run_locally`: parse, validate, local step, the real gate
(k = 5), JSON, aggregate, round after round. The references are
``statsmodels.formula.api.glm(...).fit()`` with default settings on the pooled frame;
names are matched after mapping patsy's ``C(col)[T.level]`` to medfed's ``col[T.level]``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from lifelines.datasets import load_gbsg2, load_lung
from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

from medfed.algorithms.base import NodeOutput
from medfed.algorithms.glm.results import GLMResult
from medfed.algorithms.registry import get_algorithm
from medfed.common.errors import BadRequest
from medfed.node.stores.tables import TableStore
from medfed.testing.demo import split_gbsg2
from medfed.testing.local import run_locally

RTOL = 1e-6


def _gbsg2() -> pd.DataFrame:
    frame: pd.DataFrame = load_gbsg2()
    return frame.assign(
        logtime=np.log(frame.time),
        years=np.log(frame.time / 365.25),
        w=(frame.progrec % 7) + 1.0,
    )


GBSG2 = _gbsg2()
LUNG = load_lung().dropna().reset_index(drop=True)
FAMILIES = {"binomial": sm.families.Binomial, "poisson": sm.families.Poisson}


def _stores(shares: list[pd.DataFrame]) -> list[TableStore]:
    return [TableStore(share, name=f"share{i}") for i, share in enumerate(shares)]


def gbsg2_stores() -> list[TableStore]:
    """Fixed rule (the demo's): grade III; pre-menopausal grade I/II; the rest."""
    return _stores(list(split_gbsg2(GBSG2).values()))


def lung_stores() -> list[TableStore]:
    """Fixed rule: row number modulo 3."""
    return _stores([LUNG[LUNG.index % 3 == i].reset_index(drop=True) for i in range(3)])


def medfed_name(name: str) -> str:
    """patsy's ``C(Q('ph.ecog'))[T.1.0]`` → ``ph.ecog[T.1]``; ``Q('wt.loss')`` → ``wt.loss``."""
    name = re.sub(r"Q\('([^']+)'\)", r"\1", name)
    match = re.fullmatch(r"(?:C\()?([^()\[]+)\)?\[(T\.)?(.+)\]", name)
    if match is None:
        return name
    column, treatment, level = match.groups()
    try:
        number = float(level)
        level = str(int(number)) if number.is_integer() else repr(number)
    except ValueError:
        level = {"True": "true", "False": "false"}.get(level, level)
    return f"{column}[{treatment or ''}{level}]"


def reference(formula: str, frame: pd.DataFrame, family: str, **kw: Any) -> Any:
    fam = FAMILIES.get(family, sm.families.Gaussian)()
    return smf.glm(formula, frame, family=fam, **kw).fit()


def assert_matches(result: dict[str, Any], ref: Any, rtol: float = RTOL) -> None:
    """Every coefficient statistic and fit statistic equals statsmodels' at ``rtol``."""
    got = {c["name"]: c for c in result["coefficients"]}
    names = [medfed_name(n) for n in ref.params.index]
    assert sorted(got) == sorted(names)
    ci = ref.conf_int()
    for name, ref_name in zip(names, ref.params.index, strict=True):
        actual = [got[name][k] for k in ("estimate", "std_error", "z", "p_value")]
        actual += [got[name]["ci_low"], got[name]["ci_high"]]
        expected = [s[ref_name] for s in (ref.params, ref.bse, ref.tvalues, ref.pvalues)]
        expected += [ci.loc[ref_name, 0], ci.loc[ref_name, 1]]
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0, err_msg=name)
    fit = ("deviance", "null_deviance", "log_likelihood", "aic", "pearson_chi2", "scale")
    expected_fit = (ref.deviance, ref.null_deviance, ref.llf, ref.aic, ref.pearson_chi2, ref.scale)
    np.testing.assert_allclose([result[k] for k in fit], expected_fit, rtol=rtol, atol=0)
    counts = (result["n"], result["df_resid"], result["df_model"], result["converged"])
    assert counts == (ref.nobs, ref.df_resid, ref.df_model, True)


BINOMIAL = {"outcome": "cens", "family": "binomial"}
BINOMIAL_COVARIATES = ["age", "tsize", "pnodes", "tgrade", "horTh"]


def test_binomial_gbsg2_equals_statsmodels() -> None:
    params = {**BINOMIAL, "covariates": BINOMIAL_COVARIATES}
    result = run_locally("glm", params, gbsg2_stores())
    ref = reference("cens ~ age + tsize + pnodes + C(tgrade) + C(horTh)", GBSG2, "binomial")
    assert_matches(result, ref)
    assert result["iterations"] == ref.fit_history["iteration"]
    assert result["datasets"] == 3
    assert result["reference_levels"] == {"tgrade": "I", "horTh": "no"}
    assert [c["name"] for c in result["coefficients"]][:3] == ["Intercept", "age", "tsize"]


def test_gaussian_gbsg2_with_weights_equals_statsmodels() -> None:
    covariates = ["age", "tsize", "pnodes", "tgrade", "menostat"]
    params = {"outcome": "logtime", "covariates": covariates, "family": "gaussian", "weights": "w"}
    result = run_locally("glm", params, gbsg2_stores())
    formula = "logtime ~ age + tsize + pnodes + C(tgrade) + C(menostat)"
    assert_matches(result, reference(formula, GBSG2, "gaussian", var_weights=GBSG2.w))


def test_poisson_gbsg2_with_and_without_offset_equals_statsmodels() -> None:
    params = {"outcome": "pnodes", "covariates": ["age", "tsize", "tgrade"], "family": "poisson"}
    formula = "pnodes ~ age + tsize + C(tgrade)"
    plain = run_locally("glm", params, gbsg2_stores())
    ref = reference(formula, GBSG2, "poisson")
    assert_matches(plain, ref)
    assert plain["iterations"] == ref.fit_history["iteration"]
    offset = run_locally("glm", {**params, "offset": "years"}, gbsg2_stores())
    assert_matches(offset, reference(formula, GBSG2, "poisson", offset=GBSG2.years))


def test_binomial_with_weights_and_offset_equals_statsmodels() -> None:
    params = {**BINOMIAL, "covariates": ["age", "tsize", "pnodes", "tgrade"]}
    params |= {"weights": "w", "offset": "years"}
    result = run_locally("glm", params, gbsg2_stores())
    ref = reference(
        "cens ~ age + tsize + pnodes + C(tgrade)",
        GBSG2,
        "binomial",
        var_weights=GBSG2.w,
        offset=GBSG2.years,
    )
    assert_matches(result, ref)


LUNG_WHERE = {"column": "ph.ecog", "op": "<", "value": 3}
LUNG_ECOG = LUNG[LUNG["ph.ecog"] < 3]


def test_lung_binomial_and_gaussian_equal_statsmodels() -> None:
    covariates = ["age", "sex", "ph.ecog", "wt.loss"]
    common = {"covariates": covariates, "categorical": ["ph.ecog"], "where": LUNG_WHERE}
    result = run_locally("glm", {"outcome": "status", "family": "binomial"} | common, lung_stores())
    rhs = "age + sex + C(Q('ph.ecog')) + Q('wt.loss')"
    assert_matches(result, reference(f"status ~ {rhs}", LUNG_ECOG, "binomial"))
    gauss = run_locally(
        "glm", {"outcome": "meal.cal", "family": "gaussian"} | common, lung_stores()
    )
    assert_matches(gauss, reference(f"Q('meal.cal') ~ {rhs}", LUNG_ECOG, "gaussian"))


def test_lung_poisson_with_weights_equals_statsmodels() -> None:
    where = {"column": "wt.loss", "op": ">=", "value": 0}
    params = {"outcome": "wt.loss", "covariates": ["age", "sex", "ph.karno"], "where": where}
    result = run_locally(
        "glm", params | {"family": "poisson", "weights": "pat.karno"}, lung_stores()
    )
    frame = LUNG[LUNG["wt.loss"] >= 0]
    formula = "Q('wt.loss') ~ age + sex + Q('ph.karno')"
    assert_matches(result, reference(formula, frame, "poisson", var_weights=frame["pat.karno"]))


def test_a_rare_level_in_real_data_withholds_that_node_and_the_fit_uses_the_others() -> None:
    # one patient has ph.ecog == 3: a level with a count of 1 at the third node. Its Grid
    # rule withholds the node's whole answer (no reason leaves it, none is raised), and the
    # fit is the exact pooled fit over the two other nodes
    assert (LUNG["ph.ecog"] == 3).sum() == 1 and LUNG["ph.ecog"][LUNG.index % 3 == 2].max() == 3
    params = {"outcome": "status", "family": "binomial", "covariates": ["age", "ph.ecog"]}
    withheld: list[str] = []
    result = run_locally(
        "glm", params | {"categorical": ["ph.ecog"]}, lung_stores(), withheld=withheld
    )
    assert withheld == [] and result["datasets"] == 2
    others = LUNG[LUNG.index % 3 != 2]
    assert_matches(result, reference("status ~ age + C(Q('ph.ecog'))", others, "binomial"))
    assert "ph.ecog[T.3]" not in [c["name"] for c in result["coefficients"]]


def test_no_intercept_codes_the_first_categorical_with_every_level() -> None:
    params = {**BINOMIAL, "covariates": ["age", "tgrade", "horTh"], "intercept": False}
    result = run_locally("glm", params, gbsg2_stores())
    ref = reference("cens ~ 0 + age + C(tgrade) + C(horTh)", GBSG2, "binomial")
    assert_matches(result, ref)
    assert "tgrade[I]" in [c["name"] for c in result["coefficients"]]


def test_boolean_outcome_and_boolean_covariate_equal_statsmodels() -> None:
    frame = GBSG2.assign(event=GBSG2.cens == 1, hormone=GBSG2.horTh == "yes")
    stores = _stores(list(split_gbsg2(frame).values()))
    params = {"outcome": "event", "covariates": ["age", "hormone"], "family": "binomial"}
    result = run_locally("glm", params, stores)
    assert_matches(result, reference("cens ~ age + C(hormone)", frame, "binomial"))
    assert result["reference_levels"] == {"hormone": "false"}


def test_where_that_leaves_a_node_without_rows_still_equals_the_pool() -> None:
    # hospital-a holds grade III only: it has no usable rows, so it withholds and the fit
    # is the pooled fit over the two others
    params = {
        **BINOMIAL,
        "covariates": ["age", "pnodes", "tgrade"],
        "where": {"column": "tgrade", "op": "!=", "value": "III"},
    }
    result = run_locally("glm", params, gbsg2_stores())
    subset = GBSG2[GBSG2.tgrade != "III"]
    assert_matches(result, reference("cens ~ age + pnodes + C(tgrade)", subset, "binomial"))
    assert result["datasets"] == 2


def test_summary_and_forest_plot(tmp_path: Path) -> None:
    result = GLMResult.model_validate(
        run_locally("glm", {**BINOMIAL, "covariates": BINOMIAL_COVARIATES}, gbsg2_stores())
    )
    text = result.summary()
    assert "Generalized Linear Model Regression Results" in text
    for name in ("Intercept", "tgrade[T.III]", "horTh[T.yes]", "Binomial", "Logit"):
        assert name in text
    assert f"{result.coefficient('age').estimate:.4f}" in text
    assert get_algorithm("glm").Result is GLMResult and get_algorithm("glm").max_rounds > 101
    path = tmp_path / "forest.png"
    result.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- gate rules at the node ---------------------------------------------------------


def _small_shares(rows: int) -> list[pd.DataFrame]:
    shares = list(split_gbsg2(GBSG2).values())
    return [*shares[:2], shares[2].iloc[:rows]]


def _with_small_share(rows: int) -> list[TableStore]:
    return _stores(_small_shares(rows))


def test_min_rows_withholds_a_node_with_too_few_rows() -> None:
    params = {**BINOMIAL, "covariates": ["age"]}
    # nine rows: the node withholds (the reason stays in its log, without its row count)
    # and gets no later round; the fit is the exact pooled fit over the two others
    withheld: list[str] = []
    result = run_locally("glm", params, _with_small_share(9), min_cell_count=1, withheld=withheld)
    assert len(withheld) == 1 and withheld[0].startswith("gate: min_rows: fewer than 10 rows")
    assert "9" not in withheld[0]
    assert result["datasets"] == 2
    assert_matches(result, reference("cens ~ age", pd.concat(_small_shares(9)[:2]), "binomial"))
    # ten rows pass the rule and count (residual degrees of freedom checked apart, below)
    withheld.clear()
    result = run_locally(
        "glm", params, _with_small_share(10), min_cell_count=1, min_residual_df=0,
        withheld=withheld,
    )  # fmt: skip
    assert withheld == [] and result["datasets"] == 3
    assert_matches(result, reference("cens ~ age", pd.concat(_small_shares(10)), "binomial"))
    # when every node has too few rows, no node contributes
    tiny = _stores([share.iloc[:9] for share in split_gbsg2(GBSG2).values()])
    withheld.clear()
    with pytest.raises(BadRequest, match="no node contributed"):
        run_locally("glm", params, tiny, min_cell_count=1, withheld=withheld)
    assert len(withheld) == 3 and all(w.startswith("gate: min_rows") for w in withheld)


def test_min_residual_df_withholds_a_node_left_with_too_few_degrees_of_freedom() -> None:
    # two parameters: 11 rows leave 9 residual df (< 10, ACRO's default), 12 leave 10
    params = {**BINOMIAL, "covariates": ["age"]}
    withheld: list[str] = []
    result = run_locally("glm", params, _with_small_share(11), min_cell_count=1, withheld=withheld)
    assert len(withheld) == 1 and withheld[0].startswith("gate: min_residual_df:")
    assert result["datasets"] == 2
    assert_matches(result, reference("cens ~ age", pd.concat(_small_shares(11)[:2]), "binomial"))
    withheld.clear()
    result = run_locally("glm", params, _with_small_share(12), min_cell_count=1, withheld=withheld)
    assert withheld == [] and result["datasets"] == 3
    assert_matches(result, reference("cens ~ age", pd.concat(_small_shares(12)), "binomial"))


def test_max_param_fraction_withholds_a_node_with_too_many_parameters() -> None:
    params = {**BINOMIAL, "covariates": ["age", "tsize", "pnodes", "progrec", "estrec"]}
    formula = "cens ~ age + tsize + pnodes + progrec + estrec"
    # six parameters: 20 rows allow 6.67 at one third, 17 rows allow only 5.67
    withheld: list[str] = []
    result = run_locally("glm", params, _with_small_share(20), min_cell_count=1, withheld=withheld)
    assert withheld == [] and result["datasets"] == 3
    assert_matches(result, reference(formula, pd.concat(_small_shares(20)), "binomial"))
    result = run_locally("glm", params, _with_small_share(17), min_cell_count=1, withheld=withheld)
    assert len(withheld) == 1
    assert withheld[0].startswith("gate: max_param_fraction: the model has 6 parameters")
    assert "17" not in withheld[0]  # the node's row count does not leave it
    assert result["datasets"] == 2
    assert_matches(result, reference(formula, pd.concat(_small_shares(17)[:2]), "binomial"))
    # at 0.02 only the largest node (309 rows allow 6.18 parameters) may answer
    shares = list(split_gbsg2(GBSG2).values())
    assert [len(s) for s in shares] == [161, 216, 309]
    withheld.clear()
    result = run_locally("glm", params, gbsg2_stores(), max_param_fraction=0.02, withheld=withheld)
    assert len(withheld) == 2 and all("gate: max_param_fraction" in w for w in withheld)
    assert result["datasets"] == 1
    assert_matches(result, reference(formula, shares[2], "binomial"))
    # at 0.01 none may: the task fails as any other with no contributing node
    with pytest.raises(BadRequest, match="no node contributed"):
        run_locally("glm", params, gbsg2_stores(), max_param_fraction=0.01)


def test_a_rare_outcome_class_at_a_node_withholds_that_node() -> None:
    shares = list(split_gbsg2(GBSG2).values())
    few_events = pd.concat([shares[2][shares[2].cens == 0], shares[2][shares[2].cens == 1][:3]])
    stores = _stores([*shares[:2], few_events])
    params = {**BINOMIAL, "covariates": ["age"]}
    # three events at k = 5: the Grid rule withholds the node's whole answer (no reason
    # is raised); the fit is exact over the two other nodes
    withheld: list[str] = []
    result = run_locally("glm", params, stores, withheld=withheld)
    assert withheld == [] and result["datasets"] == 2
    assert_matches(result, reference("cens ~ age", pd.concat(shares[:2]), "binomial"))
    # the same rows pass when the rule's threshold is 3, and count
    result = run_locally("glm", params, stores, min_cell_count=3)
    assert result["datasets"] == 3
    pooled = pd.concat([*shares[:2], few_events])
    assert_matches(result, reference("cens ~ age", pooled, "binomial"))


def test_a_rare_level_at_a_node_withholds_it_and_the_others_fit_exactly() -> None:
    shares = list(split_gbsg2(GBSG2).values())
    grade1 = shares[1][shares[1].tgrade == "I"]
    few = pd.concat([shares[1][shares[1].tgrade != "I"], grade1[:4]])
    params = {**BINOMIAL, "covariates": ["age", "tgrade"]}
    formula = "cens ~ age + C(tgrade)"
    # four rows of grade I at k = 5: no hub-side refusal naming the column any more; the
    # node's Grid rule withholds it, and the fit is the pooled fit over the two others
    withheld: list[str] = []
    result = run_locally("glm", params, _stores([shares[0], few, shares[2]]), withheld=withheld)
    assert withheld == [] and result["datasets"] == 2
    assert_matches(result, reference(formula, pd.concat([shares[0], shares[2]]), "binomial"))
    # five rows of that level are not rare at k = 5: all three count
    five = pd.concat([shares[1][shares[1].tgrade != "I"], grade1[:5]])
    result = run_locally("glm", params, _stores([shares[0], five, shares[2]]))
    assert result["datasets"] == 3
    assert_matches(result, reference(formula, pd.concat([shares[0], five, shares[2]]), "binomial"))


def test_a_node_the_gate_suppresses_in_round_zero_does_not_contribute() -> None:
    # a node whose policy lets 3 rows through min_rows: the gate's MinRows rule (k = 5)
    # suppresses its answer; the fit is the exact pooled fit over the two others
    params = {"outcome": "time", "covariates": ["age"]}
    withheld: list[str] = []
    result = run_locally(
        "glm",
        params,
        _with_small_share(3),
        min_rows=2,
        max_param_fraction=1.0,
        min_residual_df=0,
        withheld=withheld,
    )
    assert withheld == [] and result["datasets"] == 2
    assert_matches(result, reference("time ~ age", pd.concat(_small_shares(3)[:2]), "gaussian"))


def test_a_node_withholding_after_round_zero_fails_the_fit() -> None:
    # a grade-III-only node of 10 rows: in round 0 its local design (intercept, age) has 2
    # parameters, within a third of 10 rows; from round 1 the agreed design has 4 (tgrade
    # II and III), so it withholds then — a fit without it would not be exact
    shares = list(split_gbsg2(GBSG2).values())
    grade3 = shares[0]
    small = pd.concat([grade3[grade3.cens == 0][:5], grade3[grade3.cens == 1][:5]])
    params = {**BINOMIAL, "covariates": ["age", "tgrade"]}
    withheld: list[str] = []
    with pytest.raises(BadRequest, match="contributed to round 0 withheld a later round") as err:
        run_locally(
            "glm", params, _stores([small, *shares[1:]]), min_residual_df=0, withheld=withheld
        )
    assert len(withheld) == 1  # from round 1 (it answered round 0)
    assert withheld[0].startswith("gate: max_param_fraction: the model has 4 parameters")
    # which node withheld, and why, stays at the node
    assert "max_param_fraction" not in err.value.message and "dataset" not in err.value.message
    # the hub's rule on its own: an answer missing after round 0 fails the fit
    glm = get_algorithm("glm")
    parsed = glm.parse_params({**BINOMIAL, "covariates": ["age"]})
    outputs = [
        NodeOutput(node_id=1, dataset_id=17, status="ok", payload={"rows": 20}),
        NodeOutput(node_id=2, dataset_id=42, status="suppressed"),
    ]
    state = {"hub": {"datasets": [17, 42]}}
    with pytest.raises(BadRequest, match="withheld a later round") as err:
        glm.aggregate(parsed, 1, state, outputs)
    assert "42" not in err.value.message


# ---- errors: convergence, separation, singular design, bad input -------------------------


def test_no_convergence_within_max_iter_is_an_error() -> None:
    params = {**BINOMIAL, "covariates": BINOMIAL_COVARIATES, "max_iter": 1}
    with pytest.raises(BadRequest, match="did not converge within max_iter=1 iterations"):
        run_locally("glm", params, gbsg2_stores())
    ref = smf.glm("cens ~ age + C(tgrade)", GBSG2, family=sm.families.Binomial()).fit(maxiter=1)
    assert not ref.converged


def _separated(quasi: bool) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 300
    x = rng.normal(size=n)
    group = np.where(rng.random(n) < 0.25, "b", "a")
    if quasi:
        y = np.where(group == "b", 1, (rng.random(n) < 0.4).astype(int))
    else:
        y = (x > 0).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": group, "z": rng.normal(size=n)})


def test_complete_separation_is_an_error_where_statsmodels_only_warns() -> None:
    frame = _separated(quasi=False)
    stores = _stores([frame[frame.index % 3 == i] for i in range(3)])
    # the boundary count of a node passes through 1..k-1 on the way, and the Grid rule then
    # withholds that node's round (uniformly, no reason given): the fit fails either way
    with pytest.raises(BadRequest, match=r"perfect separation: the coefficient of 'x'|withheld"):
        run_locally("glm", {"outcome": "y", "covariates": ["x", "z"], "family": "binomial"}, stores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.warns(PerfectSeparationWarning):
            smf.glm("y ~ x + z", frame, family=sm.families.Binomial()).fit()


def test_quasi_separation_is_an_error_where_statsmodels_returns_a_huge_number() -> None:
    frame = _separated(quasi=True)
    stores = _stores([frame[frame.index % 3 == i] for i in range(3)])
    params = {"outcome": "y", "covariates": ["g", "z"], "family": "binomial"}
    with pytest.raises(BadRequest, match=r"perfect separation: the coefficient of 'g\[T.b\]'"):
        run_locally("glm", params, stores)
    ref = smf.glm("y ~ g + z", frame, family=sm.families.Binomial()).fit()
    assert abs(ref.params["g[T.b]"]) > 15 and ref.bse["g[T.b]"] > 1000
    # the other side: overlapping outcomes fit without complaint
    overlap = frame.assign(y=np.where((frame.g == "b") & (frame.index % 10 == 0), 0, frame.y))
    stores = _stores([overlap[overlap.index % 3 == i] for i in range(3)])
    assert_matches(run_locally("glm", params, stores), reference("y ~ g + z", overlap, "binomial"))


def test_a_category_with_no_counts_separates_a_poisson_fit() -> None:
    frame = _separated(quasi=True)
    frame["count"] = np.where(frame.g == "b", 0, np.random.default_rng(4).poisson(2.0, len(frame)))
    stores = _stores([frame[frame.index % 3 == i] for i in range(3)])
    params = {"outcome": "count", "covariates": ["g", "z"], "family": "poisson"}
    with pytest.raises(BadRequest, match=r"perfect separation.*fitted means numerically 0"):
        run_locally("glm", params, stores)


@pytest.mark.parametrize(
    ("extra", "columns"),
    [
        ({"age_again": GBSG2.age}, "age, age_again"),
        ({"ten": 10.0}, "Intercept, ten"),
        ({"sum": GBSG2.age + 2 * GBSG2.tsize}, "age, tsize, sum"),
    ],
)
def test_a_singular_design_is_an_error_naming_the_columns(
    extra: dict[str, Any], columns: str
) -> None:
    frame = GBSG2.assign(**extra)
    stores = _stores(list(split_gbsg2(frame).values()))
    covariates = ["age", "tsize", *extra]
    for family in ("binomial", "gaussian"):
        params = {"outcome": "cens", "covariates": covariates, "family": family}
        with pytest.raises(BadRequest, match=rf"singular design: the columns {columns} are"):
            run_locally("glm", params, stores)


def test_degenerate_outcomes_are_errors() -> None:
    frame = GBSG2.assign(none=0, one=1)
    stores = _stores(list(split_gbsg2(frame).values()))
    with pytest.raises(BadRequest, match="binomial outcome 'one' has a single class"):
        run_locally("glm", {"outcome": "one", "covariates": ["age"], "family": "binomial"}, stores)
    with pytest.raises(BadRequest, match="poisson outcome 'none' is 0 in every row"):
        run_locally("glm", {"outcome": "none", "covariates": ["age"], "family": "poisson"}, stores)


def test_bad_outcome_values_withhold_the_node_without_the_value() -> None:
    # a value check at the node is a data-dependent refusal: the node withholds, and the
    # researcher sees the same "no node contributed" as for any other withheld answer
    withheld: list[str] = []
    with pytest.raises(BadRequest, match="glm: no node contributed to the fit"):
        run_locally(
            "glm", {"outcome": "pnodes", "family": "binomial"}, gbsg2_stores(), withheld=withheld
        )
    assert withheld == ["glm: binomial outcome 'pnodes' must be 0/1 or boolean"] * 3
    # one bad value at one node: that node withholds, the fit is exact over the others
    shares = list(split_gbsg2(GBSG2).values())
    bad = shares[2].reset_index(drop=True)
    bad.loc[5, "cens"] = 7
    withheld.clear()
    params = {**BINOMIAL, "covariates": ["age"]}
    result = run_locally("glm", params, _stores([*shares[:2], bad]), withheld=withheld)
    assert withheld == ["glm: binomial outcome 'cens' must be 0/1 or boolean"]
    assert result["datasets"] == 2
    assert_matches(result, reference("cens ~ age", pd.concat(shares[:2]), "binomial"))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"outcome": "nope"}, "unknown column 'nope'"),
        ({"outcome": "horTh"}, "outcome 'horTh' is string, not numeric"),
        ({"outcome": "cens", "covariates": ["age", "age"]}, "listed twice"),
        ({"outcome": "cens", "covariates": ["cens"]}, "both the outcome and a covariate"),
        ({"outcome": "cens", "covariates": ["age"], "categorical": ["tsize"]}, "not among"),
        ({"outcome": "cens", "weights": "horTh"}, "'horTh' is string, not numeric"),
        ({"outcome": "cens", "offset": "cens"}, "must be different columns"),
        ({"outcome": "cens", "intercept": False}, "no parameters"),
        ({"outcome": "cens", "family": "gamma"}, "parameter family"),
        ({"outcome": "cens", "max_iter": 0}, "parameter max_iter"),
        ({"outcome": "cens", "where": {"column": "nope", "op": ">", "value": 1}}, "nope"),
    ],
)
def test_bad_parameters_are_clear_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        run_locally("glm", params, gbsg2_stores())


def test_a_covariate_numeric_here_and_text_there_must_be_listed_categorical() -> None:
    shares = list(split_gbsg2(GBSG2).values())
    stores = _stores([shares[0], shares[1].assign(age=shares[1].age.astype(str)), shares[2]])
    params = {**BINOMIAL, "covariates": ["age"]}
    with pytest.raises(BadRequest, match="'age' is numeric in some datasets and not in others"):
        run_locally("glm", params, stores)


def test_convergence_is_statsmodels_rule_until_float64_cannot_resolve_tol() -> None:
    from medfed.algorithms.glm.irls import ULPS, _settled

    # deviances of usual size: exactly statsmodels' |change| <= tol
    assert _settled(700.0, 700.0 + 0.9e-8, 1e-8)
    assert not _settled(700.0, 700.0 + 1.1e-8, 1e-8)
    assert not _settled(700.0, None, 1e-8)
    # the floor stays under tol for every deviance below 2**20 (about a million)
    assert ULPS * np.spacing(2.0**20 - 1) < 1e-8
    # 50,000,000 rows: a deviance near 6.3e7, whose last place is 7.5e-9 — a change of a
    # few units there (summation order, the fixed point's last bits) is no change
    big = 63_013_995.437515
    assert np.spacing(big) > 0.5e-8
    assert _settled(big, big + 4 * np.spacing(big), 1e-8)
    assert not _settled(big, big + 1e-6, 1e-8)
