"""Output checks of researcher scripts (``medfed.node.outputcheck``), against ACRO too.

The objects are built by the helpers scripts use (``medfed_script``), here in-process on
plain DataFrames; ACRO (SACRO's ``acro``) judges the same tables with the same settings
(threshold k, its default dominance rules, zeros not disclosive, as the node's gate).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from medfed.algorithms.scripts import api
from medfed.node.gate.dominance import DominancePolicy
from medfed.node.outputcheck import CheckPolicy, check_output

K = 5
POLICY = CheckPolicy(min_cell_count=K, min_residual_df=10, dominance=DominancePolicy())


def _frame(n: int, seed: int, *, outlier: float | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "sex": rng.choice(["f", "m"], n),
            "grade": rng.choice(["I", "II", "III"], n, p=[0.2, 0.5, 0.3]),
            "age": rng.normal(55, 8, n).clip(20, 90),
            "size": rng.gamma(2.0, 10.0, n),
        }
    )
    if outlier is not None:
        frame.loc[0, "size"] = outlier
    return frame


def test_a_table_with_a_small_cell_is_refused_whole_naming_the_rule() -> None:
    frame = _frame(200, 0)
    frame.loc[frame.index[:3], "grade"] = "IV"  # three patients in a grade of their own
    verdict = check_output("table", api.crosstab(frame, "grade", "sex"), POLICY)
    assert (verdict.status, verdict.rule) == ("fail", "threshold")
    assert verdict.data is None  # nothing of the table is kept for release


def test_a_table_whose_cells_all_reach_the_threshold_passes_unchanged() -> None:
    table = api.crosstab(_frame(300, 1), "grade", "sex")
    verdict = check_output("table", table, POLICY)
    assert verdict.status == "pass"
    assert verdict.data == table
    assert sum(c["count"] for c in verdict.data["cells"]) == 300


def test_zero_cells_pass_as_at_the_gate() -> None:
    table = {"dims": ["a"], "aggfunc": "count", "cells": [{"key": ["x"], "count": 0}]}
    assert check_output("table", table, POLICY).status == "pass"


def test_a_mean_dominated_by_one_patient_is_refused_by_dominance() -> None:
    frame = _frame(300, 2, outlier=1e6)
    verdict = check_output(
        "table", api.crosstab(frame, "grade", values="size", aggfunc="mean"), POLICY
    )
    assert (verdict.status, verdict.rule) == ("fail", "dominance")
    clean = check_output(
        "table", api.crosstab(_frame(300, 2), "grade", values="size", aggfunc="mean"), POLICY
    )
    assert clean.status == "pass"


def test_a_magnitude_table_without_its_contributions_waits_for_the_steward() -> None:
    table = api.crosstab(_frame(300, 3), "grade", values="size", aggfunc="sum")
    for cell in table["cells"]:
        del cell["magnitude"]
    verdict = check_output("table", table, POLICY)
    assert verdict.status == "review"


def test_a_regression_with_too_few_residual_degrees_of_freedom_is_refused() -> None:
    small = api.ols(_frame(14, 4), "size", ["age"])  # 14 rows, 2 parameters: 12 df
    assert check_output("regression", small, POLICY).status == "pass"
    strict = CheckPolicy(min_cell_count=K, min_residual_df=13)
    verdict = check_output("regression", small, strict)
    assert (verdict.status, verdict.rule) == ("fail", "residual-df")


def test_a_regression_that_overstates_its_residual_df_is_refused_as_malformed() -> None:
    fit = api.ols(_frame(50, 5), "size", ["age"])
    fit["df_resid"] = 49  # n - p is 48
    assert check_output("regression", fit, POLICY).rule == "shape"


def test_figure_data_is_checked_as_a_frequency_table() -> None:
    frame = _frame(200, 6)
    assert check_output("figure", api.histogram(frame["age"], bins=4), POLICY).status == "pass"
    verdict = check_output("figure", api.histogram(frame["age"], bins=40), POLICY)
    assert (verdict.status, verdict.rule) == ("fail", "threshold")


def test_a_value_is_unclassifiable_and_waits_in_the_airlock() -> None:
    verdict = check_output("value", {"text": "the model converged"}, POLICY)
    assert (verdict.status, verdict.data) == ("review", {"text": "the model converged"})


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        ("table", {"cells": [{"key": ["a"], "count": -1}]}),
        ("table", {"cells": [{"key": ["a"], "count": 2.5}]}),
        ("table", [1, 2]),
        ("figure", {"bins": [0, 1]}),
        ("regression", {"coef": {"a": 1.0}, "n": "ten", "df_resid": 3}),
        ("chart", {"counts": [10]}),
    ],
)
def test_an_output_without_its_kinds_shape_is_refused(kind: str, obj: object) -> None:
    assert check_output(kind, obj, POLICY).rule == "shape"


def _acro_status(acro: object) -> str:
    results = acro.results.results  # type: ignore[attr-defined]
    return str(list(results.values())[-1].status)


@pytest.fixture(scope="module")
def acro() -> object:
    acro_module = pytest.importorskip("acro")
    logging.getLogger("acro").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=FutureWarning, module="acro")
    checker = acro_module.ACRO(suppress=False)
    checker.config.update(safe_threshold=K, safe_dof_threshold=10, zeros_are_disclosive=False)
    return checker


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", range(12))
def test_verdicts_agree_with_acro_on_the_same_tables(acro: object, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(20, 120))
    frame = _frame(n, seed, outlier=float(rng.choice([0.0, 1e5])) or None)
    ours = check_output("table", api.crosstab(frame, "grade", "sex"), POLICY)
    acro.crosstab(frame["grade"], frame["sex"])  # type: ignore[attr-defined]
    assert ours.status == _acro_status(acro)
    ours = check_output(
        "table", api.crosstab(frame, "grade", "sex", values="size", aggfunc="mean"), POLICY
    )
    acro.crosstab(frame["grade"], frame["sex"], values=frame["size"], aggfunc="mean")  # type: ignore[attr-defined]
    assert ours.status == _acro_status(acro)
    fit = api.ols(frame.iloc[: 8 + seed], "size", ["age"])
    ours = check_output("regression", fit, POLICY)
    exog = frame.iloc[: 8 + seed][["age"]].assign(const=1.0)
    acro.ols(frame.iloc[: 8 + seed]["size"], exog)  # type: ignore[attr-defined]
    assert ours.status == _acro_status(acro)
