"""The hub's pooled validation statistics from the nodes' gated counts and sums.

Everything here is exact arithmetic on what the nodes released:

* confusion counts at each threshold — the sums of the leaf counts above and below it
  (a threshold a node withheld leaves that node out of that threshold, and says so);
  sensitivity, specificity, PPV and NPV with Wilson and Clopper-Pearson intervals;
* the AUC from the pooled leaves: a positive in leaf ``[a, b)`` and a negative in
  ``[c, d)`` are ordered when the leaves do not overlap; pairs in overlapping leaves
  (ties within bins) count ½ in the estimate, 0 in the lower bound, 1 in the upper bound.
  When every leaf is one fine bin and the scores lie on the grid, overlapping means
  equal and the estimate is the exact AUC. A DeLong-style interval uses the same
  placement values (each leaf a tie group);
* calibration bins (count, events, mean score) on the calibration edges every node kept;
  the Brier score from the pooled sums of squared errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["GroupCounts", "auc", "binomial", "calibration", "confusion", "group_summary"]

Z95 = float(stats.norm.ppf(0.975))
#: the ROC curve is drawn through at most this many edges (every exact point is kept)
ROC_POINTS = 200


class GroupCounts:
    """One group's released counts from several nodes (leaves in fine-bin units)."""

    def __init__(self, grid: int) -> None:
        self.grid = grid
        self.neg: list[tuple[int, int, int]] = []
        self.pos: list[tuple[int, int, int]] = []
        self.sse = 0.0
        self.nodes: list[dict[str, Any]] = []  # per node: cuts, calibration edges, sums

    def add(self, layout: dict[str, Any], counts: list[list[int]], sums: dict[str, Any]) -> None:
        leaves = [(int(a), int(b)) for a, b in layout["leaves"]]
        for (a, b), n0, n1 in zip(leaves, counts[0], counts[1], strict=True):
            if n0:
                self.neg.append((a, b, int(n0)))
            if n1:
                self.pos.append((a, b, int(n1)))
        self.sse += float(sums["sse"])
        self.nodes.append(
            {
                "cuts": set(layout["cuts"]),
                "calibration": list(layout["calibration"]),
                "leaves": leaves,
                "counts": counts,
                "score": list(sums["score"]),
            }
        )

    @property
    def n_pos(self) -> int:
        return sum(c for _, _, c in self.pos)

    @property
    def n_neg(self) -> int:
        return sum(c for _, _, c in self.neg)


def binomial(k: int, n: int) -> dict[str, Any]:
    """``k/n`` with its 95% Wilson and Clopper-Pearson intervals (None when ``n`` is 0)."""
    if n == 0:
        return {"value": None, "num": k, "den": n, "wilson": None, "clopper_pearson": None}
    p = k / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))
    return {
        "value": p,
        "num": k,
        "den": n,
        "wilson": [centre - half, centre + half],
        "clopper_pearson": [lo, hi],
    }


def confusion(group: GroupCounts, threshold: int) -> dict[str, Any]:
    """Counts at ``score >= threshold/grid`` over the nodes that kept that cut."""
    tp = fp = fn = tn = 0
    left_out = 0
    for node in group.nodes:
        if threshold not in node["cuts"]:
            left_out += 1
            continue
        for (a, _), n0, n1 in zip(
            node["leaves"], node["counts"][0], node["counts"][1], strict=True
        ):
            if a >= threshold:
                tp, fp = tp + n1, fp + n0
            else:
                fn, tn = fn + n1, tn + n0
    return {
        "threshold": threshold / group.grid,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "nodes_left_out": left_out,
        "sensitivity": binomial(tp, tp + fn),
        "specificity": binomial(tn, tn + fp),
        "ppv": binomial(tp, tp + fp),
        "npv": binomial(tn, tn + fn),
    }


def _placements(
    these: list[tuple[int, int, int]], others: list[tuple[int, int, int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per leaf of ``these``: how many ``others`` lie wholly below, and overlap it."""
    if not these:
        empty = np.zeros(0)
        return empty, empty, empty
    lo = np.array([a for a, _, _ in these])
    hi = np.array([b for _, b, _ in these])
    count = np.array([c for _, _, c in these], dtype=np.float64)
    o_lo = np.array([a for a, _, _ in others])
    o_hi = np.array([b for _, b, _ in others])
    o_count = np.array([c for _, _, c in others], dtype=np.float64)
    by_hi, by_lo = np.argsort(o_hi), np.argsort(o_lo)
    cum_hi = np.concatenate([[0.0], np.cumsum(o_count[by_hi])])
    cum_lo = np.concatenate([[0.0], np.cumsum(o_count[by_lo])])
    below = cum_hi[np.searchsorted(o_hi[by_hi], lo, side="right")]  # others with d <= a
    above = cum_lo[-1] - cum_lo[np.searchsorted(o_lo[by_lo], hi, side="left")]  # c >= b
    overlap = cum_lo[-1] - below - above
    return count, below, overlap


def auc(group: GroupCounts) -> dict[str, Any] | None:
    """The AUC, its binning bounds and a DeLong-style 95% interval (None: one class)."""
    n1, n0 = group.n_pos, group.n_neg
    if n1 == 0 or n0 == 0:
        return None
    count, below, overlap = _placements(group.pos, group.neg)
    pairs = float(n1) * float(n0)
    estimate = float(np.sum(count * (below + 0.5 * overlap)) / pairs)
    lower = float(np.sum(count * below) / pairs)
    upper = float(np.sum(count * (below + overlap)) / pairs)
    v10 = (below + 0.5 * overlap) / n0  # each positive's share of negatives under it
    c0, below0, overlap0 = _placements(group.neg, group.pos)
    above0 = n1 - below0 - overlap0
    v01 = (above0 + 0.5 * overlap0) / n1  # each negative's share of positives over it
    s10 = float(np.sum(count * (v10 - estimate) ** 2)) / max(n1 - 1, 1)
    s01 = float(np.sum(c0 * (v01 - estimate) ** 2)) / max(n0 - 1, 1)
    se = math.sqrt(s10 / n1 + s01 / n0)
    exact = upper - lower == 0 or all(b - a == 1 for a, b, _ in (*group.pos, *group.neg))
    return {
        "estimate": estimate,
        "lower_bound": lower,
        "upper_bound": upper,
        "se": se,
        "ci": [max(0.0, estimate - Z95 * se), min(1.0, estimate + Z95 * se)],
        "one_bin_leaves": exact,
    }


def _above(arr: np.ndarray, edge: int) -> float:
    """Rows at or above ``edge`` of leaves ``arr`` (rows lo, hi, count), a leaf straddling
    it counted in proportion (uniform)."""
    if not len(arr):
        return 0.0
    share = np.clip((arr[:, 1] - edge) / (arr[:, 1] - arr[:, 0]), 0.0, 1.0)
    return float(np.sum(arr[:, 2] * share))


def roc_points(group: GroupCounts) -> dict[str, list[list[float]]]:
    """The ROC curve at every leaf edge of every site (``curve``; a leaf that straddles an
    edge counts in proportion, as the AUC estimate counts ties within bins) and the exact
    points (``exact``: edges inside no site's leaf, where every count above is known)."""
    n1, n0 = group.n_pos, group.n_neg
    if not group.nodes or n1 == 0 or n0 == 0:
        return {"curve": [], "exact": []}
    edges = {0, group.grid}
    for node in group.nodes:
        for a, b in node["leaves"]:
            edges.update((a, b))
    inside = np.asarray(
        [(a, b) for node in group.nodes for a, b in node["leaves"] if b - a > 1], dtype=np.int64
    ).reshape(-1, 2)
    ordered = sorted(edges)
    if len(ordered) > ROC_POINTS:  # a readable curve; the exact points are all kept
        keep = set(np.linspace(0, len(ordered) - 1, ROC_POINTS).round().astype(int).tolist())
        thin = {e for i, e in enumerate(ordered) if i in keep}
    else:
        thin = set(ordered)
    curve, exact = [], []
    neg = np.asarray(group.neg, dtype=np.float64).reshape(-1, 3)
    pos = np.asarray(group.pos, dtype=np.float64).reshape(-1, 3)
    for edge in ordered:
        is_exact = not np.any((inside[:, 0] < edge) & (edge < inside[:, 1]))
        if edge not in thin and not is_exact:
            continue
        point = [_above(neg, edge) / n0, _above(pos, edge) / n1]
        if edge in thin:
            curve.append(point)
        if is_exact:
            exact.append(point)
    unique = sorted({(x, y) for x, y in exact})
    return {"curve": sorted(curve), "exact": [[x, y] for x, y in unique]}


def calibration(group: GroupCounts) -> list[dict[str, Any]]:
    """Pooled calibration bins on the edges every node kept (merged bins otherwise)."""
    if not group.nodes:
        return []
    common = set(group.nodes[0]["calibration"])
    for node in group.nodes[1:]:
        common &= set(node["calibration"])
    edges = sorted(common)
    n = np.zeros(len(edges) - 1)
    events = np.zeros(len(edges) - 1)
    score = np.zeros(len(edges) - 1)
    for node in group.nodes:
        for (a, _), n0, n1 in zip(
            node["leaves"], node["counts"][0], node["counts"][1], strict=True
        ):
            i = int(np.searchsorted(edges, a, side="right")) - 1
            n[i] += n0 + n1
            events[i] += n1
        own = node["calibration"]
        for j, total in enumerate(node["score"]):
            i = int(np.searchsorted(edges, own[j], side="right")) - 1
            score[i] += total
    grid = group.grid
    return [
        {
            "lo": edges[i] / grid,
            "hi": edges[i + 1] / grid,
            "n": int(n[i]),
            "events": int(events[i]),
            "mean_predicted": float(score[i] / n[i]) if n[i] else None,
            "observed": float(events[i] / n[i]) if n[i] else None,
        }
        for i in range(len(edges) - 1)
    ]


def group_summary(group: GroupCounts, thresholds: Sequence[int]) -> dict[str, Any]:
    """n, classes, AUC, Brier and the confusion statistics of one group."""
    n = group.n_pos + group.n_neg
    return {
        "n": n,
        "n_pos": group.n_pos,
        "n_neg": group.n_neg,
        "auc": auc(group),
        "brier": group.sse / n if n else None,
        "thresholds": [confusion(group, t) for t in thresholds],
        "calibration": calibration(group),
        "roc": roc_points(group),
    }
