"""The node side of ``cox``: the design and the risk-set sums of one round, batch by batch.

What leaves a node (all over the rows matching ``where`` with no missing value in the
duration, event, covariates and stratum; every stratum unit coarsened first by the
risk-set rule of :mod:`medfed.algorithms.survival.times`)::

    round 0  {"rows": R, "at_risk": {},
              "moments": {numeric covariate: {"n": R, "sum": Σx, "m2": Σ(x - mean)²}},
              "levels": {categorical covariate: {level: rows}},
              "times": {stratum: [distinct event times]},
              "events": {stratum: [events at each time]}}
    round r  {"rows": R,
              "at_risk": {stratum: [#risk set at t_j]},
              "events": {stratum: [#events at t_j]},
              "s0": {stratum: [Σ_risk w]}, "s1": {stratum: [[Σ_risk w x]]},
              "s2": {stratum: [[Σ_risk w x x' (upper triangle, row by row)]]},
              "t0" / "t1" / "t2": the same sums over the events tied at t_j, only at the
                   times where the pooled events number 2 or more (Efron),
              "xsum": Σ over the node's events of x}
    last     (only when a node coarsened: one more evaluation at the converged beta)
             round r's message plus "u1" / "u2": {stratum: [[Σ_risk x]] / [[Σ_risk x²]]}
             (unweighted, per covariate: the values of the round at beta = 0 again),
             "tail_max": k - 1 and "coarsened": whether a stratum's tail was moved

Every per-time series of round r and the last round is a numpy array (binary transport,
:mod:`medfed.common.arrays`): the gate applies the same rules to it as to a list.

with ``x`` the covariates centred and scaled by the pooled means and standard deviations,
``w = exp(x'beta)`` for the broadcast ``beta`` and ``t_j`` the agreed global event times
of the stratum. Gate: ``MinRows("rows")``, ``Cells("at_risk")``, ``Cells("levels")``;
refusals: fewer than ``min_rows`` rows, a stratum or a categorical level with fewer than
``min_cell_count`` rows, more parameters than ``max_param_fraction`` of the rows, fewer
than ``min_residual_df`` rows beyond the parameters. Each
risk-set count is 0 or at least ``min_cell_count``, so every sum is over at least that
many people. Differences of sums at consecutive times describe the people who left the
risk set in between, which may be a single person: see ``docs/algorithms/survival.md``.

How it runs: every round is one pass over the rows in batches (``select_batches``), so a
node never holds its table — memory grows with the number of agreed event times, not
with the rows. A row's contributions are added into the bucket of the last agreed time
at or before its *raw* duration (``np.bincount``); the risk-set sum at ``t_j`` is the
sum of the buckets after ``j`` (a reverse cumulative sum over times, not rows). That is
the coarsened unit's sum at every ``t_j`` up to the stratum's boundary ``tau`` (a tail
row, ``duration > tau``, is at risk at every such time whether moved or not); times after
``tau`` get 0. Events are added at their own time; the tail's events, known only once
the pass has found ``tau`` (the k-th largest duration, kept as the k largest seen), are
moved to ``tau`` afterwards — the same sums as sorting the coarsened unit's rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from medfed.algorithms.stats.crosstab import level_order
from medfed.algorithms.survival.times import ALL, level_names, read_survival, require_min_rows
from medfed.common.errors import BadRequest, Refused

if TYPE_CHECKING:
    from medfed.algorithms.base import LocalContext
    from medfed.algorithms.survival.cox import CoxParams

__all__ = ["check_parameters", "design", "scan"]

Floats = NDArray[np.float64]
Counts = NDArray[np.int64]


def check_parameters(p: int, rows: int, fraction: float, min_df: int = 0) -> None:
    """Refuse a model with more parameters than ``fraction`` of the node's rows, or with
    fewer than ``min_df`` residual degrees of freedom (rows minus parameters)."""
    if rows - p < min_df:
        raise Refused(
            f"gate: min_residual_df: cox leaves fewer than {min_df} residual degrees of "
            "freedom at this node"
        )
    if p > fraction * rows:
        raise Refused(
            # the node's exact row count would leave the node without passing the gate
            f"gate: max_param_fraction: cox has {p} parameters, more than "
            f"{fraction:.3g} of this node's rows"
        )


def design(params: CoxParams, frame: pd.DataFrame, state: dict[str, Any]) -> Floats:
    """Centred and scaled design matrix with the agreed dummy coding."""
    blocks: list[Floats] = []
    for column in params.covariates:
        if column in params.categorical:
            names = level_names(frame[column])
            agreed = state["levels"][column]
            if not set(names) <= set(agreed):
                raise BadRequest(f"cox: a level of '{column}' was not agreed in round 0")
            for level in agreed[1:]:
                blocks.append((names == level).astype(np.float64))
        else:
            blocks.append(frame[column].to_numpy(dtype=np.float64))
    x = np.column_stack(blocks) if blocks else np.zeros((len(frame), 0))
    center = np.asarray(state["center"], dtype=np.float64)
    scale = np.asarray(state["scale"], dtype=np.float64)
    return np.asarray((x - center) / scale, dtype=np.float64)


def _upper(rows: Floats, p: int) -> Floats:
    """Per row, the upper triangle of the outer product of ``rows`` with itself."""
    i, j = np.triu_indices(p)
    return np.asarray(rows[:, i] * rows[:, j], dtype=np.float64)


def _bins(index: NDArray[np.intp], values: Floats, size: int) -> Floats:
    """Column by column, the sum of ``values``' rows in each of ``size`` buckets."""
    out = np.zeros((size, values.shape[1]))
    for c in range(values.shape[1]):
        out[:, c] = np.bincount(index, weights=values[:, c], minlength=size)
    return out


@dataclass
class _Unit:
    """What one pass keeps of a stratum unit: counts, the k largest durations, sums per
    agreed time — never its rows."""

    k: int
    rows: int = 0
    top: Floats = field(default_factory=lambda: np.zeros(0))
    # round 0: distinct event durations (raw) and their counts
    died_at: Floats = field(default_factory=lambda: np.zeros(0))
    died_n: Counts = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # round r: per bucket (last agreed time <= raw duration; bucket 0: before the first)
    risk_n: Counts | None = None
    risk: Floats | None = None  # columns w, w x, w x x' (upper)
    plain: Floats | None = None  # columns x, x² (the bound's round only)
    # round r: per agreed time, the events whose raw duration is that time, and the
    # events whose duration is no agreed time (valid only beyond the boundary)
    tied_n: Counts | None = None
    tied: Floats | None = None
    off_n: int = 0
    off: Floats | None = None
    off_first: float = math.inf

    def add_rows(self, durations: Floats) -> None:
        self.rows += len(durations)
        top = np.concatenate([self.top, durations])
        if len(top) > self.k:
            top = np.partition(top, len(top) - self.k)[len(top) - self.k :]
        self.top = top

    @property
    def boundary(self) -> float:
        """``tau``: the k-th largest duration (ties included), as ``times.coarsen``."""
        return float(np.min(self.top))

    @property
    def tail(self) -> int:
        return int(np.count_nonzero(self.top > self.boundary))

    def add_events(self, died: Floats) -> None:
        times, counts = np.unique(np.concatenate([self.died_at, died]), return_inverse=True)
        weights = np.concatenate([self.died_n, np.ones(len(died), dtype=np.int64)])
        self.died_at = times
        self.died_n = np.bincount(counts, weights=weights, minlength=len(times)).astype(np.int64)

    def add_sums(
        self,
        grid: Floats,
        durations: Floats,
        events: NDArray[np.bool_],
        weighted: Floats,
        plain: Floats | None,
    ) -> None:
        size = len(grid) + 1
        if self.risk is None:
            self.risk_n = np.zeros(size, dtype=np.int64)
            self.risk = np.zeros((size, weighted.shape[1]))
            self.tied_n = np.zeros(len(grid), dtype=np.int64)
            self.tied = np.zeros((len(grid), weighted.shape[1]))
            self.off = np.zeros(weighted.shape[1])
            if plain is not None:
                self.plain = np.zeros((size, plain.shape[1]))
        assert self.risk_n is not None and self.tied_n is not None
        assert self.tied is not None and self.off is not None
        bucket = np.searchsorted(grid, durations, side="right")
        self.risk_n += np.bincount(bucket, minlength=size)
        self.risk += _bins(bucket, weighted, size)
        if plain is not None and self.plain is not None:
            self.plain += _bins(bucket, plain, size)
        died = durations[events]
        at = np.minimum(np.searchsorted(grid, died), max(len(grid) - 1, 0))
        found = grid[at] == died if len(grid) else np.zeros(len(died), dtype=bool)
        self.tied_n += np.bincount(at[found], minlength=len(grid))
        self.tied += _bins(at[found], weighted[events][found], len(grid))
        if not found.all():
            self.off_n += int(np.count_nonzero(~found))
            self.off += weighted[events][~found].sum(axis=0)
            self.off_first = min(self.off_first, float(died[~found].min()))

    def event_times(self) -> tuple[list[float], list[int]]:
        """Distinct event times after coarsening and the events at each."""
        tau = self.boundary
        keep = self.died_at <= tau
        times = [float(t) for t in self.died_at[keep]]
        counts = [int(c) for c in self.died_n[keep]]
        moved = int(self.died_n[~keep].sum())
        if moved:
            if times and times[-1] == tau:
                counts[-1] += moved
            else:
                times.append(tau)
                counts.append(moved)
        return times, counts

    def round_sums(self, grid: Floats, ties: list[int], p: int) -> dict[str, Any]:
        """The stratum's message of a Newton round (tail moved to the boundary)."""
        assert self.risk is not None and self.risk_n is not None
        assert self.tied is not None and self.tied_n is not None and self.off is not None
        tau = self.boundary
        beyond = grid > tau  # times after the boundary: empty risk set, no event
        last = int(np.searchsorted(grid, tau))  # the boundary's index, when it is a time
        tied_n, tied = self.tied_n.copy(), self.tied.copy()
        if beyond.any() or self.off_n:
            if self.off_first <= tau:
                raise BadRequest("cox: an event time of this node is missing from the agreed times")
            moving = int(tied_n[beyond].sum()) + self.off_n
            if moving and not (last < len(grid) and grid[last] == tau):
                raise BadRequest("cox: an event time of this node is missing from the agreed times")
            if moving:
                tied_n[last] += moving
                tied[last] += tied[beyond].sum(axis=0) + self.off
            tied_n[beyond] = 0
            tied[beyond] = 0.0

        def at_risk(buckets: Floats) -> Floats:
            # the sum over buckets after j: the rows whose duration is t_j or later
            tail = np.cumsum(buckets[::-1], axis=0)[::-1][1:]
            tail[beyond] = 0.0
            return np.ascontiguousarray(tail)

        n = np.cumsum(self.risk_n[::-1])[::-1][1:]
        n[beyond] = 0
        sums = at_risk(self.risk)
        wanted = np.asarray(ties, dtype=np.intp)
        out: dict[str, Any] = {
            "at_risk": np.ascontiguousarray(n),
            "events": tied_n,
            "s0": np.ascontiguousarray(sums[:, 0]),
            "s1": np.ascontiguousarray(sums[:, 1 : 1 + p]),
            "s2": np.ascontiguousarray(sums[:, 1 + p :]),
            "t0": np.ascontiguousarray(tied[wanted, 0]),
            "t1": np.ascontiguousarray(tied[wanted][:, 1 : 1 + p]),
            "t2": np.ascontiguousarray(tied[wanted][:, 1 + p :]),
        }
        if self.plain is not None:
            plain = at_risk(self.plain)
            out["u1"] = np.ascontiguousarray(plain[:, :p])
            out["u2"] = np.ascontiguousarray(plain[:, p:])
        return out


@dataclass
class _Moments:
    """``n``, ``Σx`` and ``Σ(x - mean)²`` added batch by batch (Chan et al.)."""

    n: int = 0
    sums: list[float] = field(default_factory=list)
    m2: float = 0.0

    def add(self, x: Floats) -> None:
        if not len(x):
            return
        total = math.fsum(x)
        m2 = math.fsum((x - total / len(x)) ** 2)
        if self.n:
            delta = total / len(x) - math.fsum(self.sums) / self.n
            m2 += delta * delta * self.n * len(x) / (self.n + len(x))
        self.n += len(x)
        self.sums.append(total)
        self.m2 += m2

    def message(self) -> dict[str, float]:
        return {"n": self.n, "sum": math.fsum(self.sums), "m2": self.m2}


def scan(params: CoxParams, ctx: LocalContext) -> dict[str, Any]:
    """One pass over the node's rows: round 0's set-up or one Newton round's sums."""
    k = ctx.min_cell_count
    state = ctx.state
    newton = ctx.round > 0
    final = newton and bool(state.get("final"))
    columns = [params.duration, params.event, *params.covariates]
    if params.strata:
        columns.append(params.strata)
    # strata and levels of categorical covariates are cells whose sums are released
    cells = [*params.categorical, *([params.strata] if params.strata else [])]
    grids = {column: ctx.grid() for column in cells}
    units: dict[str, _Unit] = {}
    moments = {c: _Moments() for c in params.covariates if c not in params.categorical}
    levels: dict[str, dict[str, int]] = {c: {} for c in params.categorical}
    times_of: dict[str, Floats] = {}
    beta = np.asarray(state.get("beta", []), dtype=np.float64)
    xsum = np.zeros(len(beta))
    rows = 0
    for frame in ctx.data.select_batches(columns, params.filter):
        frame = frame.dropna()
        for column, grid in grids.items():
            grid.add(frame[column])
        frame = frame.reset_index(drop=True)
        rows += len(frame)
        durations, events = read_survival("cox", frame, params.duration, params.event)
        for column in params.categorical:
            for level, n in pd.Series(level_names(frame[column])).value_counts().items():
                levels[column][str(level)] = levels[column].get(str(level), 0) + int(n)
        weighted: Floats | None = None
        plain: Floats | None = None
        if newton:
            x = design(params, frame, state)
            w = np.exp(x @ beta)[:, None]
            weighted = np.hstack([w, w * x, w * _upper(x, x.shape[1])])
            plain = np.hstack([x, x**2]) if final else None
            xsum += x[events].sum(axis=0)
        else:
            for column, m in moments.items():
                m.add(frame[column].to_numpy(dtype=np.float64))
        for level, chosen in _strata(params, frame):
            unit = units.setdefault(level, _Unit(k))
            d, e = durations[chosen], events[chosen]
            unit.add_rows(d)
            if weighted is None:
                unit.add_events(d[e])
                continue
            if level not in times_of:
                times_of[level] = np.asarray(state["times"].get(level, []), dtype=np.float64)
            unit.add_sums(
                times_of[level], d, e, weighted[chosen], None if plain is None else plain[chosen]
            )
    for grid in grids.values():
        grid.close()
    require_min_rows("cox", rows, ctx.min_rows)
    for column in params.categorical:
        if any(0 < n < k for n in levels[column].values()):
            raise Refused(
                f"gate: min_cell_count: a level of categorical covariate '{column}' has "
                f"fewer than {k} rows at this node"
            )
    order = sorted(units, key=level_order)
    if any(units[level].rows < k for level in order):
        raise Refused(
            f"gate: min_cell_count: a stratum level of '{params.strata}' has fewer than "
            f"{k} rows at this node, so its event times cannot be shared"
        )
    coarsened = any(units[level].tail for level in order)
    p = sum(max(len(levels[c]) - 1, 0) if c in params.categorical else 1 for c in params.covariates)
    check_parameters(
        p if not newton else len(beta), rows, ctx.max_param_fraction, ctx.min_residual_df
    )
    if not newton:
        times: dict[str, list[float]] = {}
        counts: dict[str, list[int]] = {}
        for level in order:
            times[level], counts[level] = units[level].event_times()
        return {
            "rows": rows,
            "at_risk": {},
            "moments": {c: m.message() for c, m in moments.items()},
            "levels": {c: dict(sorted(v.items(), key=lambda i: -i[1])) for c, v in levels.items()},
            "times": times,
            "events": counts,
            "coarsened": coarsened,
        }
    out: dict[str, Any] = {"rows": rows, "at_risk": {}, "events": {}}
    for key in ("s0", "s1", "s2", "t0", "t1", "t2", *(("u1", "u2") if final else ())):
        out[key] = {}
    for level in order:
        sums = units[level].round_sums(times_of[level], state["ties"].get(level, []), len(beta))
        for key, value in sums.items():
            out[key][level] = value
    out["xsum"] = xsum.tolist()  # p numbers: JSON
    out["levels"] = {}
    if final:
        out["tail_max"] = k - 1
        out["coarsened"] = coarsened
    return out


def _strata(params: CoxParams, frame: pd.DataFrame) -> list[tuple[str, slice | NDArray[np.intp]]]:
    """The batch's rows of each stratum level (all rows when there is no stratum)."""
    if not params.strata:
        return [(ALL, slice(None))]
    names = level_names(frame[params.strata])
    return [(str(level), np.flatnonzero(names == level)) for level in pd.unique(names)]
