"""The hub's side of ``glm``: pooling the nodes' sums, solving, and the final statistics.

Runs on the hub inside :meth:`GLM.aggregate`. Nothing here runs on a node and nothing
leaves one; the sums it pools are those :mod:`.local` describes (round by round), after the
node's gate (``MinRows("rows")``, ``Cells`` on level counts, outcome counts and boundary
counts).

Linear algebra works on ``X'WX`` scaled to unit diagonal, ``S = D^-1 X'WX D^-1`` with
``D = sqrt(diag X'WX)``, so covariates in very different units do not spoil the solve.

- **Singular design** (round 1, at the starting weights, which are all positive): a zero
  diagonal names a column that is 0 in every row; an eigenvalue of ``S`` under
  :data:`SINGULAR` times the largest marks ``X`` as rank-deficient, and the columns with
  weight in those eigenvectors are named (a duplicated covariate, a constant column beside
  the intercept, dummies that add up to another column).
- **Breakdown** in a later round (``S`` numerically singular, a non-finite step) means the
  weights of some rows went to 0: fitted means at the boundary, i.e. separation.
- **Separation** at convergence: the next Newton step, measured on the linear predictor's
  scale (``|step_j| * rms(x_j)``), stays above :data:`DIVERGING` — coefficients that keep
  growing by about one unit of the linear predictor per iteration — or some node counts
  boundary rows (fitted probability numerically 0 or 1; poisson mean numerically 0).

Final statistics equal statsmodels' ``GLMResults``: ``cov = scale * (X'WX)^-1`` with the
weights of the last IRLS step, z = estimate / std error, two-sided normal p values and
95 % normal intervals, ``scale = Pearson chi² / df_resid`` for gaussian (1 otherwise),
``aic = -2 llf + 2 p``; the gaussian log-likelihood is statsmodels' concentrated one,
``-n/2 (1 + log(2 pi dev / n)) + 1/2 Σ f log v``. With frequency weights ``f`` (prior
weights ``v``), ``n`` is ``Σ f`` (statsmodels' ``wnobs``) here and in ``df_resid = n - p``;
without them ``n`` is the row count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medfed.algorithms.glm.families import Family
from medfed.common.errors import BadRequest

__all__ = [
    "DIVERGING",
    "SINGULAR",
    "check_singular",
    "coefficients",
    "diverging",
    "loglik",
    "pooled",
    "solve",
]

Array = NDArray[np.float64]

SINGULAR = 1e-10
BREAKDOWN = 1e-14
DIVERGING = 1e-4


def pooled(payloads: Sequence[dict[str, Any]], key: str, inner: str | None = None) -> Any:
    """The sum over nodes of ``payload[key]`` (or ``payload[key][inner]``), as numpy."""
    parts = [p[key] if inner is None else p[key][inner] for p in payloads]
    try:
        total = np.sum([np.asarray(part, dtype=np.float64) for part in parts], axis=0)
    except TypeError:  # the gate turns NaN and infinities into None
        total = np.asarray(np.nan)
    if not np.isfinite(total).all():
        raise BadRequest(f"glm: a node's {key} is not finite (numerical breakdown)")
    return total


def pooled_count(payloads: Sequence[dict[str, Any]], key: str) -> int | None:
    """Sum of a gated count; None when a node's count was suppressed (0 < count < k)."""
    values = [p[key] for p in payloads]
    if any(v is None for v in values):
        return None
    return int(sum(int(v) for v in values))


def _scaled(h: Array) -> tuple[Array, Array]:
    d = np.sqrt(np.clip(np.diag(h), 0.0, None))
    safe = np.where(d > 0, d, 1.0)
    return h / np.outer(safe, safe), d


def check_singular(h: Array, names: Sequence[str]) -> None:
    """A clear error naming the columns when ``X'WX`` is rank-deficient."""
    s, d = _scaled(h)
    zero = [names[j] for j in range(len(names)) if not d[j] > 0]
    if zero:
        raise BadRequest(
            f"glm: singular design: column(s) {', '.join(zero)} are 0 in every selected row"
        )
    values, vectors = np.linalg.eigh(s)
    small = values < SINGULAR * values[-1]
    if not small.any():
        return
    weight = np.max(np.abs(vectors[:, small]), axis=1)
    involved = [names[j] for j in range(len(names)) if weight[j] > 0.05]
    rank = len(names) - int(small.sum())
    raise BadRequest(
        f"glm: singular design: the columns {', '.join(involved)} are linearly dependent "
        f"(X'WX has rank {rank} < {len(names)} parameters); drop or recode one of them"
    )


def _breakdown(iteration: int) -> BadRequest:
    return BadRequest(
        f"glm: IRLS broke down at iteration {iteration}: X'WX became numerically singular "
        "because fitted means reached the boundary (perfect separation?)"
    )


def solve(h: Array, rhs: Array, iteration: int) -> Array:
    """``h^-1 rhs`` through the scaled matrix; a clear error if it is numerically singular."""
    s, d = _scaled(h)
    if not (np.isfinite(s).all() and np.isfinite(rhs).all()) or not (d > 0).all():
        raise _breakdown(iteration)
    values = np.linalg.eigvalsh(s)
    if values[0] < BREAKDOWN * values[-1]:
        raise _breakdown(iteration)
    step = np.asarray(np.linalg.solve(s, rhs / d) / d, dtype=np.float64)
    if not np.isfinite(step).all():
        raise _breakdown(iteration)
    return step


def inverse(h: Array, iteration: int) -> Array:
    """``h^-1`` through the scaled matrix."""
    s, d = _scaled(h)
    values = np.linalg.eigvalsh(s)
    if not (d > 0).all() or values[0] < BREAKDOWN * values[-1]:
        raise _breakdown(iteration)
    return np.asarray(np.linalg.inv(s) / np.outer(d, d), dtype=np.float64)


def diverging(step: Array, x2: Array, n: int) -> int | None:
    """Index of the coefficient whose step on the linear predictor's scale is too large."""
    size = np.abs(step) * np.sqrt(np.asarray(x2) / max(n, 1))
    j = int(np.argmax(size))
    return j if size[j] > DIVERGING else None


def loglik(family: Family, node_sum: float, deviance: float, n: int, log_w: float) -> float:
    """statsmodels' ``llf``: node sums at scale 1, or the concentrated gaussian one."""
    if not family.estimates_scale:
        return node_sum
    return -n / 2.0 * (1.0 + math.log(2.0 * math.pi * deviance / n)) + log_w / 2.0


def coefficients(
    names: Sequence[str], beta: Array, h_last: Array, scale: float, iteration: int
) -> list[dict[str, float | str]]:
    """Estimate, std error, z, p value and 95 % interval of each coefficient."""
    from scipy import stats  # scipy.stats costs ~1 s to import: loaded where it is used

    cov = scale * inverse(h_last, iteration)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    if not (se > 0).all():
        raise BadRequest("glm: a standard error is 0 (perfect fit); the model is degenerate")
    z = beta / se
    p = 2.0 * stats.norm.sf(np.abs(z))
    q = float(stats.norm.ppf(0.975))
    return [
        {
            "name": name,
            "estimate": float(beta[j]),
            "std_error": float(se[j]),
            "z": float(z[j]),
            "p_value": float(p[j]),
            "ci_low": float(beta[j] - q * se[j]),
            "ci_high": float(beta[j] + q * se[j]),
        }
        for j, name in enumerate(names)
    ]
