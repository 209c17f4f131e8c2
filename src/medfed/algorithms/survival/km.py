"""``km``: Kaplan-Meier survival curves with confidence intervals and median survival.

Two rounds, the event table of :mod:`medfed.algorithms.survival.event_table`. What leaves
a node: round 0 its distinct (coarsened) event times per group level; round 1, at every
time of the agreed grid, its number at risk and number of events per group level, its
rows per level, and where a coarsened unit's boundary lies on the grid. Gate:
``MinRows("rows")``, ``Cells("at_risk")``, min rows per node and min rows per group level
(refusals), and the risk-set rule: no count over fewer than ``min_cell_count`` people and
no time beyond a unit's boundary (:mod:`medfed.algorithms.survival.times`).

The hub computes exactly what lifelines' ``KaplanMeierFitter`` computes on the pooled
rows: ``log S(t) = Σ log(n - d) - log n``; Greenwood's sum ``V = Σ d / (n (n - d))`` (0
where ``n = d``); the exponential Greenwood (log(-log)) interval
``exp(-exp(log(-log S) ∓ z √V / log S))`` (1 where undefined); the median as the first
time ``S <= 0.5`` and its interval as the medians of the two bound curves.

Error bound when tails were coarsened. Write ``n', d'`` for the pooled coarsened risk
sets and events at grid time ``s``, ``m(s)`` for an upper bound on the rows moved from
beyond ``s`` to a boundary before ``s`` (the sum of ``k - 1`` over coarsened units whose
boundary lies before ``s``), and ``e_u <= min(k - 1, d'_u(tau_u))`` for the events a unit
moved. Both the exact curve and the federated one are products of factors in [0, 1], so
``|S(t) - S'(t)| <= Σ_s |d_s/n_s - d'_s/n'_s|``; splitting each term gives, for
``t`` in ``[t_i, t_{i+1})``::

    B(t) = Σ_{s <= t_i} d'_s m(s) / (n'_s (n'_s + m(s)))        (risk sets that shrank)
         + Σ_{units with tau_u <= t_i} e_u / n'(tau_u)          (events moved to tau_u)
         + E(t) / (n'(t_{i+1}) + 1)                             (events moved away)

with ``E(t)`` the moved events of units whose boundary may lie before ``t``. The result
reports ``min(1, B)`` per time as ``max_error``; it is 0 before the earliest boundary.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from medfed.algorithms.stats._common import check_where, require_column
from medfed.algorithms.survival.event_table import EventTableAlgorithm, PooledTable
from medfed.algorithms.survival.results import KMResult
from medfed.algorithms.survival.times import ALL, SurvivalParams, check_survival_columns
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["KMParams", "KaplanMeier", "error_bound", "km_curve"]

Floats = NDArray[np.float64]


class KMParams(SurvivalParams):
    group: str | None = Field(default=None, min_length=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)


def _median(times: Floats, curve: Floats) -> float | None:
    below = np.flatnonzero(curve <= 0.5)
    return float(times[below[0]]) if len(below) else None


def km_curve(table: PooledTable, alpha: float, group: str | None) -> dict[str, Any]:
    """The pooled Kaplan-Meier curve of one table, as lifelines computes it."""
    from scipy import stats  # scipy.stats costs ~1 s to import: loaded where it is used

    keep = table.events > 0
    times = table.times[keep]
    n = table.at_risk[keep].astype(np.float64)
    d = table.events[keep].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.cumsum(np.log(n - d) - np.log(n))
        greenwood = np.cumsum(np.where(n > d, d / (n * (n - d)), 0.0))
        survival = np.exp(log_s)
        z = float(stats.norm.ppf(1 - alpha / 2))
        spread = z * np.sqrt(greenwood) / log_s
        lower = np.exp(-np.exp(np.log(-log_s) - spread))
        upper = np.exp(-np.exp(np.log(-log_s) + spread))
    lower = np.where(np.isnan(lower), 1.0, lower)
    upper = np.where(np.isnan(upper), 1.0, upper)
    kept = np.flatnonzero(keep)
    # the curve is flat from one of its event times to the next: report the largest bound
    bound = np.maximum.reduceat(error_bound(table), kept) if len(kept) else np.zeros(0)
    exact = {
        "group": group,
        "rows": table.rows,
        "events_total": int(d.sum()),
        "times": times.tolist(),
        "at_risk": [int(x) for x in n],
        "events": [int(x) for x in d],
        "survival": survival.tolist(),
        "ci_lower": lower.tolist(),
        "ci_upper": upper.tolist(),
        "median": _median(times, survival),
        "median_ci_lower": _median(times, lower),
        "median_ci_upper": _median(times, upper),
        "coarsened": bool(table.tails),
        "max_error": bound.tolist(),
    }
    return exact if table.k <= 1 else in_intervals(exact, table.k)


def time_step(last: float) -> float:
    """The grid step: 1, 2 or 5 times a power of ten, the largest up to ``last / 100``."""
    target = last / 100 if last > 0 else 1.0
    e = math.floor(math.log10(target))
    step = max(m * 10.0**e for m in (1, 2, 5) if m * 10.0**e <= target * (1 + 1e-12))
    return float(f"{step:.12g}")


def interval_ends(times: Floats, events: Floats, step: float, k: int) -> list[int]:
    """Indices of the last event time of each interval (see the module docstring)."""
    cells = np.ceil(times / step)
    ends: list[int] = []
    held = 0.0
    for i in range(len(times)):
        held += float(events[i])
        if held >= k and (i == len(times) - 1 or cells[i + 1] != cells[i]):
            ends.append(i)
            held = 0.0
    if held > 0 and ends:  # fewer than k events left at the end: they join the last interval
        ends[-1] = len(times) - 1
    return ends


def in_intervals(exact: dict[str, Any], k: int) -> dict[str, Any]:
    """The curve released at the ends of time intervals that hold at least ``k`` events."""
    times = np.asarray(exact["times"], dtype=np.float64)
    events = np.asarray(exact["events"], dtype=np.float64)
    survival = np.asarray(exact["survival"], dtype=np.float64)
    bound = np.asarray(exact["max_error"], dtype=np.float64)
    step = time_step(float(times[-1])) if len(times) else 1.0
    ends = interval_ends(times, events, step, k)
    starts = [0, *(e + 1 for e in ends[:-1])]
    digits = max(0, -math.floor(math.log10(step)))
    released = [round(math.ceil(times[e] / step) * step, digits) for e in ends]
    out = dict(exact)
    out.update(
        time_step=step,
        events_total=int(events.sum()) if events.sum() >= k else None,
        times=released,
        at_risk=[exact["at_risk"][a] for a in starts],
        events=[int(events[a : e + 1].sum()) for a, e in zip(starts, ends, strict=True)],
        survival=[float(survival[e]) for e in ends],
        ci_lower=[exact["ci_lower"][e] for e in ends],
        ci_upper=[exact["ci_upper"][e] for e in ends],
    )
    # |S(t) - released| on [c_i, c_{i+1}): the drop over the next interval, plus the
    # tail-coarsening bound anywhere up to its end; before c_0 the drop from 1
    drops = [float(survival[e] - survival[n]) for e, n in itertools.pairwise(ends)]
    tail = [float(bound[: n + 1].max()) for n in ends[1:]]
    if ends:
        drops.append(0.0)
        tail.append(float(bound.max()))
    out["max_error"] = [min(1.0, a + b) for a, b in zip(drops, tail, strict=True)]
    # before the first released time the curve reads 1; with nothing released, 1 - S(end)
    first = ends[0] if ends else len(survival) - 1
    out["max_error_start"] = (
        min(1.0, 1.0 - float(survival[first]) + float(bound[: first + 1].max()))
        if len(survival)
        else 0.0
    )
    grid = np.asarray(released, dtype=np.float64)
    for key in ("median", "median_ci_lower", "median_ci_upper"):
        curve = {"median": "survival", "median_ci_lower": "ci_lower"}.get(key, "ci_upper")
        out[key] = _median(grid, np.asarray(out[curve], dtype=np.float64))
    if out["median"] is not None:
        at = released.index(out["median"])
        out["median_bounds"] = [released[at - 1] if at else 0.0, out["median"]]
    return out


def error_bound(table: PooledTable) -> Floats:
    """``min(1, B)`` at every grid time (see the module docstring); zeros when exact."""
    size = len(table.times)
    if not table.tails:
        return np.zeros(size)
    n = table.at_risk.astype(np.float64)
    d = table.events.astype(np.float64)
    moved_rows = np.zeros(size)  # m(s): rows whose boundary lies before grid time s
    moved_events = np.zeros(size)  # e_u placed at grid index of tau_u (an upper bound)
    events_after = np.zeros(size + 1)  # E: moved events of units with boundary index <= i+1
    for tail in table.tails:
        b = tail.boundary_index
        moved_rows[b:] += tail.tail_max
        if b > 0:
            e = min(tail.tail_max, int(tail.events[b - 1]))
            moved_events[b - 1] += e
            events_after[max(b - 1, 0) :] += e
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(n > 0, d * moved_rows / (n * (n + moved_rows)), 0.0)
        placed = np.where(n > 0, moved_events / n, 0.0)
    next_at_risk = np.append(n[1:], 0.0)
    away = events_after[:size] / (next_at_risk + 1.0)
    bound = np.cumsum(shrink) + np.cumsum(placed) + away
    return np.asarray(np.minimum(bound, 1.0), dtype=np.float64)


class KaplanMeier(EventTableAlgorithm[KMParams]):
    name = "km"
    summary = "Kaplan-Meier curves with confidence intervals and median survival"
    Params = KMParams
    Result: ClassVar[type[BaseModel]] = KMResult

    def group_column(self, params: KMParams) -> str | None:
        return params.group

    def validate(self, params: KMParams, schemas: Sequence[DatasetSchema]) -> None:
        check_survival_columns(self.name, params, schemas)
        if params.group is not None:
            if params.group in (params.duration, params.event):
                raise BadRequest(f"{self.name}: group must differ from duration and event")
            require_column(self.name, schemas, params.group)
        check_where(self.name, params, schemas)

    def finish(
        self, params: KMParams, tables: dict[str, PooledTable], suppressed: int
    ) -> dict[str, Any]:
        if not tables:
            raise BadRequest(f"{self.name}: no rows with duration and event at any node")
        curves = [
            km_curve(t, params.alpha, None if level == ALL else level)
            for level, t in tables.items()
        ]
        return {
            "group": params.group,
            "alpha": params.alpha,
            "curves": curves,
            "rows": sum(t.rows for t in tables.values()),
            "suppressed_nodes": suppressed,
        }
