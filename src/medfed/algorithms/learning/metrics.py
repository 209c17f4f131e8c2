"""Evaluation metrics computed by medfed at the node, from predictions and its own labels.

The plan process writes one prediction per held-out row (``predict`` of the plan); the
node agent reads them, checks their shape and values, and computes a fixed metric set
against the labels it holds (plan code never sees the held-out labels and never returns
a metric). Each metric passes the gate:

* nothing at all when there are fewer held-out rows than ``k`` (the node's
  ``min_cell_count``);
* binary (``metrics = "binary"``): ``loss`` (log loss), ``accuracy`` (p ≥ 0.5),
  ``brier``; ``auc`` only when each class has at least ``k`` held-out rows (with fewer,
  the AUC would rank the few patients of the small class); ``calibration`` (10 equal
  bins of the predicted probability: rows, mean prediction, observed rate) only when
  every non-empty bin holds at least ``k`` rows — otherwise withheld whole;
* regression (``metrics = "regression"``): ``mse``, ``mae``;
* a mean of per-row terms (log loss, Brier, squared or absolute error) is withheld when
  its two largest terms make up more than 90 % of the sum (dominance: a plan that makes
  one patient's prediction extreme would read that patient's label from the mean).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from medfed.common.errors import BadRequest

__all__ = ["BINS", "MetricSet", "check_predictions", "compute_metrics"]

MetricSet = Literal["binary", "regression"]
BINS = 10
DOMINANCE = 0.9
FloatArray = npt.NDArray[np.float64]


def check_predictions(raw: Any, n_eval: int, kind: MetricSet) -> FloatArray:
    """The predictions as float64, or :class:`BadRequest` naming what is wrong (no values)."""
    values = np.asarray(raw, dtype=np.float64).reshape(-1) if np.ndim(raw) <= 2 else None
    if values is None or values.shape != (n_eval,):
        raise BadRequest(f"the plan's predictions are not one value per held-out row ({n_eval})")
    if not np.isfinite(values).all():
        raise BadRequest("the plan's predictions hold NaN or infinite values")
    if kind == "binary" and (values.min(initial=0.0) < 0 or values.max(initial=0.0) > 1):
        raise BadRequest("binary predictions must be probabilities in [0, 1]")
    return values


def _dominated(terms: FloatArray) -> bool:
    total = float(terms.sum())
    if total <= 0:
        return False
    top = np.sort(terms)[-2:]
    return float(top.sum()) > DOMINANCE * total


def _mean(terms: FloatArray) -> float | None:
    return None if _dominated(terms) else float(terms.mean())


def _auc(p: FloatArray, y: FloatArray) -> float:
    """Mann-Whitney AUC with tied scores counted half (as scikit-learn's ``roc_auc_score``)."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _calibration(p: FloatArray, y: FloatArray, k: int) -> list[list[float]] | None:
    bins = np.minimum((p * BINS).astype(np.int64), BINS - 1)
    out: list[list[float]] = []
    for b in range(BINS):
        mask = bins == b
        n = int(mask.sum())
        if n == 0:
            continue
        if n < k:
            return None  # one small bin withholds the whole table
        out.append([float(n), float(p[mask].mean()), float(y[mask].mean())])
    return out


def compute_metrics(
    predictions: FloatArray, labels: npt.ArrayLike, kind: MetricSet, k: int
) -> dict[str, Any] | None:
    """The gated metric set; ``None`` when fewer than ``k`` held-out rows (nothing leaves)."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = predictions
    if len(y) != len(p):
        raise BadRequest("predictions and labels differ in length")
    if len(y) < k:
        return None
    out: dict[str, Any] = {}
    if kind == "regression":
        out["mse"] = _mean((p - y) ** 2)
        out["mae"] = _mean(np.abs(p - y))
        return {key: value for key, value in out.items() if value is not None}
    if not np.isin(y, (0.0, 1.0)).all():
        raise BadRequest("binary metrics need a 0/1 label column")
    eps = np.finfo(np.float64).eps
    q = np.clip(p, eps, 1 - eps)
    out["loss"] = _mean(-(y * np.log(q) + (1 - y) * np.log(1 - q)))
    out["accuracy"] = float(((p >= 0.5) == (y == 1)).mean())
    out["brier"] = _mean((p - y) ** 2)
    n_pos = int((y == 1).sum())
    if n_pos >= k and len(y) - n_pos >= k:
        out["auc"] = _auc(p, y)
    calibration = _calibration(p, y, k)
    if calibration is not None:
        out["calibration"] = calibration
    return {key: value for key, value in out.items() if value is not None}
