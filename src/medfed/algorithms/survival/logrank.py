"""``logrank``: the log-rank test between the levels of a group column.

Two rounds, the event table of :mod:`medfed.algorithms.survival.event_table` — the same
messages as ``km`` with a group. What leaves a node: round 0 its distinct (coarsened)
event times per group level; round 1, at every time of the agreed grid, its number at
risk and number of events per group level, and its rows per level. Gate:
``MinRows("rows")``, ``Cells("at_risk")``, min rows per node and per group level
(refusals), and the risk-set rule of :mod:`medfed.algorithms.survival.times`.

The hub computes lifelines' ``multivariate_logrank_test`` (which for two groups equals
``logrank_test``) on the pooled table: at each event time with ``n`` at risk, ``d``
events and ``n_g`` at risk in group ``g``, the expected events ``E_g = Σ d n_g / n`` and
the covariance ``V_gh = Σ f (n_g n δ_gh - n_g n_h)`` with
``f = d (n - d) / ((n - 1) n²)`` (``(n - d)/(n - 1)`` taken as 1 where ``n = 1``). The
statistic is ``Z' V⁺ Z`` over the first ``G - 1`` groups (``Z = O - E``, ``V⁺`` the
pseudo-inverse), chi-squared with ``G - 1`` degrees of freedom. With coarsened tails the
test is exactly that of the pooled data with each node's tail moved to its boundary, and
the result carries a proven range for the uncoarsened statistic and p value, for any
number of groups (:mod:`medfed.algorithms.survival.bounds`), flagged when the p value
could lie on either side of 0.05. A group with fewer than ``k`` events pooled (none
included) refuses the test: the observed counts sum to the expected ones, so one small
count would follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from medfed.algorithms.stats._common import check_where, require_column
from medfed.algorithms.survival.bounds import logrank_bound
from medfed.algorithms.survival.event_table import EventTableAlgorithm, PooledTable
from medfed.algorithms.survival.results import LogrankResult
from medfed.algorithms.survival.times import SurvivalParams, check_survival_columns
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["Logrank", "LogrankParams", "logrank_test"]


class LogrankParams(SurvivalParams):
    group: str = Field(min_length=1)


def logrank_test(tables: Sequence[PooledTable]) -> dict[str, Any]:
    """Observed, expected, statistic, df and p value over the group tables."""
    from scipy import stats  # scipy.stats costs ~1 s to import: loaded where it is used

    n_g = np.stack([t.at_risk for t in tables], axis=1).astype(np.float64)
    d_g = np.stack([t.events for t in tables], axis=1).astype(np.float64)
    d = d_g.sum(axis=1)
    keep = d > 0
    n_g, d_g, d = n_g[keep], d_g[keep], d[keep]
    n = n_g.sum(axis=1)
    expected = (n_g * (d / n)[:, None]).sum(axis=0)
    observed = d_g.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n > 1, (n - d) / (n - 1), 1.0)
    factor = share * d / n**2
    weighted = n_g * factor[:, None]
    cov = -(weighted.T @ n_g)
    cov[np.diag_indices_from(cov)] += (weighted * n[:, None]).sum(axis=0)
    z = (observed - expected)[:-1]
    statistic = float(z @ np.linalg.pinv(cov[:-1, :-1]) @ z)
    df = len(tables) - 1
    return {
        "observed": [int(x) for x in observed],
        "expected": expected.tolist(),
        "test_statistic": statistic,
        "df": df,
        "p_value": float(stats.chi2.sf(statistic, df)),
    }


class Logrank(EventTableAlgorithm[LogrankParams]):
    name = "logrank"
    summary = "Log-rank test of equal survival between the levels of a group column"
    Params = LogrankParams
    Result: ClassVar[type[BaseModel]] = LogrankResult

    def group_column(self, params: LogrankParams) -> str | None:
        return params.group

    def validate(self, params: LogrankParams, schemas: Sequence[DatasetSchema]) -> None:
        check_survival_columns(self.name, params, schemas)
        if params.group in (params.duration, params.event):
            raise BadRequest(f"{self.name}: group must differ from duration and event")
        require_column(self.name, schemas, params.group)
        check_where(self.name, params, schemas)

    def finish(
        self, params: LogrankParams, tables: dict[str, PooledTable], suppressed: int
    ) -> dict[str, Any]:
        if len(tables) < 2:
            raise BadRequest(
                f"{self.name}: group '{params.group}' has {len(tables)} level(s) over all "
                "nodes; the test needs at least 2"
            )
        k = max(t.k for t in tables.values())
        if any(int(t.events.sum()) < k for t in tables.values()):
            # observed events sum to the expected ones: a small group's count would follow
            # from the others, so the test is refused; no events and a few read alike
            raise BadRequest(
                f"{self.name}: a group has too few events over all nodes (fewer than the "
                "nodes' minimum cell count) to test"
            )
        test = logrank_test(list(tables.values()))
        bound = logrank_bound(list(tables.values()), test["test_statistic"])
        if bound is not None:
            p_low, p_high = bound.p_value
            test |= {
                "statistic_bounds": list(bound.statistic),
                "p_value_bounds": [p_low, p_high],
                "p_value_may_cross_005": p_low < 0.05 <= p_high,
            }
        return test | {
            "group": params.group,
            "groups": list(tables),
            "rows": [t.rows for t in tables.values()],
            "coarsened": any(t.tails for t in tables.values()),
            "suppressed_nodes": suppressed,
        }
