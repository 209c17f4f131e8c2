"""The node's step of ``glm``: level counts in round 0, IRLS sums in every later round.

Runs on the node over the rows of its dataset that match ``where`` — read in batches
(``select_batches``, the sums added over them, so no step holds the whole table) — have
no null in the
outcome, a covariate, the weight or the offset, and (with ``freq_weights``) a frequency
weight above 0 (``n`` rows). Frequency weights are checked first, over every row ``where``
selects: a null, negative, fractional or infinite weight fails the run with a
:class:`~medfed.common.errors.BadRequest` that names the column and the problem, never a
value. Before anything is computed, the node refuses
(:class:`~medfed.common.errors.Refused`; the node withholds its answer and logs the rule):

- ``gate: min_rows`` — ``0 < n < min_rows`` (a node with no matching row sends zeros);
- ``gate: min_residual_df`` — ``n - p`` is under the node's ``min_residual_df`` (ACRO's
  residual degrees of freedom rule, default 10);
- ``gate: max_param_fraction`` — the model has more parameters than
  ``max_param_fraction * n`` (DataSHIELD's ``nfilter.glm``); in round 0 with the levels this
  node sees (a lower bound), from round 1 with the agreed design;

Every count rule — these refusals, ``rows``, level counts, outcome counts and boundary
counts for the gate — counts the node's actual rows, never the sum of the frequency
weights: an aggregated row of weight 40 is one row for disclosure control. With weights
of at least 1 that is the stricter reading (rows never exceed the weighted count), and the
weights cannot be used to inflate a small group past a threshold.

What leaves the node, round 0::

    {"rows": n, "kinds": {column: "number" | "string" | "boolean"},
     "levels": {column: {level: count}},       # every level present here
     "outcome_counts": [count of 0, count of 1],   # binomial; [] otherwise
     "sums": {"y": Σy, "w": Σw, "wy": Σwy, "log_w": Σ f log v, "nobs": Σf},
     "boundary": 0}

A node where a level or an outcome class has 1..k-1 rows withholds its whole answer
(``Grid``), so it does not contribute; which level was rare is never visible.
Rounds 1.., at the broadcast coefficients ``beta`` (or statsmodels'
starting means in round 1) and the null model's intercept::

    {"rows": n, "levels": {}, "outcome_counts": [],
     "xtwx": X'WX (p * p), "score": X'W r (p), "xtwx_prev": X'WX at the previous beta,
     "x2": Σ x_j² per column, "deviance": .., "pearson": .., "loglik": ..,
     "boundary": rows with a fitted mean numerically at 0 or 1 (0 for a poisson mean),
     "null": {"xtwx": Σ W, "score": Σ W r, "deviance": .., "pearson": ..}}

``f`` are the frequency weights (1 without ``freq_weights``), ``v`` the prior weights
(``weights``, 1 without) and ``w = f v`` (statsmodels' ``iweights``); ``Σy`` is a plain sum
over rows, as statsmodels' starting means use the plain mean. ``W = w V(mu)`` are the IRLS
weights and ``r`` the working residuals (:mod:`.families`); in round 1 ``score`` is
``X'W z`` with the working response ``z``; ``x2`` is ``Σ f x_j²``; deviance, Pearson chi²
and log-likelihood are sums weighted by ``w``. The gate (``medfed.node.gate``)
then applies ``MinRows("rows")`` and ``Grid`` to ``levels``, ``outcome_counts`` and
``boundary``, and its row-set memory checks the complete cases and level cells.
``X'WX`` over few rows can reveal them (with ``p`` close to ``n`` it nearly
determines the rows); the parameter-fraction rule is the guard, as in DataSHIELD. A node
answers one such matrix per round at coefficients the hub chose, never the researcher.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pandas.api import types as ptypes

from medfed.algorithms.base import LocalContext
from medfed.algorithms.glm.design import Design, GLMParams, column_kind, level_counts
from medfed.algorithms.glm.families import FAMILIES, Family
from medfed.common.errors import BadRequest, Refused

__all__ = ["Rows", "check_freq_weights", "irls_sums", "read_rows", "round0"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Rows:
    """A node's complete cases: covariate frame, outcome, weights and offset.

    ``f`` are the frequency weights, ``v`` the prior weights, ``w = f v`` the weights every
    sum uses (statsmodels' ``iweights``); ``n`` counts rows, ``nobs`` observations (Σf).
    """

    frame: pd.DataFrame
    y: Array
    f: Array
    v: Array
    w: Array
    offset: Array

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def nobs(self) -> float:
        return float(np.sum(self.f))


def _numbers(frame: pd.DataFrame, column: str, role: str) -> Array:
    values: Array = frame[column].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise BadRequest(f"glm: {role} '{column}' has an infinite value at this node")
    return values


def check_freq_weights(series: pd.Series, column: str) -> Array:
    """The frequency weights of the selected rows; a clear error for a bad value.

    The messages name the column and the problem, never a value or a row.
    """
    role = f"glm: freq_weights '{column}'"
    if ptypes.is_bool_dtype(series.dtype) or not ptypes.is_numeric_dtype(series.dtype):
        raise BadRequest(f"{role} must be a numeric column of whole numbers at this node")
    if series.isna().any():
        raise BadRequest(f"{role} has a null value at this node; every selected row needs a weight")
    values: Array = series.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise BadRequest(f"{role} has an infinite value at this node")
    if (values < 0).any():
        raise BadRequest(f"{role} has a negative value at this node; weights count rows")
    if (values != np.floor(values)).any():
        raise BadRequest(
            f"{role} has a value that is not a whole number at this node; frequency weights "
            "count rows (use weights for non-integer prior weights)"
        )
    return values


def read_rows(params: GLMParams, ctx: LocalContext) -> Iterator[Rows]:
    """The model's complete cases, batch by batch; the values' ranges checked per batch.

    Frequency weights are checked over every selected row before incomplete rows are left
    out, and rows of weight 0 are then dropped (they count for nothing, rules included).
    The batches come from ``select_batches``: no step holds the whole table; the sums the
    steps build are added over the batches.
    """
    # the row sets this fit releases aggregates of: its complete cases, and per categorical
    # covariate the cells of its levels (the node's row-set memory checks them)
    complete = ctx.grid()
    grids = {c: ctx.grid() for c in params.covariates}
    used: set[str] = set()
    for frame in ctx.data.select_batches(params.columns, params.filter):
        if params.freq_weights is not None:
            weights = check_freq_weights(frame[params.freq_weights], params.freq_weights)
            frame = frame[weights > 0]
        frame = frame.dropna()
        complete.add(pd.Series(0, index=frame.index))
        for column in params.covariates:
            if column in params.categorical or column_kind(frame[column]) != "number":
                grids[column].add(frame[column])
                used.add(column)
        yield _checked(params, frame.reset_index(drop=True))
    complete.close()
    for column in params.covariates:
        if column in used:
            grids[column].close()


def _checked(params: GLMParams, frame: pd.DataFrame) -> Rows:
    """One batch of complete cases as arrays; a clear error for an out-of-range value."""
    y = _numbers(frame, params.outcome, "outcome")
    if params.family == "binomial" and not np.isin(y, (0.0, 1.0)).all():
        raise BadRequest(f"glm: binomial outcome '{params.outcome}' must be 0/1 or boolean")
    if params.family == "poisson" and (y < 0).any():
        raise BadRequest(f"glm: poisson outcome '{params.outcome}' must not be negative")
    v = np.ones(len(frame))
    if params.weights is not None:
        v = _numbers(frame, params.weights, "weights")
        if (v <= 0).any():
            raise BadRequest(f"glm: weights '{params.weights}' must be positive")
    f = np.ones(len(frame))
    if params.freq_weights is not None:
        f = frame[params.freq_weights].to_numpy(dtype=np.float64)
    offset = np.zeros(len(frame))
    if params.offset is not None:
        offset = _numbers(frame, params.offset, "offset")
    for column in params.covariates:
        if column not in params.categorical and column_kind(frame[column]) == "number":
            _numbers(frame, column, "covariate")
    return Rows(frame=frame, y=y, f=f, v=v, w=f * v, offset=offset)


def check_rows(params: GLMParams, ctx: LocalContext, n: int, p: int) -> None:
    """The node's refusals that depend on its row count and the number of parameters."""
    if 0 < n < ctx.min_rows:
        raise Refused(
            f"gate: min_rows: fewer than {ctx.min_rows} rows match at this node "
            "(the node's minimum for a model)"
        )
    if n > 0 and n - p < ctx.min_residual_df:
        raise Refused(
            f"gate: min_residual_df: the model leaves fewer than {ctx.min_residual_df} "
            "residual degrees of freedom at this node"
        )
    if n > 0 and p > ctx.max_param_fraction * n:
        raise Refused(
            f"gate: max_param_fraction: the model has {p} parameters, more than "
            f"{ctx.max_param_fraction:.4g} of this node's rows"
        )


def round0(params: GLMParams, ctx: LocalContext) -> dict[str, Any]:
    """Row count, level counts of categorical covariates, outcome counts, a few sums."""
    n = ones = 0
    kinds: dict[str, str] = {}
    counted: dict[str, dict[str, int]] = {}
    totals = dict.fromkeys(("y", "w", "wy", "log_w", "nobs"), 0.0)
    for rows in read_rows(params, ctx):
        n += rows.n
        for column in params.covariates:
            kind = column_kind(rows.frame[column])
            if column not in params.categorical and kind == "number":
                continue
            kinds[column] = kind
            merged = counted.setdefault(column, {})
            for level, c in level_counts(rows.frame[column]).items():
                merged[level] = merged.get(level, 0) + c
        ones += int(np.count_nonzero(rows.y == 1.0))
        totals["y"] += float(np.sum(rows.y))
        totals["w"] += float(np.sum(rows.w))
        totals["wy"] += float(np.sum(rows.w * rows.y))
        totals["log_w"] += float(np.sum(rows.f * np.log(rows.v)))
        totals["nobs"] += rows.nobs
    levels = {c: {level: k for level, k in v.items() if k > 0} for c, v in counted.items()}
    local = Design(params.intercept, params.covariates, {c: sorted(v) for c, v in levels.items()})
    check_rows(params, ctx, n, local.size)
    # binomial: a class of 1..k-1 rows and Grid withholds
    outcome_counts = [n - ones, ones] if params.family == "binomial" else []
    return {
        "rows": n,
        "kinds": kinds,
        "levels": levels,
        "outcome_counts": outcome_counts,
        "sums": totals,
        "boundary": 0,
    }


def _fitted(
    family: Family, rows: Rows, x: Array, beta: list[float] | None, ybar: float
) -> tuple[Array, Array]:
    """``(eta - offset, mu)`` at ``beta``, or at the starting means when ``beta`` is None."""
    if beta is None:
        mu = family.start_mu(rows.y, ybar)
        return family.link_fn(mu) - rows.offset, mu
    lin = x @ np.asarray(beta, dtype=np.float64)
    return lin, family.inverse(lin + rows.offset)


def irls_sums(params: GLMParams, ctx: LocalContext) -> dict[str, Any]:
    """One IRLS round's sums at the broadcast coefficients (see the module docstring),
    added over the batches of rows."""
    state = ctx.state
    design = Design(params.intercept, params.covariates, dict(state["levels"]))
    total: dict[str, Any] | None = None
    for rows in read_rows(params, ctx):
        part = _batch_sums(params, state, design, rows)
        total = part if total is None else _added(total, part)
    assert total is not None  # read_rows yields at least one (maybe empty) batch
    check_rows(params, ctx, total["rows"], design.size)
    out: dict[str, Any] = {
        "rows": total["rows"],
        "levels": {},
        "outcome_counts": [],
        "xtwx": total["xtwx"].tolist(),
        "score": total["score"].tolist(),
        "x2": total["x2"].tolist(),
        "deviance": total["deviance"],
        "pearson": total["pearson"],
        "loglik": total["loglik"],
        "boundary": total["boundary"],
        "xtwx_prev": None if total["xtwx_prev"] is None else total["xtwx_prev"].tolist(),
        "null": total["null"],
    }
    return out


def _added(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two batches' sums added (matrices, sums, counts, and the null model's sums)."""
    out: dict[str, Any] = {}
    for key, value in a.items():
        other = b[key]
        if value is None:
            out[key] = None
        elif isinstance(value, dict):
            out[key] = {k: value[k] + other[k] for k in value}
        else:
            out[key] = value + other
    return out


def _batch_sums(
    params: GLMParams, state: dict[str, Any], design: Design, rows: Rows
) -> dict[str, Any]:
    """One batch's IRLS sums (numpy arrays and floats; added by :func:`_added`)."""
    family = FAMILIES[params.family]
    x = design.matrix(rows.frame)
    ybar = float(state["ybar"])
    beta = state["beta"]
    lin, mu = _fitted(family, rows, x, beta, ybar)
    variance = family.variance(mu)
    weight = rows.w * variance
    resid = (rows.y - mu) / variance
    work = resid + lin if beta is None else resid  # X'Wz at the start, X'W r after
    out: dict[str, Any] = {
        "rows": rows.n,
        "xtwx": x.T @ (x * weight[:, None]),
        "score": x.T @ (weight * work),
        "x2": np.sum(rows.f[:, None] * x * x, axis=0),
        "deviance": family.deviance(rows.y, mu, rows.w),
        "pearson": family.pearson(rows.y, mu, rows.w),
        "loglik": family.loglik(rows.y, mu, rows.w),
        "boundary": family.boundary(mu),
        "xtwx_prev": None,
    }
    if state.get("has_prev"):
        _, mu_prev = _fitted(family, rows, x, state["beta_prev"], ybar)
        w_prev = rows.w * family.variance(mu_prev)
        out["xtwx_prev"] = x.T @ (x * w_prev[:, None])
    out["null"] = None
    if state["null_beta"] is None:  # the null model has converged
        return out
    mu0 = family.inverse(np.full(rows.n, float(state["null_beta"])) + rows.offset)
    v0 = family.variance(mu0)
    out["null"] = {
        "xtwx": float(np.sum(rows.w * v0)),
        "score": float(np.sum(rows.w * (rows.y - mu0))),
        "deviance": family.deviance(rows.y, mu0, rows.w),
        "pearson": family.pearson(rows.y, mu0, rows.w),
    }
    return out
