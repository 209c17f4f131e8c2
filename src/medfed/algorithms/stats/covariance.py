"""``covariance`` and ``correlation`` matrices of numeric columns, exact over all datasets.

Two registered names, one local step. Rows are those matching ``where``; by default only
complete cases (no null in any of ``columns``) are used, as ``df.dropna().cov()``; with
``pairwise = true`` each pair of columns uses the rows where both are non-null, as pandas'
``DataFrame.cov()`` / ``.corr()`` do on data with gaps (the diagonal uses each column's
non-null rows).

What leaves a node (one round), for each pair ``a ≤ b`` of columns (the diagonal too), over
that pair's rows::

    {"rows": R,                        # complete cases, or rows matching where (pairwise)
     "n": [n_ab, ...],                 # rows behind each pair
     "pairs": [{"sum_a": Σa, "sum_b": Σb,
                "m2_a": Σ(a - ā)², "m2_b": Σ(b - b̄)²,
                "cross": Σ(a - ā)(b - b̄)} | None, ...]}   # about the node's own means;
                                                         # None: the pair has n = 0

Gate: ``MinRows("rows")`` withholds the node's whole answer when ``R < k`` (zero
included), and ``Grid("n")`` withholds it when any pair count is between 1 and ``k - 1``
(a sum over fewer than ``k`` people is their data), so which pair was small is never
visible. The node's row-set memory records the rows ``where`` selects and each column's
non-null rows (a pair's rows are an intersection of those). The aggregate pools the nodes
that contributed; ``suppressed_nodes`` counts the nodes that withheld theirs.

Pooling is exact (Chan, Golub and LeVeque): with pooled means ``ā``, ``b̄``, the pooled
``cross = Σ (cross_i + n_i (ā_i - ā)(b̄_i - b̄))``; covariance is ``cross / (n - 1)``
and correlation ``cross / sqrt(m2_a m2_b)`` over the pair's rows. Sums use
:func:`math.fsum`; the result equals pandas on the pooled rows to about 1e-14.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
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
from medfed.algorithms.stats._batch_moments import Figures
from medfed.algorithms.stats._common import (
    WhereParams,
    check_where,
    gated_payloads,
    require_column,
)
from medfed.algorithms.stats._tests_common import number, text_table
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["Correlation", "Covariance", "CovarianceParams", "MatrixResult"]


class CovarianceParams(WhereParams):
    columns: list[str] = Field(min_length=2, max_length=100)
    pairwise: bool = False


class MatrixResult(BaseModel):
    """A symmetric matrix over ``columns``; ``None`` where fewer than two rows were pooled."""

    kind: str
    columns: list[str]
    matrix: list[list[float | None]]
    n: list[list[int]]
    pairwise: bool
    suppressed_nodes: int

    def summary(self) -> str:
        width = max(len(c) for c in self.columns)
        rows = [
            [name.ljust(width), *(number(v) for v in values)]
            for name, values in zip(self.columns, self.matrix, strict=True)
        ]
        rows_used = sorted({n for row in self.n for n in row})
        used = str(rows_used[0]) if len(rows_used) == 1 else f"{rows_used[0]}-{rows_used[-1]}"
        mode = "pairwise" if self.pairwise else "complete cases"
        title = f"{self.kind.capitalize()} matrix ({mode}, n = {used})"
        if self.suppressed_nodes:
            title += f" ({self.suppressed_nodes} node(s) withheld theirs)"
        return text_table(title, ["", *self.columns], rows)

    def plot(self, path: str) -> None:
        plt = pyplot()

        values = np.array([[np.nan if v is None else v for v in r] for r in self.matrix])
        size = 1.0 + 0.6 * len(self.columns)
        fig, ax = plt.subplots(figsize=(size + 1.5, size))
        limit = 1.0 if self.kind == "correlation" else float(np.nanmax(np.abs(values)) or 1.0)
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks(range(len(self.columns)), self.columns, rotation=45, ha="right")
        ax.set_yticks(range(len(self.columns)), self.columns)
        fig.colorbar(image, ax=ax)
        ax.set_title(self.kind.capitalize())
        save(fig, path)


def _pairs(p: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(p) for b in range(a, p)]


@dataclass
class _Pair:
    """One pair's sums over its rows, in two passes over the batches: ``n`` and the sums
    (first), then the squared and crossed deviations from the pair's means (second), each
    with the dominance figures of its terms (of the sums ``|a|`` and ``|b|``, of the m2s
    ``(a - ā)²`` and ``(b - b̄)²``, of the cross ``|(a - ā)(b - b̄)|``)."""

    n: int = 0
    sums: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    spreads: tuple[list[float], list[float], list[float]] = field(
        default_factory=lambda: ([], [], [])
    )
    figures: list[Figures] = field(default_factory=lambda: [Figures() for _ in range(5)])

    def means(self) -> tuple[float, float]:
        return math.fsum(self.sums[0]) / self.n, math.fsum(self.sums[1]) / self.n

    def add(self, a: np.ndarray, b: np.ndarray, *, second: bool) -> None:
        if not len(a):
            return
        if not second:
            self.n += len(a)
            for side, values, figures in ((0, a, self.figures[0]), (1, b, self.figures[2])):
                self.sums[side].append(math.fsum(values))
                figures.add(values)
            return
        mean_a, mean_b = self.means()
        da, db = a - mean_a, b - mean_b
        for i, (terms, figures) in enumerate(
            ((da * da, self.figures[1]), (db * db, self.figures[3]), (da * db, self.figures[4]))
        ):
            self.spreads[i].append(math.fsum(terms))
            figures.add(terms)

    def declare(self, ctx: LocalContext, label: str) -> None:
        for name, figures in zip(
            (".a.sum", ".a.m2", ".b.sum", ".b.m2", ".cross"), self.figures, strict=True
        ):
            ctx.magnitude(label + name, figures.magnitude())

    def message(self) -> dict[str, float]:
        return {
            "sum_a": math.fsum(self.sums[0]),
            "sum_b": math.fsum(self.sums[1]),
            "m2_a": math.fsum(self.spreads[0]),
            "m2_b": math.fsum(self.spreads[1]),
            "cross": math.fsum(self.spreads[2]),
        }


def _pool_pair(parts: Sequence[tuple[int, dict[str, float]]]) -> tuple[int, float, float, float]:
    """Pooled ``(n, cross, m2_a, m2_b)`` of one pair over the nodes that sent it."""
    total = sum(n for n, _ in parts)
    if total == 0:
        return 0, math.nan, math.nan, math.nan
    mean_a = math.fsum(s["sum_a"] for _, s in parts) / total
    mean_b = math.fsum(s["sum_b"] for _, s in parts) / total
    terms = [(n, s, s["sum_a"] / n - mean_a, s["sum_b"] / n - mean_b) for n, s in parts]
    cross = math.fsum(s["cross"] + n * da * db for n, s, da, db in terms)
    m2_a = math.fsum(s["m2_a"] + n * da * da for n, s, da, _ in terms)
    m2_b = math.fsum(s["m2_b"] + n * db * db for n, s, _, db in terms)
    return total, cross, m2_a, m2_b


class Covariance(Algorithm[CovarianceParams]):
    """``covariance``; :class:`Correlation` pools the same sums into correlations."""

    name = "covariance"
    summary = "Covariance matrix (ddof=1) of numeric columns"
    Params = CovarianceParams
    Result = MatrixResult
    kind: ClassVar[str] = "covariance"

    def validate(self, params: CovarianceParams, schemas: Sequence[DatasetSchema]) -> None:
        if len(set(params.columns)) != len(params.columns):
            raise BadRequest(f"{self.name}: a column is named twice in columns")
        for column in params.columns:
            require_column(self.name, schemas, column, numeric=True)
        check_where(self.name, params, schemas)

    def disclosure(self, params: CovarianceParams) -> list[Rule]:
        return [MinRows("rows"), Grid("n")]

    def local(self, params: CovarianceParams, ctx: LocalContext) -> dict[str, Any]:
        pairs = [_Pair() for _ in _pairs(len(params.columns))]
        rows = 0
        # two passes over ``select_batches`` (the same row sets, recorded once): the
        # counts and sums, then the deviations from each pair's means
        for second in (False, True):
            for frame in ctx.data.select_batches(params.columns, params.filter):
                if not params.pairwise:
                    frame = frame.dropna()
                rows += 0 if second else len(frame)
                values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
                for pair, (a, b) in zip(pairs, _pairs(len(params.columns)), strict=True):
                    both = ~np.isnan(values[:, a]) & ~np.isnan(values[:, b])
                    pair.add(values[both, a], values[both, b], second=second)
        out: list[dict[str, float] | None] = []
        for pair, (a, b) in zip(pairs, _pairs(len(params.columns)), strict=True):
            if pair.n:
                pair.declare(ctx, f"{a}-{b}")
            out.append(pair.message() if pair.n else None)
        return {"rows": rows, "n": [pair.n for pair in pairs], "pairs": out}

    def aggregate(
        self,
        params: CovarianceParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        payloads, suppressed = gated_payloads(outputs)
        p = len(params.columns)
        matrix: list[list[float | None]] = [[None] * p for _ in range(p)]
        counts = [[0] * p for _ in range(p)]
        for i, (a, b) in enumerate(_pairs(p)):
            parts = [
                (int(payload["n"][i]), payload["pairs"][i])
                for payload in payloads
                if int(payload["n"][i]) > 0
            ]
            total, cross, m2_a, m2_b = _pool_pair(parts)
            value = self._value(total, cross, m2_a, m2_b, diagonal=a == b)
            for r, c in {(a, b), (b, a)}:
                matrix[r][c], counts[r][c] = value, total
        result = MatrixResult(
            kind=self.kind,
            columns=params.columns,
            matrix=matrix,
            n=counts,
            pairwise=params.pairwise,
            suppressed_nodes=suppressed,
        )
        return Finished(result.model_dump())

    def _value(
        self, n: int, cross: float, m2_a: float, m2_b: float, *, diagonal: bool
    ) -> float | None:
        return cross / (n - 1) if n > 1 else None


class Correlation(Covariance):
    name = "correlation"
    summary = "Pearson correlation matrix of numeric columns"
    kind = "correlation"

    def _value(
        self, n: int, cross: float, m2_a: float, m2_b: float, *, diagonal: bool
    ) -> float | None:
        divisor = math.sqrt(m2_a * m2_b) if n > 1 else 0.0
        if not divisor > 0:
            return None
        return 1.0 if diagonal else cross / divisor
