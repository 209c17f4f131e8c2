"""``mean``, ``variance`` and ``summary`` of numeric columns, exact over all datasets.

One implementation, three registered names; each sends only what its result needs. One
round. What leaves a node, for the rows that match ``where``::

    {"rows": R,                                   # rows matching the filter
     "n": {column: non-null count},
     "stats": {column: {"sum": Σx,
                        "m2": Σ(x - local mean)²,       # variance and summary only
                        "min_bound": .., "max_bound": ..}  # summary only
               | None}}                                  # None: the column has n = 0

Gate: ``MinRows("rows")`` withholds the node's whole answer when ``R < min_cell_count``
(zero included), and ``Grid("n")`` withholds it when any column's non-null count is between
1 and ``min_cell_count - 1`` (a sum over two people is their data), so which column was
small is never visible. The node's row-set memory records the rows ``where`` selects and
each column's non-null rows. The aggregate pools the nodes that contributed;
``suppressed_nodes`` counts the nodes that withheld theirs.

Extremes: the exact minimum and maximum are row-level values and are not sent. The node
sends bounds instead: the minimum rounded down and the maximum rounded up to
:data:`BOUND_DIGITS` significant digits (min 23.7 → 23, max 1814 → 1900). A value that
already has no more digits than that (an age of 73) is its own bound, so the bounds are a
coarsening, not a guarantee against disclosure; only ``summary`` sends them.

Pooling uses the parallel formulas of Chan, Golub and LeVeque: with per-node ``n_i``,
``mean_i = sum_i / n_i`` and ``m2_i``, the pooled ``mean = Σ sum_i / Σ n_i`` and
``M2 = Σ (m2_i + n_i (mean_i - mean)²)``; variance is ``M2 / (n - 1)`` (ddof = 1).
Sums use :func:`math.fsum`, so the result equals pandas on the pooled rows to ~1e-15.

dp mode (a node whose policy says ``mode = "dp"``): values are clamped to public bounds
(the ``bounds`` parameter, ``{column: [low, high]}``, else the node policy's) and the node
sends noisy counts, sums and sums of squares instead (:mod:`medfed.algorithms.stats._dp`);
``summary``'s bounds are then the clamp bounds. The result carries ``privacy``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, Field, field_validator

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
from medfed.algorithms.dp import DPResult, DPRule, check_bounds, privacy_of
from medfed.algorithms.stats._common import (
    WhereParams,
    check_where,
    gated_payloads,
    require_column,
)
from medfed.algorithms.stats._dp import moments_local, moments_noise, pool_moments
from medfed.algorithms.stats._sums import pushed_moments
from medfed.algorithms.stats._text import number, text_table
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = [
    "BOUND_DIGITS",
    "Mean",
    "MeanResult",
    "MeanStats",
    "MomentsParams",
    "Summary",
    "SummaryResult",
    "SummaryStats",
    "Variance",
    "VarianceResult",
    "VarianceStats",
    "outward_round",
]

BOUND_DIGITS = 1


def outward_round(value: float, *, up: bool, digits: int = BOUND_DIGITS) -> float:
    """``value`` rounded down (or up) to ``digits`` significant digits, strictly outward.

    A value that is already round moves one step further out, so a bound is never equal
    to a row's value: a bound says only in which step the extreme lies.
    """
    if not math.isfinite(value):
        return value
    if value == 0:
        return 1.0 if up else -1.0
    exact = Decimal(value)
    step = Decimal(1).scaleb(exact.adjusted() - digits + 1)
    rounded = exact.quantize(step, rounding=ROUND_CEILING if up else ROUND_FLOOR)
    if rounded == exact:
        rounded = rounded + step if up else rounded - step
    return float(rounded)  # float() is monotonic, so the bound stays outside the value


class MomentsParams(WhereParams):
    columns: list[str] = Field(min_length=1, max_length=500)
    bounds: dict[str, list[float]] | None = Field(
        default=None,
        description="dp mode only: per column the public [low, high] its values are clamped to",
    )

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, bounds: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        if bounds is None:
            return None
        return {c: list(check_bounds(b, f"bounds of '{c}'")) for c, b in bounds.items()}


class MeanStats(BaseModel):
    """One column: pooled non-null count and mean over the nodes that contributed."""

    n: int
    mean: float | None


class VarianceStats(MeanStats):
    variance: float | None = None
    std: float | None = None


class SummaryStats(VarianceStats):
    min_bound: float | None = None
    max_bound: float | None = None


class MeanResult(DPResult):
    columns: dict[str, MeanStats]
    rows: int
    suppressed_nodes: int

    def summary(self) -> str:
        fields = ("n", "mean", "variance", "std", "min_bound", "max_bound")
        present = [f for f in fields if any(hasattr(c, f) for c in self.columns.values())]
        rows = [
            [name, *(number(getattr(stats, f, None), 10) for f in present)]
            for name, stats in self.columns.items()
        ]
        title = f"Summary over {self.rows} rows"
        if self.suppressed_nodes:
            title += f" ({self.suppressed_nodes} node(s) withheld theirs)"
        return text_table(title, ["column", *present], rows) + self.privacy_note()


class VarianceResult(MeanResult):
    columns: dict[str, VarianceStats]  # type: ignore[assignment]


class SummaryResult(MeanResult):
    columns: dict[str, SummaryStats]  # type: ignore[assignment]


class Mean(Algorithm[MomentsParams]):
    """``mean``; :class:`Variance` and :class:`Summary` send and compute more."""

    name = "mean"
    summary = "Mean of numeric columns"
    Params = MomentsParams
    Result: ClassVar[type[BaseModel]] = MeanResult
    spread: ClassVar[bool] = False
    bounds: ClassVar[bool] = False

    def validate(self, params: MomentsParams, schemas: Sequence[DatasetSchema]) -> None:
        if len(set(params.columns)) != len(params.columns):
            raise BadRequest(f"{self.name}: a column is named twice in columns")
        for column in params.columns:
            require_column(self.name, schemas, column, numeric=True)
        check_where(self.name, params, schemas)

    def disclosure(self, params: MomentsParams) -> list[Rule]:
        return [MinRows("rows"), Grid("n")]

    def noise(self, params: MomentsParams, ctx: LocalContext) -> list[DPRule] | None:
        assert ctx.dp is not None
        return moments_noise(
            ctx.dp, params.columns, params.bounds, spread=self.spread, with_bounds=self.bounds
        )

    def local(self, params: MomentsParams, ctx: LocalContext) -> dict[str, Any]:
        if ctx.dp is not None:
            return moments_local(
                ctx.data.select(params.columns, params.filter),
                ctx.dp,
                params.columns,
                params.bounds,
                spread=self.spread,
                with_bounds=self.bounds,
            )
        rows, counts, sums = pushed_moments(
            ctx, params.columns, params.filter, spread=self.spread, bounds=self.bounds
        )
        stats: dict[str, dict[str, float] | None] = {}
        for column, found in sums.items():
            if found is None:
                stats[column] = None
                continue
            out = {"sum": found["sum"]}
            if self.spread:
                out["m2"] = found["m2"]
            if self.bounds:
                out["min_bound"] = outward_round(found["min"], up=False)
                out["max_bound"] = outward_round(found["max"], up=True)
            stats[column] = out
        return {"rows": rows, "n": counts, "stats": stats}

    def aggregate(
        self,
        params: MomentsParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        payloads, suppressed = gated_payloads(outputs)
        privacy = privacy_of(outputs)
        if privacy is not None:  # some node answered with noise: pool sums (stats._dp)
            pooled, rows = pool_moments(params.columns, payloads)
            result = {"columns": pooled, "rows": rows, "suppressed_nodes": suppressed}
            result["privacy"] = privacy
            return Finished(self.Result.model_validate(result).model_dump())
        columns = {c: _pool(c, payloads) for c in params.columns}
        rows = sum(int(p["rows"]) for p in payloads)
        result = {"columns": columns, "rows": rows, "suppressed_nodes": suppressed}
        return Finished(self.Result.model_validate(result).model_dump())


def _pool(column: str, payloads: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Chan et al.'s pooled n, mean, variance (ddof=1), std and bounds of one column."""
    parts: list[dict[str, float]] = []
    counts: list[int] = []
    for payload in payloads:
        n = int(payload["n"][column])
        if n > 0:
            counts.append(n)
            parts.append(payload["stats"][column])
    total = sum(counts)
    out: dict[str, Any] = {"n": total}
    if total == 0:
        return out | {"mean": None, "variance": None, "std": None}
    mean = math.fsum(p["sum"] for p in parts) / total
    out["mean"] = mean
    if "m2" in parts[0]:
        m2 = math.fsum(
            p["m2"] + n * (p["sum"] / n - mean) ** 2 for p, n in zip(parts, counts, strict=True)
        )
        variance = m2 / (total - 1) if total > 1 else None
        out["variance"] = variance
        out["std"] = math.sqrt(variance) if variance is not None else None
    if "min_bound" in parts[0]:
        out["min_bound"] = min(p["min_bound"] for p in parts)
        out["max_bound"] = max(p["max_bound"] for p in parts)
    return out


class Variance(Mean):
    name = "variance"
    summary = "Mean and variance (ddof=1) of numeric columns"
    Result = VarianceResult
    spread = True


class Summary(Mean):
    name = "summary"
    summary = "Count, mean, variance and outward-rounded bounds of numeric columns"
    Result = SummaryResult
    spread = True
    bounds = True
