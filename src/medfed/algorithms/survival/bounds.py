"""How far the risk-set rule can have moved a log-rank test: a proven bound, any G >= 2.

Runs on the hub inside ``logrank``'s aggregate step, on the pooled coarsened tables; it
sends nothing. The risk-set rule (:mod:`medfed.algorithms.survival.times`) moved each
coarsened unit's tail — at most ``k - 1`` rows with durations beyond its boundary ``tau``
— back to ``tau``. What the hub knows of the truth: at a grid time after ``tau`` the true
risk set of that unit's group is larger by 0..k-1 rows, and at most
``e = min(k - 1, events of the unit at tau)`` of the events at ``tau`` really happened
later (at unknown times).

The statistic is ``Z' V⁻¹ Z`` over the first ``G - 1`` groups, with the score
``Z_g = Σ_j (δ_gj - d_j p_g(t_j))`` (``δ_gj`` events of group ``g`` at ``t_j``,
``p_g = n_g / n``) and ``V_gh = Σ_j d_j w(t_j) (p_g δ_gh - p_g p_h)`` with
``w = (n - d) / (n - 1)``. Then, term by term:

* an event that was not moved changes only through ``p`` and ``w`` at its time, which lie
  in the ranges that risk sets larger by ``[0, M_g]`` in each group and event counts
  larger by up to the moved events allow (``M_g``: ``k - 1`` summed over the group's
  units whose boundary lies before that time); ``p_g`` lies in
  ``[a_g / (n + Σ_{h≠g} M_h), (a_g + M_g) / (n + M_g)]`` and ``w`` at the corners of
  ``n`` and ``d`` (it is monotone in each); each entry's change is at most the widest
  distance from its coarsened value within those ranges;
* a moved event's term changes by at most 1 in each ``Z_g`` (``δ - p`` lies in [-1, 1]
  on the same side) and ``1/4`` in each ``V_gh`` (``p_g(1 - p_g)`` and ``p_g p_h`` lie in
  ``[0, 1/4]``).

So ``|Z_g - Z'_g| <= ΔZ_g`` and ``|V_gh - V'_gh| <= ΔV_gh``. Bounds on the quadratic form:

* below: for every ``y``, ``Z' V⁻¹ Z >= 2 y'Z - y'V y`` (equality at ``y = V⁻¹Z``); with
  ``y = s V'⁻¹ Z'`` and the worst ``Z``, ``V`` in their ranges, the best ``s`` gives
  ``max(0, a)² / b`` with ``a = y'Z' - |y|'ΔZ`` and ``b = y'V'y + |y|'ΔV|y|``;
* above: ``V ⪰ V' - ε I`` with ``ε`` the spectral norm of the matrix ``ΔV`` (it bounds
  that of every perturbation within it), so ``Z' V⁻¹ Z <= Z'(V' - εI)⁻¹ Z``, a convex
  function of ``Z`` whose maximum over the box ``Z' ± ΔZ`` lies at a corner (all
  ``2^(G-1)`` corners up to 13 groups; beyond, ``(‖Z'‖ + ‖ΔZ‖)² / (λ_min(V') - ε)``);
  unbounded above when ``λ_min(V') <= ε``.

For two groups these are ``(|U'| - ΔU)² / (V' + ΔV)`` and ``(|U'| + ΔU)² / (V' - ΔV)``.
The p value follows in the matching chi-squared (``G - 1`` df) interval.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from medfed.algorithms.survival.event_table import PooledTable

__all__ = ["LogrankBound", "logrank_bound"]

Floats = NDArray[np.float64]

MAX_CORNER_GROUPS = 13  # 2^12 corners of the score box; beyond, a norm bound


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


def _farthest(value: Floats, low: Floats, high: Floats) -> Floats:
    return np.asarray(np.maximum(high - value, value - low), dtype=np.float64)


def _changes(tables: Sequence[PooledTable]) -> tuple[Floats, Floats, Floats, Floats]:
    """Coarsened ``Z``, ``V`` (first G-1 groups) and the bounds ``ΔZ``, ``ΔV`` on them."""
    size = len(tables[0].times)
    a = np.stack([t.at_risk for t in tables], axis=1).astype(np.float64)
    events = np.stack([t.events for t in tables], axis=1).astype(np.float64)
    d = events.sum(axis=1)
    keep = d > 0
    moves = [_moved(t, size) for t in tables]
    rows = np.stack([m[0] for m in moves], axis=1)[keep]
    more = np.sum([m[1] for m in moves], axis=0)[keep]
    moved = float(sum(m[2] for m in moves))
    a, events, d = a[keep], events[keep], d[keep]
    n = a.sum(axis=1)
    p = a / n[:, None]
    w = _w(n, d)
    # p_g over the corners: own risk set up by M_g (others as they are), or others up
    p_high = (a + rows) / (n[:, None] + rows)
    p_low = a / (n[:, None] + rows.sum(axis=1)[:, None] - rows)
    big_n = n + rows.sum(axis=1)
    corners = [_w(x, y) for x in (n, big_n) for y in (np.maximum(d - more, 1.0), d + more)]
    w_low, w_high = np.minimum.reduce(corners), np.maximum.reduce(corners)
    g = len(tables) - 1
    z = (events - d[:, None] * p).sum(axis=0)[:g]
    dz = (d[:, None] * _farthest(p, p_low, p_high)).sum(axis=0)[:g] + moved
    var = np.zeros((g, g))
    dv = np.zeros((g, g))
    for i in range(g):
        for j in range(g):
            if i == j:
                value = p[:, i] * (1 - p[:, i])
                ends = [p_low[:, i] * (1 - p_low[:, i]), p_high[:, i] * (1 - p_high[:, i])]
                low = np.minimum(*ends)
                straddles = (p_low[:, i] <= 0.5) & (p_high[:, i] >= 0.5)
                high = np.where(straddles, 0.25, np.maximum(*ends))
            else:  # -p_i p_j, both factors positive and each within its range
                value = -p[:, i] * p[:, j]
                low = -p_high[:, i] * p_high[:, j]
                high = -p_low[:, i] * p_low[:, j]
            var[i, j] = float((d * w * value).sum())
            ends = [x * y for x in (w_low, w_high) for y in (low, high)]  # bilinear: corners
            spread = _farthest(w * value, np.minimum.reduce(ends), np.maximum.reduce(ends))
            dv[i, j] = float((d * spread).sum()) + moved / 4
    return z, var, dz, dv


def logrank_bound(tables: Sequence[PooledTable], statistic: float) -> LogrankBound | None:
    """The bound of the module docstring; None when nothing was coarsened."""
    from scipy import stats  # scipy.stats costs ~1 s to import: loaded where it is used

    if len(tables) < 2 or not any(t.tails for t in tables):
        return None
    z, var, dz, dv = _changes(tables)
    df = len(tables) - 1
    y = np.linalg.pinv(var) @ z
    a = float(y @ z - np.abs(y) @ dz)
    b = float(y @ var @ y + np.abs(y) @ dv @ np.abs(y))
    low = max(a, 0.0) ** 2 / b if b > 0 else 0.0
    eps = float(np.linalg.norm(dv, 2))
    smallest = float(np.linalg.eigvalsh(var)[0])
    high: float | None = None
    if smallest > eps:
        shrunk = np.linalg.inv(var - eps * np.eye(df))
        if df < MAX_CORNER_GROUPS:
            high = max(
                float(c @ shrunk @ c)
                for signs in itertools.product((-1.0, 1.0), repeat=df)
                for c in [z + np.asarray(signs) * dz]
            )
        else:
            high = float((np.linalg.norm(z) + np.linalg.norm(dz)) ** 2 / (smallest - eps))
    low = min(low, statistic)
    high = None if high is None else max(high, statistic)
    p_high_value = float(stats.chi2.sf(low, df))
    p_low_value = 0.0 if high is None or not math.isfinite(high) else float(stats.chi2.sf(high, df))
    return LogrankBound(statistic=(low, high), p_value=(p_low_value, p_high_value))
