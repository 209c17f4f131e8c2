"""The statistics algorithms in dp mode: clamped local aggregates and their pooling.

Local side (a node in dp mode, ``LocalContext.dp`` set): values are clamped to public
bounds (:meth:`~medfed.algorithms.dp.DPSettings.bound`) and summed; every key of the
output is declared for the node's noise (:mod:`medfed.algorithms.dp`):

- moments (``mean``, ``variance``, ``summary``)::

      {"rows": R, "n": {column: non-null count}, "sum": {column: Σ clamp(x)},
       "sumsq": {column: Σ clamp(x)²},          # variance and summary
       "bounds": {column: [low, high]}}          # summary: the public clamp bounds

  noise on ``rows`` (L1 sensitivity 1), ``n`` (one row adds one to each column's count:
  the number of columns), ``sum`` (per column OpenDP's clamp-then-sum stability: the
  range's largest magnitude, or its width when it spans zero) and ``sumsq`` (the same
  for the squares' range, ``[0 or min², max²]``); ``bounds`` is public.
- quantiles: counts of the clamped values in :data:`DP_BINS` equal bins of the public
  range (``{"counts": [...], "grid": [low, high, bins]}``; one row is in one bin).

Hub side: noisy sums and counts pool by addition (each stays unbiased); the mean is the
pooled noisy sum over the pooled noisy count and the variance
``(Σx² - (Σx)²/n)/(n - 1)`` (ratios of unbiased estimates: consistent, with a bias of
order noise²/n²); quantiles interpolate linearly in the pooled histogram with negative
counts set to zero, as OpenDP's ``make_quantiles_from_counts`` does on such counts. All of
this is post-processing: it spends no ε. An exact node's answer pools with the noisy ones
(its numbers converted to the same sums); the result is then ``dp``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medfed.algorithms.dp import Bounds, DPRule, DPSettings, Noise, Public
from medfed.common.errors import BadRequest

__all__ = [
    "DP_BINS",
    "moments_local",
    "moments_noise",
    "pool_moments",
    "quantiles_from_counts",
    "quantiles_local",
    "quantiles_noise",
    "quantiles_pool",
    "square_bounds",
]

#: bins of the public range a dp quantile grid has
DP_BINS = 64


def square_bounds(bounds: Bounds) -> Bounds:
    """The range of ``x²`` for ``x`` in ``bounds``."""
    low, high = bounds
    top = max(low * low, high * high)
    bottom = 0.0 if low <= 0.0 <= high else min(low * low, high * high)
    return bottom, top


def column_bounds(
    dp: DPSettings, columns: Sequence[str], given: Mapping[str, Sequence[float]] | None
) -> dict[str, Bounds]:
    return {column: dp.bound(column, given) for column in columns}


def moments_noise(
    dp: DPSettings,
    columns: Sequence[str],
    given: Mapping[str, Sequence[float]] | None,
    *,
    spread: bool,
    with_bounds: bool,
) -> list[DPRule]:
    bounds = column_bounds(dp, columns, given)
    rules: list[DPRule] = [
        Noise(("rows",)),
        Noise(("n",), rows=len(columns)),
        Noise(("sum",), bounds=bounds),
    ]
    if spread:
        rules.append(Noise(("sumsq",), bounds={c: square_bounds(b) for c, b in bounds.items()}))
    if with_bounds:
        rules.append(Public("bounds"))
    return rules


def moments_local(
    frame: pd.DataFrame,
    dp: DPSettings,
    columns: Sequence[str],
    given: Mapping[str, Sequence[float]] | None,
    *,
    spread: bool,
    with_bounds: bool,
) -> dict[str, Any]:
    bounds = column_bounds(dp, columns, given)
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    squares: dict[str, float] = {}
    for column in columns:
        values = np.clip(frame[column].dropna().to_numpy(dtype=np.float64), *bounds[column])
        counts[column] = len(values)
        sums[column] = math.fsum(values)
        squares[column] = math.fsum(values * values)
    out: dict[str, Any] = {"rows": len(frame), "n": counts, "sum": sums}
    if spread:
        out["sumsq"] = squares
    if with_bounds:
        out["bounds"] = {c: [b[0], b[1]] for c, b in bounds.items()}
    return out


def pool_moments(
    columns: Sequence[str], payloads: Sequence[dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    """Per column ``n``, ``mean``, ``variance``, ``std``, bounds; and the pooled rows."""
    pooled: dict[str, Any] = {}
    for column in columns:
        n, total, squares = 0, 0.0, 0.0
        lows: list[float] = []
        highs: list[float] = []
        for p in payloads:
            if "dp" in p:
                n += int(p["n"][column])
                total += float(p["sum"][column])
                squares += float(p.get("sumsq", {}).get(column, 0.0))
                if "bounds" in p:
                    lows.append(float(p["bounds"][column][0]))
                    highs.append(float(p["bounds"][column][1]))
                continue
            count, stats = int(p["n"][column]), p["stats"][column]
            if count == 0 or stats is None:
                continue
            n += count
            total += float(stats["sum"])
            if "m2" in stats:
                squares += float(stats["m2"]) + float(stats["sum"]) ** 2 / count
            if "min_bound" in stats:
                lows.append(float(stats["min_bound"]))
                highs.append(float(stats["max_bound"]))
        out: dict[str, Any] = {"n": n, "mean": total / n if n > 0 else None}
        variance = max((squares - total * total / n) / (n - 1), 0.0) if n > 1 else None
        out["variance"] = variance
        out["std"] = math.sqrt(variance) if variance is not None else None
        if lows:
            out["min_bound"], out["max_bound"] = min(lows), max(highs)
        pooled[column] = out
    rows = sum(int(p["rows"]) for p in payloads)
    return pooled, rows


def quantiles_noise(dp: DPSettings, column: str, given: Sequence[float] | None) -> list[DPRule]:
    dp.bound(column, {column: given} if given is not None else None)  # refuses without one
    return [Noise(("counts",)), Public("grid")]


def quantiles_local(
    values: np.ndarray, dp: DPSettings, column: str, given: Sequence[float] | None
) -> dict[str, Any]:
    low, high = dp.bound(column, {column: given} if given is not None else None)
    edges = np.linspace(low, high, DP_BINS + 1)
    clamped = np.clip(values[np.isfinite(values)], low, high)
    counts, _ = np.histogram(clamped, bins=edges)
    return {"counts": [int(c) for c in counts], "grid": [low, high, DP_BINS]}


def quantiles_from_counts(
    edges: Sequence[float], counts: Sequence[float], probs: Sequence[float]
) -> list[float | None]:
    """Linear interpolation in a histogram (negative counts as 0); None when it is empty.

    For non-negative counts this is OpenDP's ``make_quantiles_from_counts`` (linear): the
    first bin whose cumulative count reaches ``p·total``, interpolated inside it.
    """
    weights = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    cumulative = np.cumsum(weights)
    total = float(cumulative[-1]) if len(cumulative) else 0.0
    out: list[float | None] = []
    for p in probs:
        if total <= 0:
            out.append(None)
            continue
        target = p * total
        i = min(int(np.searchsorted(cumulative, target, side="left")), len(weights) - 1)
        before = float(cumulative[i - 1]) if i > 0 else 0.0
        share = (target - before) / weights[i] if weights[i] > 0 else 0.0
        out.append(float(edges[i] + share * (edges[i + 1] - edges[i])))
    return out


def quantiles_pool(
    payloads: Sequence[dict[str, Any]], probs: Sequence[float]
) -> tuple[int, list[float | None]]:
    """Pooled noisy count and quantiles of the dp nodes' histograms (one grid for all)."""
    if any("dp" not in p for p in payloads):
        raise BadRequest(
            "quantiles: some nodes answered in dp mode and some exactly; a quantile needs "
            "one mode at every node"
        )
    grids = {tuple(p["grid"]) for p in payloads}
    if len(grids) != 1:
        raise BadRequest(
            "quantiles: the dp nodes used different grids (their policy bounds differ); "
            "give bounds=[low, high] in the parameters"
        )
    low, high, bins = next(iter(grids))
    counts = np.zeros(int(bins), dtype=np.int64)
    for p in payloads:
        counts += np.asarray(p["counts"], dtype=np.int64)
    edges = np.linspace(float(low), float(high), int(bins) + 1)
    return int(counts.sum()), quantiles_from_counts(edges.tolist(), counts.tolist(), probs)
