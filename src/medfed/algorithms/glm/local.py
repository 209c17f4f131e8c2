"""The node's step of ``glm``: level counts in round 0, IRLS sums in every later round.

Runs on the node over the rows of its dataset that match ``where``, have no null in the
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


def read_rows(params: GLMParams, ctx: LocalContext) -> Rows:
    """Select the model's columns and keep complete cases; check the values' ranges.

    Frequency weights are checked over every selected row before incomplete rows are left
    out, and rows of weight 0 are then dropped (they count for nothing, rules included).
    """
    frame = ctx.data.select(params.columns, params.filter)
    if params.freq_weights is not None:
        frame = frame[check_freq_weights(frame[params.freq_weights], params.freq_weights) > 0]
    frame = frame.dropna()
    # the row sets this fit releases aggregates of: its complete cases, and per categorical
    # covariate the cells of its levels (the node's row-set memory checks them)
    ctx.cells(pd.Series(0, index=frame.index))
    for column in params.covariates:
        if column in params.categorical or column_kind(frame[column]) != "number":
            ctx.cells(frame[column])
    frame = frame.reset_index(drop=True)
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
    rows = read_rows(params, ctx)
    kinds: dict[str, str] = {}
    levels: dict[str, dict[str, int]] = {}
    for column in params.covariates:
        kind = column_kind(rows.frame[column])
        if column not in params.categorical and kind == "number":
            continue
        counts = level_counts(rows.frame[column])
        kinds[column] = kind
        levels[column] = {level: c for level, c in counts.items() if c > 0}
    local = Design(params.intercept, params.covariates, {c: sorted(v) for c, v in levels.items()})
    check_rows(params, ctx, rows.n, local.size)
    outcome_counts: list[int] = []
    if params.family == "binomial":
        ones = int(np.count_nonzero(rows.y == 1.0))
        outcome_counts = [rows.n - ones, ones]  # a class of 1..k-1 rows: Grid withholds
    sums = {
        "y": float(np.sum(rows.y)),
        "w": float(np.sum(rows.w)),
        "wy": float(np.sum(rows.w * rows.y)),
        "log_w": float(np.sum(rows.f * np.log(rows.v))),
        "nobs": rows.nobs,
    }
    return {
        "rows": rows.n,
        "kinds": kinds,
        "levels": levels,
        "outcome_counts": outcome_counts,
        "sums": sums,
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
    """One IRLS round's sums at the broadcast coefficients (see the module docstring)."""
    state = ctx.state
    family = FAMILIES[params.family]
    design = Design(params.intercept, params.covariates, dict(state["levels"]))
    rows = read_rows(params, ctx)
    check_rows(params, ctx, rows.n, design.size)
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
        "levels": {},
        "outcome_counts": [],
        "xtwx": (x.T @ (x * weight[:, None])).tolist(),
        "score": (x.T @ (weight * work)).tolist(),
        "x2": np.sum(rows.f[:, None] * x * x, axis=0).tolist(),
        "deviance": family.deviance(rows.y, mu, rows.w),
        "pearson": family.pearson(rows.y, mu, rows.w),
        "loglik": family.loglik(rows.y, mu, rows.w),
        "boundary": family.boundary(mu),
        "xtwx_prev": None,
    }
    if state.get("has_prev"):
        _, mu_prev = _fitted(family, rows, x, state["beta_prev"], ybar)
        w_prev = rows.w * family.variance(mu_prev)
        out["xtwx_prev"] = (x.T @ (x * w_prev[:, None])).tolist()
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
