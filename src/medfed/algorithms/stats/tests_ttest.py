"""``ttest``: Welch's two-sample t-test of a numeric column between two groups.

The groups are two levels of ``group`` (level names as in ``crosstab``: ``"1"``,
``"Pre"``, ``"true"``); the first named is ``a`` and the test is of ``mean(a) - mean(b)``.
Without ``groups`` the column must have exactly two levels over the contributing nodes,
taken in sorted order. With no node withheld the result equals
``scipy.stats.ttest_ind(a, b, equal_var=False)`` on the pooled rows: statistic, p value,
Welch-Satterthwaite degrees of freedom and the confidence interval of the difference
(``alternative`` and ``confidence_level`` as in scipy).

What leaves a node (one round), for the rows matching ``where`` where ``column`` and
``group`` are both non-null (and, with ``groups``, ``group`` is one of them)::

    {"rows": R,
     "groups": [level, ...],                        # the two named, else every level here
     "n": [n per group],
     "stats": [{"sum": Σx, "m2": Σ(x - local mean)²} | None per group]}   # None: n = 0

Nothing else leaves (no row values).

Gate: a node with ``0 < R < min_rows`` refuses (rule ``min_rows``, a test on too few
rows). ``Grid("n")`` withholds the node's whole answer when any group count is between 1
and ``min_cell_count - 1``, so which group was small is never visible. The local step
declares each used row's group level to the node's row-set memory, so a later grid or
filter that would split a released group into a part of 1..k-1 rows is withheld too.

The aggregate pools the nodes that contributed (``suppressed_nodes`` counts those that
withheld theirs) and fails the task with :class:`~medfed.common.errors.BadRequest` when
none contributed, the levels are not two or a group has fewer than two pooled rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator
from scipy import special

from medfed.algorithms.base import (
    Algorithm,
    Finished,
    Grid,
    LocalContext,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.stats._batch_moments import BatchMoments
from medfed.algorithms.stats._common import (
    WhereParams,
    check_where,
    gated_payloads,
    require_column,
)
from medfed.algorithms.stats._tests_common import (
    number,
    pool_moments,
    require_min_rows,
    text_table,
)
from medfed.algorithms.stats.crosstab import level_name, level_names, level_order
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["TTest", "TTestParams", "TTestResult"]


class TTestParams(WhereParams):
    column: str = Field(min_length=1)
    group: str = Field(min_length=1)
    groups: list[str] | None = Field(default=None, min_length=2, max_length=2)
    alternative: Literal["two-sided", "less", "greater"] = "two-sided"
    confidence_level: float = Field(default=0.95, gt=0.0, lt=1.0)

    @field_validator("groups", mode="before")
    @classmethod
    def _levels(cls, raw: Any) -> Any:
        if not isinstance(raw, list):
            return raw
        levels = [v if isinstance(v, str) else level_name(v) for v in raw]
        if len(set(levels)) != len(levels):
            raise ValueError("the two groups must differ")
        return levels


class TTestResult(BaseModel):
    column: str
    group: str
    groups: list[str]
    n: list[int]
    mean: list[float]
    std: list[float | None]
    estimate: float
    statistic: float | None
    pvalue: float | None
    df: float
    confidence_interval: list[float | None]
    confidence_level: float
    alternative: str
    suppressed_nodes: int = 0

    def summary(self) -> str:
        rows = [
            (f"{self.group} = {g}", n, number(m), number(s))
            for g, n, m, s in zip(self.groups, self.n, self.mean, self.std, strict=True)
        ]
        title = f"Welch two-sample t-test of {self.column} by {self.group}"
        if self.suppressed_nodes:
            title += f" ({self.suppressed_nodes} node(s) withheld theirs)"
        groups = text_table(title, ["group", "n", "mean", "std"], rows)
        low, high = self.confidence_interval
        level = f"{100 * self.confidence_level:g}% CI"
        test = text_table(
            f"alternative: {self.alternative}",
            ["difference", "t", "df", "p value", level],
            [
                (number(self.estimate), number(self.statistic), number(self.df),
                 number(self.pvalue), f"[{number(low)}, {number(high)}]")
            ],
        )  # fmt: skip
        return f"{groups}\n{test}"


class TTest(Algorithm[TTestParams]):
    name = "ttest"
    summary = "Welch two-sample t-test (unequal variances) between two groups"
    Params = TTestParams
    Result = TTestResult

    def validate(self, params: TTestParams, schemas: Sequence[DatasetSchema]) -> None:
        if params.column == params.group:
            raise BadRequest(f"ttest: column and group are the same column '{params.column}'")
        require_column(self.name, schemas, params.column, numeric=True)
        require_column(self.name, schemas, params.group)
        check_where(self.name, params, schemas)

    def disclosure(self, params: TTestParams) -> list[Rule]:
        return [Grid("n")]

    def local(self, params: TTestParams, ctx: LocalContext) -> dict[str, Any]:
        wanted = set(params.groups) if params.groups is not None else None
        groups: dict[str, BatchMoments] = {}
        rows = 0
        grid = ctx.grid()
        # batch by batch (``select_batches``): per group, moments and dominance figures
        for frame in ctx.data.select_batches([params.column, params.group], params.filter):
            frame = frame.dropna()
            levels = level_names(frame[params.group])
            if wanted is not None:
                keep = np.asarray([level in wanted for level in levels], dtype=bool)
                frame, levels = frame[keep], levels[keep]
            grid.add(pd.Series(levels, index=frame.index, dtype=object))
            rows += len(frame)
            values = frame[params.column].to_numpy(dtype=float)
            for level in pd.unique(levels):
                groups.setdefault(str(level), BatchMoments()).add(values[levels == level])
        grid.close()
        require_min_rows(self.name, rows, ctx)
        named = list(params.groups or sorted(groups, key=level_order))
        counts = [groups[g].n if g in groups else 0 for g in named]
        stats: list[dict[str, float] | None] = []
        for g, n in zip(named, counts, strict=True):
            if n == 0:
                stats.append(None)
                continue
            groups[g].declare(ctx, g)
            stats.append(groups[g].message())
        return {"rows": rows, "groups": named, "n": counts, "stats": stats}

    def aggregate(
        self,
        params: TTestParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        payloads, suppressed = gated_payloads(outputs)
        if outputs and not payloads:
            raise BadRequest(
                f"ttest: gate: min_cell_count: all {suppressed} node(s) withheld their answer "
                "(a node withholds it whole when a group is under its threshold)"
            )
        named = {g for p in payloads for g in p["groups"]}
        levels = params.groups or sorted(named, key=level_order)
        if len(levels) != 2:
            raise BadRequest(
                f"ttest: '{params.group}' has {len(levels)} levels at the contributing nodes "
                f"({', '.join(levels)}); name the two to compare in groups"
            )
        pooled = []
        for level in levels:
            parts: list[tuple[int, float, float]] = []
            for payload in payloads:
                if level not in payload["groups"]:
                    continue
                i = payload["groups"].index(level)
                n, part = int(payload["n"][i]), payload["stats"][i]
                if n > 0:
                    parts.append((n, float(part["sum"]), float(part["m2"])))
            n, mean, m2 = pool_moments(parts)
            if n < 2:
                raise BadRequest(f"ttest: group '{level}' has {n} row(s); it needs at least 2")
            pooled.append((n, mean, m2 / (n - 1)))
        return Finished(_welch(params, levels, pooled, suppressed))


def _welch(
    params: TTestParams,
    levels: list[str],
    pooled: Sequence[tuple[int, float, float]],
    suppressed: int,
) -> dict[str, Any]:
    """Welch's test from pooled ``(n, mean, variance)``, in scipy's order of operations."""
    (n1, mean1, v1), (n2, mean2, v2) = pooled
    vn1, vn2 = v1 / n1, v2 / n2
    df_denominator = vn1**2 / (n1 - 1) + vn2**2 / (n2 - 1)
    df = (vn1 + vn2) ** 2 / df_denominator if df_denominator > 0 else 1.0
    denom = math.sqrt(vn1 + vn2)
    estimate = mean1 - mean2
    statistic = estimate / denom if denom > 0 else None
    pvalue: float | None = None
    interval: list[float | None] = [None, None]
    if statistic is not None:
        if params.alternative == "less":
            pvalue = float(special.stdtr(df, statistic))
        elif params.alternative == "greater":
            pvalue = float(special.stdtr(df, -statistic))
        else:
            pvalue = float(2 * special.stdtr(df, -abs(statistic)))
        level = params.confidence_level
        if params.alternative == "less":
            low, high = -math.inf, float(special.stdtrit(df, level))
        elif params.alternative == "greater":
            low, high = float(special.stdtrit(df, 1 - level)), math.inf
        else:
            tail = (1 - level) / 2
            low, high = float(special.stdtrit(df, tail)), float(special.stdtrit(df, 1 - tail))
        interval = [
            low * denom + estimate if math.isfinite(low) else None,
            high * denom + estimate if math.isfinite(high) else None,
        ]
    result = TTestResult(
        column=params.column,
        group=params.group,
        groups=levels,
        n=[n1, n2],
        mean=[mean1, mean2],
        std=[math.sqrt(v1), math.sqrt(v2)],
        estimate=estimate,
        statistic=statistic,
        pvalue=pvalue,
        df=df,
        confidence_interval=interval,
        confidence_level=params.confidence_level,
        alternative=params.alternative,
        suppressed_nodes=suppressed,
    )
    return result.model_dump()
