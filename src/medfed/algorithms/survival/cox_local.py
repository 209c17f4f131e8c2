"""The node side of ``cox``: the design matrix and the risk-set sums of one round.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from medfed.algorithms.survival.times import (
    Coarsened,
    coarsen,
    event_times,
    level_names,
    read_survival,
    require_min_rows,
    units,
)
from medfed.common.errors import BadRequest, Refused

if TYPE_CHECKING:
    from medfed.algorithms.base import LocalContext
    from medfed.algorithms.survival.cox import CoxParams

__all__ = ["NodeData", "check_parameters", "design", "load", "risk_set_sums", "round_zero"]

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class NodeData:
    """A node's usable rows: the raw frame and its coarsened stratum units."""

    frame: pd.DataFrame
    units: dict[str, tuple[NDArray[np.intp], Coarsened]]


def load(params: CoxParams, ctx: LocalContext) -> NodeData:
    """Select, drop incomplete rows, apply min rows, rare levels and the risk-set rule."""
    columns = [params.duration, params.event, *params.covariates]
    if params.strata:
        columns.append(params.strata)
    frame = ctx.data.select(columns, params.filter).dropna()
    # strata and levels of categorical covariates are cells whose sums are released
    for column in [*params.categorical, *([params.strata] if params.strata else [])]:
        ctx.cells(frame[column])
    frame = frame.reset_index(drop=True)
    require_min_rows("cox", len(frame), ctx.min_rows)
    durations, events = read_survival("cox", frame, params.duration, params.event)
    k = ctx.min_cell_count
    for column in params.categorical:
        counts = pd.Series(level_names(frame[column])).value_counts()
        if bool(((counts > 0) & (counts < k)).any()):
            raise Refused(
                f"gate: min_cell_count: a level of categorical covariate '{column}' has "
                f"fewer than {k} rows at this node"
            )
    parts = {
        level: (rows, coarsen(durations[rows], events[rows], k))
        for level, rows in units("cox", frame, params.strata, k, "stratum").items()
    }
    return NodeData(frame, parts)


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


def round_zero(
    params: CoxParams, data: NodeData, fraction: float, min_df: int = 0
) -> dict[str, Any]:
    """Moments and levels for scaling and coding, event times and counts per stratum."""
    frame = data.frame
    moments: dict[str, dict[str, float]] = {}
    levels: dict[str, dict[str, int]] = {}
    p = 0
    for column in params.covariates:
        if column in params.categorical:
            counts = pd.Series(level_names(frame[column])).value_counts()
            levels[column] = {str(level): int(n) for level, n in counts.items()}
            p += max(len(counts) - 1, 0)
        else:
            x = frame[column].to_numpy(dtype=np.float64)
            total = math.fsum(x)
            m2 = math.fsum((x - total / len(x)) ** 2)
            moments[column] = {"n": len(x), "sum": total, "m2": m2}
            p += 1
    check_parameters(p, len(frame), fraction, min_df)
    times: dict[str, list[float]] = {}
    events: dict[str, list[int]] = {}
    for level, (_, unit) in data.units.items():
        times[level], events[level] = event_times(unit)
    return {
        "rows": len(frame),
        "at_risk": {},
        "moments": moments,
        "levels": levels,
        "times": times,
        "events": events,
    }


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


def risk_set_sums(
    params: CoxParams, data: NodeData, state: dict[str, Any], fraction: float, min_df: int = 0
) -> dict[str, Any]:
    """One Newton round's sums over the risk sets and tied events of every stratum."""
    x = design(params, data.frame, state)
    p = x.shape[1]
    check_parameters(p, len(data.frame), fraction, min_df)
    beta = np.asarray(state["beta"], dtype=np.float64)
    out: dict[str, Any] = {"rows": len(data.frame), "at_risk": {}, "events": {}}
    for key in ("s0", "s1", "s2", "t0", "t1", "t2"):
        out[key] = {}
    xsum = np.zeros(p)
    for level, (rows, unit) in data.units.items():
        grid = np.asarray(state["times"].get(level, []), dtype=np.float64)
        xs = x[rows]
        w = np.exp(xs @ beta)
        order = np.argsort(unit.durations, kind="stable")
        ordered = unit.durations[order]
        cols = [w[:, None], w[:, None] * xs, w[:, None] * _upper(xs, p)]
        start = np.searchsorted(ordered, grid, side="left")
        # reverse cumulative sums: row i holds the sum over ordered[i:], the risk set
        sums = []
        for c in cols:
            tail = np.cumsum(c[order][::-1], axis=0)[::-1]
            sums.append(np.vstack([tail, np.zeros((1, c.shape[1]))])[start])
        out["at_risk"][level] = np.asarray(len(ordered) - start, dtype=np.int64)
        tied = _tied(unit, grid, cols, state["ties"].get(level, []))
        out["events"][level] = tied.pop("events")
        out["s0"][level] = np.ascontiguousarray(sums[0][:, 0])
        out["s1"][level] = sums[1]
        out["s2"][level] = sums[2]
        out["t0"][level], out["t1"][level], out["t2"][level] = tied["t0"], tied["t1"], tied["t2"]
        if state.get("final"):  # the bound's round: the sums of the beta = 0 round again
            for key, c in (("u1", xs), ("u2", xs**2)):
                tail = np.cumsum(c[order][::-1], axis=0)[::-1]
                out.setdefault(key, {})[level] = np.vstack([tail, np.zeros((1, p))])[start]
        xsum += xs[unit.events].sum(axis=0)
    out["xsum"] = xsum.tolist()  # p numbers: JSON
    return out


def _tied(
    unit: Coarsened, grid: Floats, cols: Sequence[Floats], ties: Sequence[int]
) -> dict[str, Any]:
    """Event counts at every grid time and the tied-event sums at the ``ties`` indices."""
    died = unit.durations[unit.events]
    if len(grid) == 0:
        p = cols[1].shape[1]
        return {
            "events": np.zeros(0, dtype=np.int64),
            "t0": np.zeros(0),
            "t1": np.zeros((0, p)),
            "t2": np.zeros((0, cols[2].shape[1])),
        }
    position = np.searchsorted(grid, died)
    if len(died) and not np.array_equal(grid[np.minimum(position, len(grid) - 1)], died):
        raise BadRequest("cox: an event time of this node is missing from the agreed times")
    events = np.bincount(position, minlength=len(grid))
    wanted = np.asarray(ties, dtype=np.intp)
    out: dict[str, Any] = {"events": np.asarray(events, dtype=np.int64)}
    for name, c in zip(("t0", "t1", "t2"), cols, strict=True):
        # per grid time, the sum over the tied events (sorted positions: one reduceat)
        died_rows = c[unit.events]
        order = np.argsort(position, kind="stable")
        total = np.zeros((len(grid), c.shape[1]))
        if len(order):
            sorted_pos = position[order]
            first = np.flatnonzero(np.r_[True, sorted_pos[1:] != sorted_pos[:-1]])
            total[sorted_pos[first]] = np.add.reduceat(died_rows[order], first, axis=0)
        picked = total[wanted]
        out[name] = np.ascontiguousarray(picked[:, 0]) if name == "t0" else picked
    return out
