"""``crosstab``: a contingency table of two columns, over all datasets.

Levels travel as strings (``"II"``, ``"1"``, ``"2.5"``, ``"true"``, ``"2020-01-31"``);
rows where either column is null are left out.

What leaves a node per round (one round)::

    {"row_levels": [...], "col_levels": [...], "table": [[count, ...], ...],
     "hidden_cells": h}

- With ``row_levels`` and ``col_levels`` given, the node reports the full grid of those
  levels, zeros included; rows whose levels are not listed are left out.
- A dimension whose levels are not given is reported only with the levels that occur in
  at least one pair with ``count >= min_cell_count``, so a rare level is not even named.
  ``hidden_cells`` says how many non-empty pairs fell outside the reported grid.

Gate: ``Cells("table")`` — each cell with ``0 < count < min_cell_count`` becomes ``None``.
The aggregate sums the grids over the union of levels and marks a cell ``incomplete``
where a node suppressed it, or left it out of its grid while hiding cells.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime
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
from medfed.algorithms.stats._common import (
    WhereParams,
    check_where,
    gated_payloads,
    require_column,
)
from medfed.algorithms.stats._text import text_table
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["Crosstab", "CrosstabParams", "CrosstabResult", "level_name", "level_order"]

MAX_LEVELS = 1000


def level_name(value: Any) -> str:
    """A cell value as a level: ``True`` → ``"true"``, ``2.0`` → ``"2"``, dates as ISO."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else str(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def level_order(level: str) -> tuple[int, float, str]:
    """Sort key: numeric levels by value first, then the others alphabetically."""
    try:
        number = float(level)
    except ValueError:
        return (1, 0.0, level)
    return (0, number, level) if math.isfinite(number) else (1, 0.0, level)


class CrosstabParams(WhereParams):
    row: str = Field(min_length=1)
    col: str = Field(min_length=1)
    row_levels: list[str] | None = Field(default=None, min_length=1, max_length=MAX_LEVELS)
    col_levels: list[str] | None = Field(default=None, min_length=1, max_length=MAX_LEVELS)

    @field_validator("row_levels", "col_levels", mode="before")
    @classmethod
    def _levels(cls, raw: Any) -> Any:
        if not isinstance(raw, list):
            return raw
        levels = [v if isinstance(v, str) else level_name(v) for v in raw]
        if len(set(levels)) != len(levels):
            raise ValueError("a level is listed twice")
        return levels


class CrosstabResult(BaseModel):
    row_levels: list[str]
    col_levels: list[str]
    table: list[list[int]]
    incomplete: list[list[bool]]
    hidden_cells: int
    suppressed_nodes: int

    def summary(self) -> str:
        rows = [
            [level, *(f"{c}{'*' if gap else ''}" for c, gap in zip(cells, gaps, strict=False))]
            for level, cells, gaps in zip(
                self.row_levels, self.table, self.incomplete, strict=False
            )
        ]
        title = "Crosstab (* suppressed at some node)"
        return text_table(title, ["", *self.col_levels], rows)


class Crosstab(Algorithm[CrosstabParams]):
    name = "crosstab"
    summary = "Contingency table of two columns"
    Params = CrosstabParams
    Result = CrosstabResult

    def validate(self, params: CrosstabParams, schemas: Sequence[DatasetSchema]) -> None:
        if params.row == params.col:
            raise BadRequest(f"crosstab: row and col are the same column '{params.row}'")
        require_column(self.name, schemas, params.row)
        require_column(self.name, schemas, params.col)
        check_where(self.name, params, schemas)

    def disclosure(self, params: CrosstabParams) -> list[Rule]:
        return [Cells("table")]

    def local(self, params: CrosstabParams, ctx: LocalContext) -> dict[str, Any]:
        frame = ctx.data.select([params.row, params.col], params.filter).dropna()
        rows = [level_name(v) for v in frame[params.row]]
        cols = [level_name(v) for v in frame[params.col]]
        pairs = Counter(zip(rows, cols, strict=True))
        wanted_rows = set(params.row_levels or rows)
        wanted_cols = set(params.col_levels or cols)
        frequent = [
            (r, c)
            for (r, c), n in pairs.items()
            if n >= ctx.min_cell_count and r in wanted_rows and c in wanted_cols
        ]
        row_levels = params.row_levels or sorted({r for r, _ in frequent}, key=level_order)
        col_levels = params.col_levels or sorted({c for _, c in frequent}, key=level_order)
        table = [[pairs.get((r, c), 0) for c in col_levels] for r in row_levels]
        shown_rows, shown_cols = set(row_levels), set(col_levels)
        hidden = sum(1 for r, c in pairs if r not in shown_rows or c not in shown_cols)
        return {
            "row_levels": row_levels,
            "col_levels": col_levels,
            "table": table,
            "hidden_cells": hidden,
        }

    def aggregate(
        self,
        params: CrosstabParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        payloads, suppressed = gated_payloads(outputs)
        row_levels = params.row_levels or sorted(
            {r for p in payloads for r in p["row_levels"]}, key=level_order
        )
        col_levels = params.col_levels or sorted(
            {c for p in payloads for c in p["col_levels"]}, key=level_order
        )
        table = [[0] * len(col_levels) for _ in row_levels]
        incomplete = [[suppressed > 0] * len(col_levels) for _ in row_levels]
        for payload in payloads:
            cells: dict[tuple[str, str], int | None] = {
                (r, c): payload["table"][i][j]
                for i, r in enumerate(payload["row_levels"])
                for j, c in enumerate(payload["col_levels"])
            }
            hides = int(payload["hidden_cells"]) > 0
            for i, r in enumerate(row_levels):
                for j, c in enumerate(col_levels):
                    if (r, c) not in cells:
                        incomplete[i][j] = incomplete[i][j] or hides
                        continue
                    cell = cells[(r, c)]
                    if cell is None:
                        incomplete[i][j] = True
                    else:
                        table[i][j] += int(cell)
        result = CrosstabResult(
            row_levels=row_levels,
            col_levels=col_levels,
            table=table,
            incomplete=incomplete,
            hidden_cells=sum(int(p["hidden_cells"]) for p in payloads),
            suppressed_nodes=suppressed,
        )
        return Finished(result.model_dump())
