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

How it runs: every round is one pass over the rows in batches
(:mod:`medfed.algorithms.survival.scan`), so a node never holds its table: memory grows
with the number of agreed event times, not with the rows. Per batch it builds the design
and ``w``, and adds ``w``, ``w x`` and ``w x x'`` per row into the unit's tally; the
risk-set and tied sums come out of the tally with the tail moved to the boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from medfed.algorithms.stats._batch_moments import BatchMoments
from medfed.algorithms.stats.crosstab import level_names
from medfed.algorithms.survival.scan import Tally, checked_units, read_batches
from medfed.common.errors import BadRequest, Refused

if TYPE_CHECKING:
    from medfed.algorithms.base import LocalContext
    from medfed.algorithms.survival.cox import CoxParams

__all__ = ["check_parameters", "design", "scan"]

Floats = NDArray[np.float64]


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


def _products(x: Floats, w: Floats) -> Floats:
    """``(1 + p + p(p+1)/2, n)``: per row ``w``, ``w x`` and the upper triangle of
    ``w x x'`` (row by row), each a contiguous row (built column block by block)."""
    xt = np.ascontiguousarray(x.T)
    p, n = xt.shape
    out = np.empty((1 + p + p * (p + 1) // 2, n))
    out[0] = w
    np.multiply(xt, w, out=out[1 : 1 + p])
    k = 1 + p
    for i in range(p):
        np.multiply(out[1 + i], xt[i:], out=out[k : k + p - i])
        k += p - i
    return out


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
    tallies: dict[str, Tally] = {}
    moments = {c: BatchMoments() for c in params.covariates if c not in params.categorical}
    levels: dict[str, dict[str, int]] = {c: {} for c in params.categorical}
    grids: dict[str, Floats] = {}
    beta = np.asarray(state.get("beta", []), dtype=np.float64)
    xsum = np.zeros(len(beta))
    rows = 0
    for batch in read_batches("cox", params, ctx, columns, params.strata, cells):
        frame = batch.frame
        rows += len(frame)
        for column in params.categorical:
            for level, n in pd.Series(level_names(frame[column])).value_counts().items():
                levels[column][str(level)] = levels[column].get(str(level), 0) + int(n)
        values: Floats | None = None
        plain: Floats | None = None
        if newton:
            x = design(params, frame, state)
            values = _products(x, np.exp(x @ beta))
            plain = np.vstack([x.T, x.T**2]) if final else None
            xsum += x[batch.events].sum(axis=0)
        else:
            for column, m in moments.items():
                m.add(frame[column].to_numpy(dtype=np.float64))
        for level, chosen in batch.units:
            tally = tallies.setdefault(level, Tally(k))
            d, e = batch.durations[chosen], batch.events[chosen]
            tally.add_rows(d)
            if values is None:
                tally.add_events(d[e])
                continue
            if level not in grids:
                grids[level] = np.asarray(state["times"].get(level, []), dtype=np.float64)
            tally.add_sums(
                grids[level], d, e, values[:, chosen], None if plain is None else plain[:, chosen]
            )
    order = checked_units("cox", tallies, rows, ctx, params.strata, "stratum")
    for column in params.categorical:
        if any(0 < n < k for n in levels[column].values()):
            raise Refused(
                f"gate: min_cell_count: a level of categorical covariate '{column}' has "
                f"fewer than {k} rows at this node"
            )
    coarsened = any(tallies[level].tail for level in order)
    if not newton:
        p = sum(
            max(len(levels[c]) - 1, 0) if c in params.categorical else 1 for c in params.covariates
        )
        check_parameters(p, rows, ctx.max_param_fraction, ctx.min_residual_df)
        times: dict[str, list[float]] = {}
        counts: dict[str, list[int]] = {}
        for level in order:
            times[level], counts[level] = tallies[level].event_times()
        return {
            "rows": rows,
            "at_risk": {},
            "moments": {c: {"n": m.n, **m.message()} for c, m in moments.items()},
            "levels": {c: dict(sorted(v.items(), key=lambda i: -i[1])) for c, v in levels.items()},
            "times": times,
            "events": counts,
            "coarsened": coarsened,
        }
    p = len(beta)
    check_parameters(p, rows, ctx.max_param_fraction, ctx.min_residual_df)
    out: dict[str, Any] = {"rows": rows, "at_risk": {}, "events": {}}
    for key in ("s0", "s1", "s2", "t0", "t1", "t2", *(("u1", "u2") if final else ())):
        out[key] = {}
    for level in order:
        got = tallies[level].on_grid("cox", grids[level])
        wanted = np.asarray(state["ties"].get(level, []), dtype=np.intp)
        tied = got.tied[wanted]
        series = {
            "at_risk": got.at_risk,
            "events": got.events,
            "s0": got.risk[:, 0],
            "s1": got.risk[:, 1 : 1 + p],
            "s2": got.risk[:, 1 + p :],
            "t0": tied[:, 0],
            "t1": tied[:, 1 : 1 + p],
            "t2": tied[:, 1 + p :],
        }
        if got.plain is not None:
            series |= {"u1": got.plain[:, :p], "u2": got.plain[:, p:]}
        for key, value in series.items():
            out[key][level] = np.ascontiguousarray(value)  # binary transport
    out["xsum"] = xsum.tolist()  # p numbers: JSON
    out["levels"] = {}
    if final:
        out["tail_max"] = k - 1
        out["coarsened"] = coarsened
    return out
