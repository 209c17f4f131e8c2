"""``histogram``: counts of a numeric column in fixed bins, over all datasets.

The researcher gives the bin edges (strictly increasing, at least two), so no node reveals
its own range. Bins follow :func:`numpy.histogram`: ``[e0, e1), [e1, e2), …, [e_{k-1}, e_k]``
— the last bin is closed. Values below the first edge or above the last are counted in
``below`` and ``above``; nulls are left out.

What leaves a node per round (one round)::

    {"counts": [c_1, …, c_k], "below": b, "above": a}

Gate: ``Cells("counts")``, ``Cells("below")`` and ``Cells("above")`` — each count with
``0 < c < min_cell_count`` becomes ``None``. The result sums what the nodes sent and marks
a cell ``incomplete`` where some node suppressed it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, field_validator

from medfed.algorithms.base import (
    Algorithm,
    Cells,
    Finished,
    LocalContext,
    NextRound,
    NodeOutput,
    Rule,
)
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


class HistogramResult(BaseModel):
    edges: list[float]
    counts: list[int]
    incomplete: list[bool]
    below: int
    above: int
    below_incomplete: bool
    above_incomplete: bool
    suppressed_nodes: int

    def summary(self) -> str:
        rows = [
            (f"[{lo:g}, {hi:g})", count, "yes" if gap else "")
            for lo, hi, count, gap in zip(
                self.edges, self.edges[1:], self.counts, self.incomplete, strict=False
            )
        ]
        rows += [("below", self.below, "yes" if self.below_incomplete else "")]
        rows += [("above", self.above, "yes" if self.above_incomplete else "")]
        return text_table("Histogram", ["bin", "count", "suppressed somewhere"], rows)

    def plot(self, path: str) -> None:
        """Bars per bin; a bin where some node suppressed its count is hatched."""
        plt = pyplot()

        fig, ax = plt.subplots(figsize=(6, 4))
        widths = np.diff(self.edges)
        bars = ax.bar(self.edges[:-1], self.counts, width=widths, align="edge", edgecolor="k")
        for bar, gap in zip(bars, self.incomplete, strict=False):
            if gap:
                bar.set_hatch("//")
        ax.set_ylabel("count")
        ax.set_title("Federated histogram (hatched: suppressed at some node)")
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
        return [Cells("counts"), Cells("below"), Cells("above")]

    def local(self, params: HistogramParams, ctx: LocalContext) -> dict[str, Any]:
        frame = ctx.data.select([params.column], params.filter)
        values = frame[params.column].dropna().to_numpy(dtype=np.float64)
        edges = np.asarray(params.bins, dtype=np.float64)
        counts, _ = np.histogram(values, bins=edges)
        return {
            "counts": [int(c) for c in counts],
            "below": int((values < edges[0]).sum()),
            "above": int((values > edges[-1]).sum()),
        }

    def aggregate(
        self,
        params: HistogramParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        payloads, suppressed = gated_payloads(outputs)
        k = len(params.bins) - 1
        counts = [0] * k
        incomplete = [suppressed > 0] * k
        for payload in payloads:
            for i, cell in enumerate(payload["counts"]):
                if cell is None:
                    incomplete[i] = True
                else:
                    counts[i] += int(cell)
        below = [p["below"] for p in payloads]
        above = [p["above"] for p in payloads]
        result = HistogramResult(
            edges=params.bins,
            counts=counts,
            incomplete=incomplete,
            below=sum(int(b) for b in below if b is not None),
            above=sum(int(a) for a in above if a is not None),
            below_incomplete=suppressed > 0 or None in below,
            above_incomplete=suppressed > 0 or None in above,
            suppressed_nodes=suppressed,
        )
        return Finished(result.model_dump())
