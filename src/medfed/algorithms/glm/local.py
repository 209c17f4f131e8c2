"""The node's step of ``glm``: level counts in round 0, IRLS sums in every later round.

Runs on the node over the rows of its dataset that match ``where`` and have no null in the
outcome, a covariate, the weight or the offset (``n`` rows). Before anything is computed,
the node refuses (:class:`~medfed.common.errors.Refused`, the message names the rule):

- ``gate: min_rows`` — ``0 < n < min_rows`` (a node with no matching row sends zeros);
- ``gate: max_param_fraction`` — the model has more parameters than
  ``max_param_fraction * n`` (DataSHIELD's ``nfilter.glm``); in round 0 with the levels this
  node sees (a lower bound), from round 1 with the agreed design;
- ``gate: binary outcome`` — binomial only: a class of the outcome (0 or 1) has
  ``0 < count < min_cell_count`` rows here.

What leaves the node, round 0::

    {"rows": n, "kinds": {column: "number" | "string" | "boolean"},
     "levels": {column: {level: count}},       # levels with count >= min_cell_count
     "rare_levels": {column: how many levels have 0 < count < min_cell_count},
     "outcome_counts": [count of 0, count of 1],   # binomial; [] otherwise
     "sums": {"y": Σy, "w": Σw, "wy": Σwy, "log_w": Σ log w}, "boundary": 0}

Rare levels are not named; the hub refuses the fit when any node has one (see
:mod:`.irls`). Rounds 1.., at the broadcast coefficients ``beta`` (or statsmodels'
starting means in round 1) and the null model's intercept::

    {"rows": n, "levels": {}, "outcome_counts": [],
     "xtwx": X'WX (p * p), "score": X'W r (p), "xtwx_prev": X'WX at the previous beta,
     "x2": Σ x_j² per column, "deviance": .., "pearson": .., "loglik": ..,
     "boundary": rows with a fitted mean numerically at 0 or 1 (0 for a poisson mean),
     "null": {"xtwx": Σ W, "score": Σ W r, "deviance": .., "pearson": ..}}

``W`` are the IRLS weights and ``r`` the working residuals (:mod:`.families`); in round 1
``score`` is ``X'W z`` with the working response ``z``. The gate (``medfed.node.gate``)
then applies ``MinRows("rows")`` and ``Cells`` to ``levels``, ``outcome_counts`` and
``boundary``. ``X'WX`` over few rows can reveal them (with ``p`` close to ``n`` it nearly
determines the rows); the parameter-fraction rule is the guard, as in DataSHIELD. A node
answers one such matrix per round at coefficients the hub chose, never the researcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from medfed.algorithms.base import LocalContext
from medfed.algorithms.glm.design import Design, GLMParams, column_kind, level_counts
from medfed.algorithms.glm.families import FAMILIES, Family
from medfed.common.errors import BadRequest, Refused

__all__ = ["Rows", "irls_sums", "read_rows", "round0"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Rows:
    """A node's complete cases: covariate frame, outcome, prior weights and offset."""

    frame: pd.DataFrame
    y: Array
    w: Array
    offset: Array

    @property
    def n(self) -> int:
        return len(self.y)


def _numbers(frame: pd.DataFrame, column: str, role: str) -> Array:
    values: Array = frame[column].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise BadRequest(f"glm: {role} '{column}' has an infinite value at this node")
    return values


def read_rows(params: GLMParams, ctx: LocalContext) -> Rows:
    """Select the model's columns and keep complete cases; check the values' ranges."""
    frame = ctx.data.select(params.columns, params.filter).dropna().reset_index(drop=True)
    y = _numbers(frame, params.outcome, "outcome")
    if params.family == "binomial" and not np.isin(y, (0.0, 1.0)).all():
        raise BadRequest(f"glm: binomial outcome '{params.outcome}' must be 0/1 or boolean")
    if params.family == "poisson" and (y < 0).any():
        raise BadRequest(f"glm: poisson outcome '{params.outcome}' must not be negative")
    w = np.ones(len(frame))
    if params.weights is not None:
        w = _numbers(frame, params.weights, "weights")
        if (w <= 0).any():
            raise BadRequest(f"glm: weights '{params.weights}' must be positive")
    offset = np.zeros(len(frame))
    if params.offset is not None:
        offset = _numbers(frame, params.offset, "offset")
    for column in params.covariates:
        if column not in params.categorical and column_kind(frame[column]) == "number":
            _numbers(frame, column, "covariate")
    return Rows(frame=frame, y=y, w=w, offset=offset)


def check_rows(params: GLMParams, ctx: LocalContext, n: int, p: int) -> None:
    """The node's refusals that depend on its row count and the number of parameters."""
    if 0 < n < ctx.min_rows:
        raise Refused(
            f"gate: min_rows: fewer than {ctx.min_rows} rows match at this node "
            "(the node's minimum for a model)"
        )
    if n > 0 and p > ctx.max_param_fraction * n:
        raise Refused(
            f"gate: max_param_fraction: the model has {p} parameters, more than "
            f"{ctx.max_param_fraction:.4g} of this node's rows"
        )


def round0(params: GLMParams, ctx: LocalContext) -> dict[str, Any]:
    """Row count, level counts of categorical covariates, outcome counts, a few sums."""
    rows = read_rows(params, ctx)
    k = ctx.min_cell_count
    kinds: dict[str, str] = {}
    levels: dict[str, dict[str, int]] = {}
    rare: dict[str, int] = {}
    for column in params.covariates:
        kind = column_kind(rows.frame[column])
        if column not in params.categorical and kind == "number":
            continue
        counts = level_counts(rows.frame[column])
        kinds[column] = kind
        levels[column] = {level: c for level, c in counts.items() if c >= k}
        rare[column] = sum(1 for c in counts.values() if 0 < c < k)
    local = Design(params.intercept, params.covariates, {c: sorted(v) for c, v in levels.items()})
    check_rows(params, ctx, rows.n, local.size)
    outcome_counts: list[int] = []
    if params.family == "binomial":
        ones = int(np.count_nonzero(rows.y == 1.0))
        outcome_counts = [rows.n - ones, ones]
        if any(0 < c < k for c in outcome_counts):
            raise Refused(
                f"gate: binary outcome: a class of '{params.outcome}' has fewer than {k} "
                "rows at this node"
            )
    sums = {
        "y": float(np.sum(rows.y)),
        "w": float(np.sum(rows.w)),
        "wy": float(np.sum(rows.w * rows.y)),
        "log_w": float(np.sum(np.log(rows.w))),
    }
    return {
        "rows": rows.n,
        "kinds": kinds,
        "levels": levels,
        "rare_levels": rare,
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
        "x2": np.sum(x * x, axis=0).tolist(),
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
