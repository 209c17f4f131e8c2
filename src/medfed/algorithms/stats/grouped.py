"""``grouped_summary``: count, mean, variance and std of numeric columns per group.

Groups are the levels of the categorical column ``by`` (as strings, like ``crosstab``:
``"II"``, ``"1"``, ``"true"``); rows whose ``by`` is null are left out, as pandas'
``groupby`` does. With no node withheld the result equals
``df.groupby(by)[columns].agg(["count", "mean", "var"])`` on the pooled rows.

What leaves a node (one round), for the rows matching ``where`` with a non-null ``by``::

    {"rows": R,
     "groups": [level, ...],               # every level that occurs here, sorted
     "n": [[non-null count per column] per group],
     "stats": [[{"sum": Σx, "m2": Σ(x - local mean)²} | None per column] per group]}

``stats`` is ``None`` only where the count is 0. Nothing else leaves (no row values).

Gate: ``MinRows("rows")`` withholds the whole answer when ``R < min_cell_count`` (zero
included); ``Grid("n")`` withholds the whole answer when any count is between 1 and
``min_cell_count - 1``, so which group or column was small is never visible. The local
step declares each used row's group level to the node's row-set memory (the per-column
null patterns are recorded by ``select``), so a later grid or filter that would split a
released group into a part of 1..k-1 rows is withheld too.

The aggregate pools each group and column exactly (Chan, Golub and LeVeque) over the
nodes that contributed, over the union of their levels; ``suppressed_nodes`` counts the
nodes that withheld theirs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from medfed.algorithms.base import (
    Algorithm,
    Finished,
    Grid,
    LocalContext,
    MinRows,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.plotting import pyplot, save
from medfed.algorithms.stats._batch_moments import BatchMoments
from medfed.algorithms.stats._common import (
    WhereParams,
    check_where,
    gated_payloads,
    require_column,
)
from medfed.algorithms.stats._tests_common import number, pool_moments, text_table
from medfed.algorithms.stats.crosstab import level_names, level_order
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["GroupStats", "GroupedSummary", "GroupedSummaryParams", "GroupedSummaryResult"]


class GroupedSummaryParams(WhereParams):
    columns: list[str] = Field(min_length=1, max_length=100)
    by: str = Field(min_length=1)


class GroupStats(BaseModel):
    """One group and column: pooled non-null count, mean, variance (ddof=1) and std."""

    n: int
    mean: float | None
    variance: float | None
    std: float | None


class GroupedSummaryResult(BaseModel):
    by: str
    columns: list[str]
    groups: dict[str, dict[str, GroupStats]]
    suppressed_nodes: int

    def _title(self, title: str) -> str:
        if self.suppressed_nodes:
            title += f" ({self.suppressed_nodes} node(s) withheld theirs)"
        return title

    def summary(self) -> str:
        rows = [
            (level, column, s.n, number(s.mean), number(s.variance), number(s.std))
            for level, stats in self.groups.items()
            for column, s in stats.items()
        ]
        title = self._title(f"Summary of {', '.join(self.columns)} by {self.by}")
        headers = [self.by, "column", "n", "mean", "variance", "std"]
        return text_table(title, headers, rows)

    def plot(self, path: str) -> None:
        plt = pyplot()

        fig, axes = plt.subplots(1, len(self.columns), figsize=(3.5 * len(self.columns), 3.5))
        for ax, column in zip(np.atleast_1d(axes), self.columns, strict=True):
            levels = list(self.groups)
            cells = [self.groups[g][column] for g in levels]
            means = [np.nan if c.mean is None else c.mean for c in cells]
            stds = [0.0 if c.std is None else c.std for c in cells]
            ax.bar(range(len(levels)), means, yerr=stds, capsize=4, color="C0")
            ax.set_xticks(range(len(levels)), levels)
            ax.set_xlabel(self.by)
            ax.set_title(f"{column}: mean ± std")
        fig.suptitle(self._title(f"by {self.by}"))
        save(fig, path)


class GroupedSummary(Algorithm[GroupedSummaryParams]):
    name = "grouped_summary"
    summary = "Count, mean, variance and std of numeric columns per group of a column"
    Params = GroupedSummaryParams
    Result = GroupedSummaryResult

    def validate(self, params: GroupedSummaryParams, schemas: Sequence[DatasetSchema]) -> None:
        if len(set(params.columns)) != len(params.columns):
            raise BadRequest(f"{self.name}: a column is named twice in columns")
        if params.by in params.columns:
            raise BadRequest(f"{self.name}: by column '{params.by}' is also in columns")
        require_column(self.name, schemas, params.by)
        for column in params.columns:
            require_column(self.name, schemas, column, numeric=True)
        check_where(self.name, params, schemas)

    def disclosure(self, params: GroupedSummaryParams) -> list[Rule]:
        return [MinRows("rows"), Grid("n")]

    def local(self, params: GroupedSummaryParams, ctx: LocalContext) -> dict[str, Any]:
        groups: dict[str, list[BatchMoments]] = {}
        rows = 0
        grid = ctx.grid()
        # batch by batch (``select_batches``): per group and column, moments and the
        # dominance figures; each used row's group is declared as it goes
        for frame in ctx.data.select_batches([params.by, *params.columns], params.filter):
            frame = frame[frame[params.by].notna()]
            levels = level_names(frame[params.by])
            grid.add(pd.Series(levels, index=frame.index, dtype=object))
            rows += len(frame)
            for level in pd.unique(levels):
                chosen = frame[levels == level]
                moments = groups.setdefault(str(level), [BatchMoments() for _ in params.columns])
                for m, column in zip(moments, params.columns, strict=True):
                    m.add(chosen[column].dropna().to_numpy(dtype=np.float64))
        grid.close()
        named = sorted(groups, key=level_order)
        counts: list[list[int]] = []
        stats: list[list[dict[str, float] | None]] = []
        for level in named:
            counts.append([m.n for m in groups[level]])
            stats.append([])
            for m, column in zip(groups[level], params.columns, strict=True):
                if m.n == 0:
                    stats[-1].append(None)
                    continue
                m.declare(ctx, f"{level}.{column}")
                stats[-1].append(m.message())
        return {"rows": rows, "groups": named, "n": counts, "stats": stats}

    def aggregate(
        self,
        params: GroupedSummaryParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        payloads, suppressed = gated_payloads(outputs)
        levels = sorted({g for p in payloads for g in p["groups"]}, key=level_order)
        groups: dict[str, dict[str, GroupStats]] = {}
        for level in levels:
            groups[level] = {}
            for j, column in enumerate(params.columns):
                parts: list[tuple[int, float, float]] = []
                for payload in payloads:
                    if level not in payload["groups"]:
                        continue
                    i = payload["groups"].index(level)
                    n, part = int(payload["n"][i][j]), payload["stats"][i][j]
                    if n > 0:
                        parts.append((n, float(part["sum"]), float(part["m2"])))
                groups[level][column] = _group_stats(parts)
        result = GroupedSummaryResult(
            by=params.by, columns=params.columns, groups=groups, suppressed_nodes=suppressed
        )
        return Finished(result.model_dump())


def _group_stats(parts: Sequence[tuple[int, float, float]]) -> GroupStats:
    n, mean, m2 = pool_moments(parts)
    variance = m2 / (n - 1) if n > 1 else None
    return GroupStats(
        n=n,
        mean=mean if n > 0 else None,
        variance=variance,
        std=math.sqrt(variance) if variance is not None else None,
    )
