"""``histogram``: counts of a numeric column in fixed bins, over all datasets.

The researcher gives the bin edges (strictly increasing, at least two), so no node reveals
its own range. Bins follow :func:`numpy.histogram`: ``[e0, e1), [e1, e2), …, [e_{k-1}, e_k]``
— the last bin is closed. Values below the first edge or above the last are counted in
``below`` and ``above``; nulls are left out.

What leaves a node per round (one round)::

    {"counts": [c_1, …, c_k], "below": b, "above": a}

Every count is sent, zeros included; nothing else leaves (no range, no row values). The
node reads the column batch by batch (``select_batches``), so a table larger than memory
is counted in bounded memory.

Gate: ``Grid("counts")``, ``Grid("below")`` and ``Grid("above")`` — when any of these
counts is between 1 and ``min_cell_count - 1`` the node withholds its whole answer, so
which bin was small is never visible. The local step declares each used row's cell (its
bin index, ``"below"`` or ``"above"``; null values are in no cell) to the node's row-set
memory, so a later grid or filter that would split a released bin into a part of 1..k-1
rows is withheld too. The aggregate sums the answers of the nodes that contributed;
``suppressed_nodes`` counts the nodes that withheld theirs.

dp mode: ``counts``, ``below`` and ``above`` leave with discrete Laplace noise (one row is
in one cell: L1 sensitivity 1) and no gate rule; the result carries ``privacy``. Noisy
cells are unbiased and may be negative.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from medfed.algorithms.base import (
    Algorithm,
    Finished,
    Grid,
    LocalContext,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.dp import DPResult, DPRule, Noise, privacy_of
from medfed.algorithms.plotting import pyplot, save
from medfed.algorithms.stats._common import (
    WhereParams,
    check_where,
    gated_payloads,
    require_column,
)
from medfed.algorithms.stats._text import text_table
from medfed.common.schemas import DatasetSchema

__all__ = ["Histogram", "HistogramParams", "HistogramResult"]

MAX_EDGES = 1001


class HistogramParams(WhereParams):
    column: str = Field(min_length=1)
    bins: list[float] = Field(min_length=2, max_length=MAX_EDGES)

    @field_validator("bins")
    @classmethod
    def _increasing(cls, bins: list[float]) -> list[float]:
        for edge in bins:
            if not math.isfinite(edge):
                raise ValueError(f"bin edge {edge} is not a finite number")
        for left, right in itertools.pairwise(bins):
            if not left < right:
                raise ValueError(f"bin edges must be strictly increasing ({left} then {right})")
        return bins


class HistogramResult(DPResult):
    edges: list[float]
    counts: list[int]
    below: int
    above: int
    suppressed_nodes: int

    def _title(self, title: str) -> str:
        if self.suppressed_nodes:
            title += f" ({self.suppressed_nodes} node(s) withheld theirs)"
        return title

    def summary(self) -> str:
        rows = [
            (f"[{lo:g}, {hi:g})", count)
            for lo, hi, count in zip(self.edges, self.edges[1:], self.counts, strict=False)
        ]
        rows += [("below", self.below), ("above", self.above)]
        table = text_table(self._title("Histogram"), ["bin", "count"], rows)
        return table + self.privacy_note()

    def plot(self, path: str) -> None:
        """Bars per bin; the title says how many nodes withheld their answer."""
        plt = pyplot()

        fig, ax = plt.subplots(figsize=(6, 4))
        widths = np.diff(self.edges)
        ax.bar(self.edges[:-1], self.counts, width=widths, align="edge", edgecolor="k")
        ax.set_ylabel("count")
        ax.set_title(self._title("Federated histogram"))
        save(fig, path)


class Histogram(Algorithm[HistogramParams]):
    name = "histogram"
    summary = "Counts of a numeric column in given bins"
    Params = HistogramParams
    Result = HistogramResult

    def validate(self, params: HistogramParams, schemas: Sequence[DatasetSchema]) -> None:
        require_column(self.name, schemas, params.column, numeric=True)
        check_where(self.name, params, schemas)

    def disclosure(self, params: HistogramParams) -> list[Rule]:
        return [Grid("counts"), Grid("below"), Grid("above")]

    def noise(self, params: HistogramParams, ctx: LocalContext) -> list[DPRule] | None:
        return [Noise(("counts", "below", "above"))]

    def local(self, params: HistogramParams, ctx: LocalContext) -> dict[str, Any]:
        edges = np.asarray(params.bins, dtype=np.float64)
        k = len(edges) - 1
        counts = np.zeros(k, dtype=np.int64)
        below = above = 0
        grid = ctx.grid()
        # batch by batch (``select_batches``): no frame of the whole column is held
        for frame in ctx.data.select_batches([params.column], params.filter):
            column = frame[params.column].dropna()
            values = column.to_numpy(dtype=np.float64)
            # numpy.histogram's bins: [e_i, e_{i+1}), the last one closed; -1 below, k above
            index = np.searchsorted(edges, values, side="right") - 1
            index[values == edges[-1]] = k - 1
            cell = np.asarray(index, dtype=object)
            cell[index < 0] = "below"
            cell[index >= k] = "above"
            grid.add(pd.Series(cell, index=column.index, dtype=object))
            counts += np.bincount(index[(index >= 0) & (index < k)], minlength=k)
            below += int((index < 0).sum())
            above += int((index >= k).sum())
        grid.close()
        return {"counts": [int(c) for c in counts], "below": below, "above": above}

    def aggregate(
        self,
        params: HistogramParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        payloads, suppressed = gated_payloads(outputs)
        counts = [0] * (len(params.bins) - 1)
        for payload in payloads:
            for i, cell in enumerate(payload["counts"]):
                counts[i] += int(cell)
        result = HistogramResult(
            edges=params.bins,
            counts=counts,
            below=sum(int(p["below"]) for p in payloads),
            above=sum(int(p["above"]) for p in payloads),
            suppressed_nodes=suppressed,
            privacy=privacy_of(outputs),
        )
        return Finished(result.model_dump())
