"""``chisq``: Pearson's chi-square test of independence of two categorical columns.

Built on ``crosstab``: the same local step builds the node's contingency table, the hub
pools the tables of the contributing nodes exactly and runs
:func:`scipy.stats.chi2_contingency` on the pooled table, so with no node withheld the
statistic, p value, degrees of freedom and expected counts equal
``chi2_contingency(pd.crosstab(df[row], df[col]))`` on the pooled rows. ``correction``
(default ``true``, as scipy) applies Yates' continuity correction when the table has one
degree of freedom. ``row_levels`` / ``col_levels`` restrict the table to those levels.

What leaves a node (one round), as ``crosstab`` plus the table's total::

    {"row_levels": [...], "col_levels": [...], "table": [[count, ...], ...], "rows": R}

A dimension whose levels are not given names every level that occurs in the table's rows
(rows with both columns non-null, within the other dimension's given levels); a given
dimension is reported in full, zeros included. Nothing else leaves.

Gate: a node with ``0 < R < min_rows`` (rows with both columns non-null, within the given
levels) refuses — rule ``min_rows``, a test on too few rows. ``Grid("table")`` withholds
the node's whole table when any cell is between 1 and ``min_cell_count - 1``, so which
cell was small is never visible; the crosstab step declares each used row's cell to the
node's row-set memory. The aggregate pools the tables of the nodes that contributed
(``suppressed_nodes`` counts those that withheld theirs); when none did, the task fails
with :class:`~medfed.common.errors.BadRequest` naming rule ``min_cell_count`` — merge rare
levels (or leave them out with ``where``) and run it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from medfed.algorithms.base import (
    Algorithm,
    Finished,
    Grid,
    LocalContext,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.stats._common import gated_payloads
from medfed.algorithms.stats._tests_common import number, require_min_rows, text_table
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
    suppressed_nodes: int = 0

    def summary(self) -> str:
        width = max(len(c) for c in self.col_levels)
        rows = [
            (level, *(f"{o} ({number(e, 4)})".rjust(width) for o, e in zip(obs, exp, strict=True)))
            for level, obs, exp in zip(self.row_levels, self.observed, self.expected, strict=True)
        ]
        title = f"{self.row} by {self.col}: observed (expected), n = {self.n}"
        if self.suppressed_nodes:
            title += f" ({self.suppressed_nodes} node(s) withheld theirs)"
        table = text_table(title, [self.row, *self.col_levels], rows)
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
        return [Grid("table")]

    def local(self, params: ChiSquareParams, ctx: LocalContext) -> dict[str, Any]:
        output = _CROSSTAB.local(params, ctx)
        table: list[list[int]] = output["table"]
        # with one dimension's levels given, crosstab names every level of the other that
        # occurs among all the rows; only those with rows in the table are part of the test
        keep_rows = [
            i for i, cells in enumerate(table) if params.row_levels is not None or any(cells)
        ]
        keep_cols = [
            j
            for j in range(len(output["col_levels"]))
            if params.col_levels is not None or any(cells[j] for cells in table)
        ]
        rows = sum(sum(cells) for cells in table)
        require_min_rows(self.name, rows, ctx)
        return {
            "row_levels": [output["row_levels"][i] for i in keep_rows],
            "col_levels": [output["col_levels"][j] for j in keep_cols],
            "table": [[table[i][j] for j in keep_cols] for i in keep_rows],
            "rows": rows,
        }

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
        if outputs and not gated_payloads(outputs)[0]:
            raise BadRequest(
                f"chisq: gate: min_cell_count: all {pooled.suppressed_nodes} node(s) withheld "
                "their table (a node withholds a table whole when a cell is under its "
                "threshold); merge rare levels or leave them out with where"
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
            suppressed_nodes=pooled.suppressed_nodes,
        )
        return Finished(result.model_dump())
