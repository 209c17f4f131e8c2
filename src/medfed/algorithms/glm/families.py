"""The families the ``glm`` algorithm fits, each with its canonical link, as statsmodels has them.

=========  ========  =================  ==============
family     link      variance V(mu)     starting mu
=========  ========  =================  ==============
gaussian   identity  1                  (y + ybar) / 2
binomial   logit     mu (1 - mu)        (y + 0.5) / 2
poisson    log       mu                 (y + ybar) / 2
=========  ========  =================  ==============

These functions run on the node, inside the local step (:mod:`.local`), over the node's own
rows; nothing here leaves a node by itself. What leaves is the sums :mod:`.local` builds
from them — per-row values never do. The gate rules are listed in :mod:`.irls`.

With a canonical link the IRLS weight of a row is ``w V(mu)`` (``w`` the prior weight) and
its working residual ``(y - mu) / V(mu)``; both equal statsmodels' ``family.weights`` and
``link.deriv(mu) (y - mu)``, with ``mu`` clipped to ``[eps, 1 - eps]`` (binomial) or
``[eps, inf)`` (poisson) where statsmodels clips it. Deviance, Pearson chi² and the
log-likelihood are the sums statsmodels' ``family.deviance``, ``pearson_chi2`` and
``family.loglike`` compute (at scale 1; the gaussian log-likelihood needs the pooled scale
and is formed on the hub from the pooled deviance, see :mod:`.fit`).

A row whose fitted mean lies within :data:`BOUNDARY` of the edge of its range (a
probability numerically 0 or 1, a poisson mean numerically 0) counts as a *boundary* row:
boundary rows at convergence mean perfect separation (the maximum-likelihood estimate does
not exist), and the fit is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = ["BOUNDARY", "FAMILIES", "Family", "FamilyName"]

Array = NDArray[np.float64]
FamilyName = Literal["gaussian", "binomial", "poisson"]

FLOAT_EPS = float(np.finfo(float).eps)
BOUNDARY = 1e-8
ETA_MAX = 700.0  # exp(700) is finite; a larger poisson linear predictor would overflow


@dataclass(frozen=True)
class Family:
    """One family with its canonical link; every method works on a node's own arrays."""

    name: FamilyName
    link: Literal["identity", "logit", "log"]

    @property
    def estimates_scale(self) -> bool:
        """Gaussian estimates its scale (Pearson chi² / df_resid); the others fix it at 1."""
        return self.name == "gaussian"

    def start_mu(self, y: Array, ybar: float) -> Array:
        """statsmodels' ``family.starting_mu``: where IRLS starts when no coefficients exist."""
        if self.name == "binomial":
            return (y + 0.5) / 2.0
        return (y + ybar) / 2.0

    def link_fn(self, mu: Array) -> Array:
        if self.name == "binomial":
            p = np.clip(mu, FLOAT_EPS, 1.0 - FLOAT_EPS)
            return np.asarray(np.log(p / (1.0 - p)), dtype=np.float64)
        if self.name == "poisson":
            return np.asarray(np.log(np.clip(mu, FLOAT_EPS, None)), dtype=np.float64)
        return mu

    def inverse(self, eta: Array) -> Array:
        if self.name == "binomial":
            return np.asarray(special.expit(eta), dtype=np.float64)
        if self.name == "poisson":
            return np.asarray(np.exp(np.minimum(eta, ETA_MAX)), dtype=np.float64)
        return eta

    def variance(self, mu: Array) -> Array:
        """V(mu), clipped as statsmodels clips it (never 0 for binomial and poisson)."""
        if self.name == "binomial":
            p = np.clip(mu, FLOAT_EPS, 1.0 - FLOAT_EPS)
            return p * (1.0 - p)
        if self.name == "poisson":
            return np.clip(mu, FLOAT_EPS, None)
        return np.ones_like(mu)

    def deviance(self, y: Array, mu: Array, w: Array) -> float:
        """Sum over rows of ``w`` times the unit deviance (not divided by the scale)."""
        if self.name == "binomial":
            p = np.clip(mu, FLOAT_EPS, 1.0 - FLOAT_EPS)
            unit = -2.0 * (y * np.log(p) + (1.0 - y) * np.log1p(-p))
        elif self.name == "poisson":
            ratio = np.clip(y / np.clip(mu, FLOAT_EPS, None), FLOAT_EPS, None)
            unit = 2.0 * (y * np.log(ratio) - (y - mu))
        else:
            unit = (y - mu) ** 2
        return float(np.sum(w * unit))

    def pearson(self, y: Array, mu: Array, w: Array) -> float:
        """Pearson chi²: the sum of ``w (y - mu)^2 / V(mu)``."""
        return float(np.sum(w * (y - mu) ** 2 / self.variance(mu)))

    def loglik(self, y: Array, mu: Array, w: Array) -> float:
        """The log-likelihood at scale 1 (binomial, poisson); 0 for gaussian (see module).

        ``mu`` is clipped away from the boundary, which changes nothing but boundary rows.
        """
        if self.name == "binomial":
            p = np.clip(mu, FLOAT_EPS, 1.0 - FLOAT_EPS)
            return float(np.sum(w * (y * np.log(p / (1.0 - p)) + np.log(1.0 - p))))
        if self.name == "poisson":
            m = np.clip(mu, FLOAT_EPS, None)
            return float(np.sum(w * (y * np.log(m) - mu - special.gammaln(y + 1.0))))
        return 0.0

    def boundary(self, mu: Array) -> int:
        """How many rows have a fitted mean numerically at the edge of its range."""
        if self.name == "binomial":
            return int(np.count_nonzero((mu < BOUNDARY) | (mu > 1.0 - BOUNDARY)))
        if self.name == "poisson":
            return int(np.count_nonzero(mu < BOUNDARY))
        return 0


FAMILIES: dict[str, Family] = {
    "gaussian": Family("gaussian", "identity"),
    "binomial": Family("binomial", "logit"),
    "poisson": Family("poisson", "log"),
}
