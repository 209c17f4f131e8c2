"""The node's score histograms, coarsened so every released count is 0 or at least k.

How it runs (one node, one round-0 answer): scores in ``[0, 1]`` fall into ``B`` fine
bins ``[i/B, (i+1)/B)`` (a score of 1 in the last). The cut points that matter — each
threshold and each calibration edge, all on the grid — split the grid into segments.

1. *Cuts* (overall rows): walking up the grid, a threshold is kept only when the
   segment it closes holds 0 or at least ``k`` rows of each class; otherwise it is
   dropped and the segment merges into the next (that threshold's confusion counts are
   withheld). A last segment that is small drops the cut before it.
2. *Subgroups*: each subgroup variable (every level, missing values a level of their
   own, so the levels partition the rows) is released only if every level's every
   segment holds 0 or at least ``k`` rows of each class; otherwise the whole variable is
   withheld, so no level follows from the overall counts minus the others. Then each
   calibration edge is added where both segments it makes pass the same test in the
   overall rows and every released level (otherwise two calibration bins merge).
3. *Leaves*: walking up each segment bin by bin, a leaf is closed at the first edge
   where it, and the rest of the segment, hold 0 or at least ``k`` rows of each class
   in the overall rows and in every released level (empty stretches belong to no leaf).
   All groups share the leaves, so every released number — a leaf count, a confusion
   cell, a calibration count, and any difference of them — is a sum of cells that are
   each 0 or at least ``k``. Leaf edges are where a class's k-th next row falls, to the
   grid's resolution: as released quantiles, they place some scores within one fine bin
   without saying whose.

The price is resolution: pairs of a positive and a negative in overlapping leaves have
an unknown order, which bounds the AUC (:mod:`.pooling`). Scores that lie on the grid,
in leaves one fine bin wide, give the exact AUC.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

__all__ = ["Layout", "fine_bins", "layout", "leaf_counts"]

IntArray = npt.NDArray[np.int64]


def fine_bins(scores: npt.NDArray[np.float64], grid: int) -> IntArray:
    """The fine bin of each score: ``i`` with ``i/B <= s < (i+1)/B`` (1 in the last)."""
    edges = np.arange(grid + 1, dtype=np.float64) / grid
    index = np.searchsorted(edges, scores, side="right") - 1
    return np.clip(index, 0, grid - 1).astype(np.int64)


@dataclass(frozen=True)
class Layout:
    """What the node releases the counts on: kept cuts, released variables, leaves."""

    cuts: list[int]
    released: list[str]
    leaves: list[tuple[int, int]]


def _ok(counts: IntArray, k: int) -> bool:
    return bool(np.all((counts == 0) | (counts >= k)))


def _kept_cuts(cum: IntArray, candidates: list[int], grid: int, k: int) -> list[int]:
    """``cum``: (classes, B+1) prefix sums of the overall rows; the cuts that survive."""
    kept: list[int] = []
    last = 0
    for cut in sorted(set(candidates)):
        if _ok(cum[:, cut] - cum[:, last], k):
            kept.append(cut)
            last = cut
    while kept and not _ok(cum[:, grid] - cum[:, kept[-1]], k):
        kept.pop()
    return kept


def _refine(cum: IntArray, cuts: list[int], extra: list[int], grid: int, k: int) -> list[int]:
    """Add each of ``extra`` whose two new segments both hold 0 or at least ``k``."""
    kept = sorted(set(cuts))
    for cut in sorted(set(extra) - set(kept)):
        bounds = [0, *kept, grid]
        i = int(np.searchsorted(bounds, cut))
        a, b = bounds[i - 1], bounds[i]
        if _ok(cum[:, cut] - cum[:, a], k) and _ok(cum[:, b] - cum[:, cut], k):
            kept = sorted([*kept, cut])
    return kept


def layout(
    groups: dict[str, dict[str, IntArray]],
    thresholds: list[int],
    calibration: list[int],
    grid: int,
    k: int,
) -> Layout:
    """``groups``: ``{"overall": {"": hist}, variable: {level: hist}}``, each ``hist`` of
    shape (2, B) (negatives, positives); see the module text."""
    prefix = {
        name: {level: _prefix(h) for level, h in levels.items()} for name, levels in groups.items()
    }
    overall = prefix["overall"][""]
    cuts = _kept_cuts(overall, thresholds, grid, k)
    bounds = [0, *cuts, grid]
    released = []
    for name, levels in prefix.items():
        if name == "overall":
            continue
        if all(
            _ok(cum[:, b] - cum[:, a], k) for cum in levels.values() for a, b in pairwise(bounds)
        ):
            released.append(name)
    stacked = np.concatenate(
        [overall, *(cum for name in released for cum in prefix[name].values())], axis=0
    )
    cuts = _refine(stacked, cuts, calibration, grid, k)
    bounds = [0, *cuts, grid]
    leaves: list[tuple[int, int]] = []
    for a, b in pairwise(bounds):
        _split(stacked, a, b, k, leaves)
    return Layout(cuts=cuts, released=released, leaves=leaves)


def _prefix(hist: IntArray) -> IntArray:
    out = np.zeros((hist.shape[0], hist.shape[1] + 1), dtype=np.int64)
    np.cumsum(hist, axis=1, out=out[:, 1:])
    return out


def _split(cum: IntArray, a: int, b: int, k: int, leaves: list[tuple[int, int]]) -> None:
    """Leaves of ``[a, b)``: walking up, close a leaf at the first edge where it and the
    rest of the segment hold 0 or at least ``k`` of every group and class."""
    last = a
    for j in range(a + 1, b):
        acc = cum[:, j] - cum[:, last]
        if not np.any(acc):
            last = j  # nothing yet: the leaf starts at the first occupied bin
            continue
        if _ok(acc, k) and _ok(cum[:, b] - cum[:, j], k):
            leaves.append((last, j))
            last = j
    if np.any(cum[:, b] - cum[:, last]):
        leaves.append((last, b))


def leaf_counts(hist: IntArray, leaves: list[tuple[int, int]]) -> list[list[int]]:
    """Counts per class (negatives, positives) in each leaf: ``[[neg...], [pos...]]``."""
    cum = _prefix(hist)
    return [[int(cum[c, b] - cum[c, a]) for a, b in leaves] for c in range(hist.shape[0])]
