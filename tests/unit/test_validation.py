"""``validation`` over real data split across nodes, against scikit-learn and statsmodels.

Every run goes through :func:`medfed.testing.local.run_locally` (parse, validate, local
step with an in-process onnxruntime scorer, the real gate at k = 5, JSON, aggregate,
round after round of the federated GLM). References are computed on the pooled rows
with the same ONNX model's scores: sensitivity, specificity, PPV, NPV (scikit-learn),
their Wilson and Clopper-Pearson intervals (statsmodels), the Brier score (scikit-learn),
the calibration intercept and slope (statsmodels' binomial GLM on ``logit(score)``) to
1e-9; the AUC (``roc_auc_score``) inside the binning bound, and equal when scores lie on
the grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2
from sklearn.metrics import brier_score_loss, roc_auc_score

from medfed.algorithms.validation.scoring import InProcessScorer
from medfed.node.stores.tables import TableStore
from medfed.testing.demo import split_gbsg2
from medfed.testing.local import run_locally
from validationtools import (
    breast_cancer,
    check_against_pooled,
    identity_onnx,
    model_ref,
    pooled_scores,
    sklearn_onnx,
    torch_onnx,
)

TOL = 1e-9


def _run(
    shares: list[pd.DataFrame],
    models: dict[str, bytes],
    params: dict[str, Any],
    withheld: list[str] | None = None,
    k: int = 5,
    **scorer: Any,
) -> dict[str, Any]:
    stores = [TableStore(s.reset_index(drop=True), name=f"site{i}") for i, s in enumerate(shares)]
    base = InProcessScorer(models, **scorer)
    return run_locally(
        "validation",
        params,
        stores,
        services=lambda i: base.for_dataset(i),
        withheld=withheld,
        min_cell_count=k,
    )


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, list[str]]:
    frame = breast_cancer()
    return frame, [c for c in frame.columns if c != "y"]


def test_breast_cancer_sklearn_model_is_exact(cancer: tuple[pd.DataFrame, list[str]]) -> None:
    frame, features = cancer
    train = frame.index % 2 == 0
    data = sklearn_onnx(frame[train], features, "y")
    ref = model_ref(data, features, "probabilities", 1)
    test = frame[~train].reset_index(drop=True)
    shares = [test[test.index % 2 == i] for i in range(2)]
    params = {"model": ref, "outcome": {"column": "y", "positive": 1}, "thresholds": [0.5, 0.9]}
    result = _run(shares, {ref["sha256"]: data}, params, k=3)  # DataSHIELD's nfilter.tab
    s = pooled_scores(data, ref, test)
    check_against_pooled(result, test.y.to_numpy(), s)
    # between 0.5 and 0.9 each site has 1..2 negatives: both keep the 0.9 counts back
    high = result["overall"]["thresholds"][1]
    assert high["threshold"] == 0.9 and high["nodes_left_out"] == 2
    assert high["sensitivity"]["value"] is None
    assert [site["shared"] for site in result["sites"]] == [True, True]  # private mode


def test_breast_cancer_torch_model_is_exact(cancer: tuple[pd.DataFrame, list[str]]) -> None:
    frame, features = cancer
    train = frame.index % 2 == 0
    data = torch_onnx(frame[train], features, "y")
    ref = model_ref(data, features, "risk", 0)
    test = frame[~train].reset_index(drop=True)
    shares = [test[test.index % 2 == i] for i in range(2)]
    params = {"model": ref, "outcome": {"column": "y", "positive": 1}}
    result = _run(shares, {ref["sha256"]: data}, params, k=3)
    check_against_pooled(result, test.y.to_numpy(), pooled_scores(data, ref, test))


GBSG2_FEATURES = ["age", "tsize", "pnodes", "progrec", "estrec", "hormone"]


@pytest.fixture(scope="module")
def gbsg2() -> tuple[pd.DataFrame, bytes, dict[str, Any]]:
    frame = load_gbsg2()
    frame = frame.assign(hormone=(frame.horTh == "yes").astype(int))
    data = sklearn_onnx(frame, GBSG2_FEATURES, "cens")
    return frame, data, model_ref(data, GBSG2_FEATURES, "probabilities", 1)


def test_gbsg2_recurrence_model_with_subgroups(
    gbsg2: tuple[pd.DataFrame, bytes, dict[str, Any]],
) -> None:
    frame, data, ref = gbsg2
    shares = list(split_gbsg2(frame).values())
    params = {
        "model": ref,
        "outcome": {"column": "cens", "positive": 1},
        "thresholds": [0.5],
        "subgroups": [
            {"name": "menopause", "column": "menostat"},
            {"name": "age", "column": "age", "bands": [55]},
        ],
    }
    result = _run(shares, {ref["sha256"]: data}, params)
    pooled = pd.concat(shares, ignore_index=True)
    s = pooled_scores(data, ref, pooled)
    y = pooled.cens.to_numpy()
    check_against_pooled(result, y, s)
    for name, column in (("menopause", "menostat"), ("age", "age")):
        group = result["subgroups"][name]
        assert group["sites_reporting"], name  # at least one site releases each variable
        rows = pd.concat([shares[i] for i in group["sites_reporting"]], ignore_index=True)
        rs, ry = pooled_scores(data, ref, rows), rows.cens.to_numpy()
        if column == "age":
            level_of = np.where(rows.age < 55, "<55", ">=55")
        else:
            level_of = rows.menostat.astype(str).to_numpy()
        assert set(group["levels"]) == set(level_of)
        for level, summary in group["levels"].items():
            mask = level_of == level
            assert summary["n"] == int(mask.sum())
            assert summary["brier"] == pytest.approx(brier_score_loss(ry[mask], rs[mask]), abs=TOL)
            a = summary["auc"]
            true_auc = roc_auc_score(ry[mask], rs[mask])
            assert a["lower_bound"] - TOL <= true_auc <= a["upper_bound"] + TOL


def test_outcome_as_filter_equals_outcome_column(
    gbsg2: tuple[pd.DataFrame, bytes, dict[str, Any]],
) -> None:
    frame, data, ref = gbsg2
    shares = list(split_gbsg2(frame).values())
    common = {"model": ref, "thresholds": [0.5]}
    by_column = _run(
        shares, {ref["sha256"]: data}, {**common, "outcome": {"column": "cens", "positive": 1}}
    )
    by_filter = _run(
        shares,
        {ref["sha256"]: data},
        {**common, "outcome": {"where": {"column": "cens", "op": "==", "value": 1}}},
    )
    assert by_filter["overall"]["thresholds"] == by_column["overall"]["thresholds"]
    assert by_filter["calibration_slope"] == by_column["calibration_slope"]


def _grid_shares() -> tuple[list[pd.DataFrame], np.ndarray, np.ndarray]:
    """Scores on the grid (multiples of 1/16, exact in float32), each value held by at
    least 5 rows of each class at each of two sites."""
    rng = np.random.default_rng(7)
    values = np.arange(1, 16) / 16
    rows = []
    for v in values:
        for label in (0, 1):
            n = 10 + int(rng.integers(0, 30 * (v if label else 1 - v)) + 1)
            rows += [(v, label)] * n
    frame = pd.DataFrame(rows, columns=["score", "y"]).sample(frac=1, random_state=1)
    frame = frame.reset_index(drop=True)
    # each site gets at least 5 rows of each class at every value: split per (value, class)
    frame["site"] = frame.groupby(["score", "y"]).cumcount() % 2
    shares = [frame[frame.site == i].drop(columns="site") for i in range(2)]
    pooled = pd.concat(shares, ignore_index=True)
    return shares, pooled.y.to_numpy(), pooled.score.to_numpy(np.float32).astype(np.float64)


def test_auc_is_exact_when_scores_lie_on_the_grid() -> None:
    shares, y, s = _grid_shares()
    data = identity_onnx()
    ref = model_ref(data, ["score"], "score", 0)
    params = {
        "model": ref,
        "outcome": {"column": "y", "positive": 1},
        "grid": 16,
        "calibration_bins": 4,
        "thresholds": [0.5],
    }
    result = _run(shares, {ref["sha256"]: data}, params)
    auc = result["overall"]["auc"]
    assert auc["one_bin_leaves"]
    assert auc["estimate"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # DeLong's variance from the pooled scores (placement values with ties counted half)
    pos, neg = s[y == 1], s[y == 0]
    v10 = np.array([(np.sum(neg < p) + 0.5 * np.sum(neg == p)) / len(neg) for p in pos])
    v01 = np.array([(np.sum(pos > q) + 0.5 * np.sum(pos == q)) / len(pos) for q in neg])
    var = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    assert auc["se"] == pytest.approx(np.sqrt(var), abs=1e-12)
