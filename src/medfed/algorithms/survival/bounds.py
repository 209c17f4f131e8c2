"""How far the risk-set rule can have moved a two-group log-rank test: a proven bound.

Runs on the hub inside ``logrank``'s aggregate step, on the pooled coarsened tables; it
sends nothing. The risk-set rule (:mod:`medfed.algorithms.survival.times`) moved each
coarsened unit's tail — at most ``k - 1`` rows with durations beyond its boundary ``tau``
— back to ``tau``. What the hub knows of the truth: at a grid time after ``tau`` the true
risk set of that unit's group is larger by 0..k-1 rows, and at most
``e = min(k - 1, events of the unit at tau)`` of the events at ``tau`` really happened
later (at unknown times).

Write the score as a sum over events, ``U = Σ_j (δ_j - p(t_j))`` with ``δ_j = 1`` for an
event in the first group and ``p(t) = n_1(t) / n(t)``; the variance as
``V = Σ_j w(t_j) p(t_j) (1 - p(t_j))`` with ``w = (n - d) / (n - 1)``. Then:

* an event that was not moved changes only through ``p`` and ``w`` at its time, which lie
  in the ranges that risk sets larger by ``[0, M_1] x [0, M_2]`` and event counts larger
  by up to the moved events allow (``M_g``: ``k - 1`` summed over the group's units whose
  boundary lies before that time); each term's change is at most the widest distance
  from its coarsened value within those ranges (corners: ``p`` and ``w`` are monotone
  in each count);
* a moved event's term changes by at most 1 in ``U`` (``δ - p`` lies in [-1, 1] on the
  same side) and ``1/4`` in ``V``.

So ``|U - U'| <= ΔU`` and ``|V - V'| <= ΔV``; the statistic ``U² / V`` lies in
``[max(0, |U'| - ΔU)² / (V' + ΔV), (|U'| + ΔU)² / (V' - ΔV)]`` (unbounded above when
``V' <= ΔV``), and the p value in the matching chi-squared (1 df) interval. With more
than two groups no bound is computed (the result says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from medfed.algorithms.survival.event_table import PooledTable

__all__ = ["LogrankBound", "logrank_bound"]

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class LogrankBound:
    """Ranges that certainly hold the uncoarsened statistic and p value."""

    statistic: tuple[float, float | None]
    p_value: tuple[float, float]


def _moved(table: PooledTable, size: int) -> tuple[Floats, Floats, float]:
    """Per grid index: extra rows possibly at risk, extra events possibly there; and the
    total of moved events."""
    extra_rows = np.zeros(size)
    extra_events = np.zeros(size)
    moved_total = 0.0
    for tail in table.tails:
        extra_rows[tail.boundary_index :] += tail.tail_max
        if tail.boundary_index > 0:
            moved = float(min(tail.tail_max, int(tail.events[tail.boundary_index - 1])))
            moved_total += moved
            extra_events[tail.boundary_index - 1 :] += moved
    return extra_rows, extra_events, moved_total


def _w(n: Floats, d: Floats) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 1, np.clip((n - d) / (n - 1), 0.0, 1.0), 1.0)


def logrank_bound(tables: Sequence[PooledTable], statistic: float) -> LogrankBound | None:
    """The bound of the module docstring for two groups; None for more, or when exact."""
    from scipy import stats  # scipy.stats costs ~1 s to import: loaded where it is used

    if len(tables) != 2 or not any(t.tails for t in tables):
        return None
    first, second = tables
    size = len(first.times)
    a = first.at_risk.astype(np.float64)
    b = second.at_risk.astype(np.float64)
    d = (first.events + second.events).astype(np.float64)
    keep = d > 0
    rows_a, events_a, moved_a = _moved(first, size)
    rows_b, events_b, moved_b = _moved(second, size)
    more = events_a + events_b  # events that may really lie at a later grid time
    a, b, d, rows_a, rows_b, more = (x[keep] for x in (a, b, d, rows_a, rows_b, more))
    n = a + b
    p = a / n
    w = _w(n, d)
    v = w * p * (1 - p)
    # p over the corners of n_1 in [a, a + M_1], n_2 in [b, b + M_2]
    p_high = (a + rows_a) / (a + rows_a + b)
    p_low = a / (a + b + rows_b)
    du = np.maximum(p_high - p, p - p_low)
    # w over n in [n, n + M], d in [d - more, d + more]; p(1 - p) over [p_low, p_high]
    big_n = n + rows_a + rows_b
    w_values = [_w(x, y) for x in (n, big_n) for y in (np.maximum(d - more, 1.0), d + more)]
    w_low, w_high = np.minimum.reduce(w_values), np.maximum.reduce(w_values)
    q_ends = [p_low * (1 - p_low), p_high * (1 - p_high)]
    q_low = np.minimum(*q_ends)
    straddles = (p_low <= 0.5) & (p_high >= 0.5)
    q_high = np.where(straddles, 0.25, np.maximum(*q_ends))
    dv = np.maximum(w_high * q_high - v, v - w_low * q_low)
    moved = moved_a + moved_b
    delta_u = float((d * du).sum()) + moved
    delta_v = float((d * dv).sum()) + moved / 4
    u = float((first.events[keep] - d * p).sum())
    var = float((d * v).sum())
    low = max(0.0, abs(u) - delta_u) ** 2 / (var + delta_v)
    high = (abs(u) + delta_u) ** 2 / (var - delta_v) if var > delta_v else None
    low = min(low, statistic)
    high = None if high is None else max(high, statistic)
    p_high_value = float(stats.chi2.sf(low, 1))
    p_low_value = 0.0 if high is None or not math.isfinite(high) else float(stats.chi2.sf(high, 1))
    return LogrankBound(statistic=(low, high), p_value=(p_low_value, p_high_value))
