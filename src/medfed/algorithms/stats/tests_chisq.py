"""``chisq``: Pearson's chi-square test of independence of two categorical columns.

Built on ``crosstab``: the same local step builds the node's contingency table, the hub
pools the tables exactly and runs :func:`scipy.stats.chi2_contingency` on the pooled
table, so the statistic, p value, degrees of freedom and expected counts equal
``chi2_contingency(pd.crosstab(df[row], df[col]))`` on the pooled rows. ``correction``
(default ``true``, as scipy) applies Yates' continuity correction when the table has one
degree of freedom. ``row_levels`` / ``col_levels`` restrict the table to those levels.

What leaves a node (one round), as ``crosstab``::

    {"row_levels": [...], "col_levels": [...], "table": [[count, ...], ...],
     "hidden_cells": h, "rows": R}

Gate: a node with ``0 < R < min_rows`` (rows with both columns non-null, within the given
levels) refuses — rule ``min_rows``, a test on too few rows. ``Cells("table")`` turns each
cell ``0 < count < k`` into ``None``; without levels a node names only levels that occur in
a cell of at least ``k`` and counts the others in ``hidden_cells``. A suppressed cell or a
hidden one means the pooled table would be wrong, so the aggregate fails the task with a
:class:`~medfed.common.errors.BadRequest` naming rule ``min_cell_count`` — merge rare
levels (or filter them out with ``where``) and run it again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from medfed.algorithms.base import (
    Algorithm,
    Cells,
    Finished,
    LocalContext,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.stats._tests_common import levels_of, number, require_min_rows, text_table
from medfed.algorithms.stats.crosstab import Crosstab, CrosstabParams, CrosstabResult
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["ChiSquare", "ChiSquareParams", "ChiSquareResult"]

_CROSSTAB = Crosstab()


class ChiSquareParams(CrosstabParams):
    correction: bool = True


class ChiSquareResult(BaseModel):
    row: str
    col: str
    row_levels: list[str]
    col_levels: list[str]
    observed: list[list[int]]
    expected: list[list[float]]
    statistic: float
    pvalue: float
    dof: int
    correction: bool
    n: int

    def summary(self) -> str:
        width = max(len(c) for c in self.col_levels)
        rows = [
            (level, *(f"{o} ({number(e, 4)})".rjust(width) for o, e in zip(obs, exp, strict=True)))
            for level, obs, exp in zip(self.row_levels, self.observed, self.expected, strict=True)
        ]
        table = text_table(
            f"{self.row} by {self.col}: observed (expected), n = {self.n}",
            [self.row, *self.col_levels],
            rows,
        )
        corrected = "Yates-corrected " if self.correction and self.dof == 1 else ""
        test = text_table(
            f"Pearson {corrected}chi-square test of independence",
            ["chi2", "dof", "p value"],
            [(number(self.statistic), self.dof, number(self.pvalue))],
        )
        return f"{table}\n{test}"


class ChiSquare(Algorithm[ChiSquareParams]):
    name = "chisq"
    summary = "Chi-square test of independence of two categorical columns"
    Params = ChiSquareParams
    Result = ChiSquareResult

    def validate(self, params: ChiSquareParams, schemas: Sequence[DatasetSchema]) -> None:
        try:
            _CROSSTAB.validate(params, schemas)
        except BadRequest as exc:
            raise BadRequest(exc.message.replace("crosstab:", "chisq:", 1)) from None

    def disclosure(self, params: ChiSquareParams) -> list[Rule]:
        return [Cells("table")]

    def local(self, params: ChiSquareParams, ctx: LocalContext) -> dict[str, Any]:
        frame = ctx.data.select([params.row, params.col], params.filter).dropna()
        pairs = Counter(
            zip(levels_of(frame[params.row]), levels_of(frame[params.col]), strict=True)
        )
        wanted = {
            (r, c): n
            for (r, c), n in pairs.items()
            if (params.row_levels is None or r in params.row_levels)
            and (params.col_levels is None or c in params.col_levels)
        }
        rows = sum(wanted.values())
        require_min_rows(self.name, rows, ctx)
        output = _CROSSTAB.local(params, ctx)
        shown_rows, shown_cols = set(output["row_levels"]), set(output["col_levels"])
        # crosstab counts pairs outside listed levels as hidden too; here only rare ones count
        output["hidden_cells"] = sum(
            1 for r, c in wanted if r not in shown_rows or c not in shown_cols
        )
        return output | {"rows": rows}

    def aggregate(
        self,
        params: ChiSquareParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        step = _CROSSTAB.aggregate(params, round, state, outputs)
        if not isinstance(step, Finished):
            raise BadRequest("chisq: crosstab asked for another round")
        pooled = CrosstabResult.model_validate(step.result)
        rule = "chisq: gate: min_cell_count"
        if pooled.suppressed_nodes:
            raise BadRequest(f"{rule}: {pooled.suppressed_nodes} node(s) suppressed their table")
        if any(map(any, pooled.incomplete)) or pooled.hidden_cells:
            raise BadRequest(
                f"{rule}: a node holds a cell with fewer rows than its threshold, so its "
                "count was withheld and the pooled table would be wrong; merge rare levels "
                "or leave them out with where"
            )
        observed = np.asarray(pooled.table, dtype=np.int64)
        if observed.size == 0 or observed.sum() == 0:
            raise BadRequest("chisq: the pooled table is empty")
        if (observed.sum(axis=0) == 0).any() or (observed.sum(axis=1) == 0).any():
            raise BadRequest("chisq: a level has no rows in the pooled table; leave it out")
        from scipy.stats import chi2_contingency  # ~1 s to import: loaded where used

        test = chi2_contingency(observed, correction=params.correction)
        result = ChiSquareResult(
            row=params.row,
            col=params.col,
            row_levels=pooled.row_levels,
            col_levels=pooled.col_levels,
            observed=pooled.table,
            expected=np.asarray(test.expected_freq, dtype=float).tolist(),
            statistic=float(test.statistic),
            pvalue=float(test.pvalue),
            dof=int(test.dof),
            correction=params.correction,
            n=int(observed.sum()),
        )
        return Finished(result.model_dump())
