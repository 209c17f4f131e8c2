"""``crosstab``: a contingency table of two columns, over all datasets.

Levels travel as strings (``"II"``, ``"1"``, ``"2.5"``, ``"true"``, ``"2020-01-31"``);
rows where either column is null are left out.

What leaves a node per round (one round)::

    {"row_levels": [...], "col_levels": [...], "table": [[count, ...], ...]}

- With ``row_levels`` and ``col_levels`` given, the node reports the full grid of those
  levels, zeros included; rows whose levels are not listed are left out.
- A dimension whose levels are not given is reported with every level that occurs here.

Gate: ``Grid("table")`` — when any cell is between 1 and ``min_cell_count - 1`` the node
withholds the whole table, so which cell was small is never visible; the node's row-set
memory records the cells (a later table or filter that splits one into a part of 1..k-1
rows is withheld too). The aggregate sums the grids of the nodes that contributed over
the union of levels; ``suppressed_nodes`` counts the nodes that withheld theirs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, Field, field_validator

from medfed.algorithms.base import (
    Algorithm,
    Finished,
    Grid,
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

__all__ = [
    "Crosstab",
    "CrosstabParams",
    "CrosstabResult",
    "level_name",
    "level_names",
    "level_order",
]

MAX_LEVELS = 1000


def level_names(values: pd.Series) -> NDArray[np.object_]:
    """Each value as a level name (:func:`level_name`), computed once per distinct value."""
    names = {v: level_name(v) for v in pd.unique(values)}
    return np.asarray([names[v] for v in values], dtype=object)


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
    suppressed_nodes: int

    def summary(self) -> str:
        rows = [[level, *cells] for level, cells in zip(self.row_levels, self.table, strict=False)]
        title = "Crosstab"
        if self.suppressed_nodes:
            title += f" ({self.suppressed_nodes} node(s) withheld theirs)"
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
        return [Grid("table")]

    def local(self, params: CrosstabParams, ctx: LocalContext) -> dict[str, Any]:
        # a free dimension names only levels that occur inside the table (never a level
        # that only rows outside the other dimension's listed levels have)
        wanted_rows = set(params.row_levels) if params.row_levels else None
        wanted_cols = set(params.col_levels) if params.col_levels else None
        pairs: Counter[tuple[str, str]] = Counter()
        grid = ctx.grid()
        # batch by batch (``select_batches``): the cells are the pairs inside the table
        # (both levels listed, or free), which are the cells of the levels it names
        for frame in ctx.data.select_batches([params.row, params.col], params.filter):
            frame = frame.dropna()
            rows = level_names(frame[params.row])
            cols = level_names(frame[params.col])
            cells = [
                (r, c)
                if (wanted_rows is None or r in wanted_rows)
                and (wanted_cols is None or c in wanted_cols)
                else None
                for r, c in zip(rows, cols, strict=True)
            ]
            grid.add(pd.Series(cells, index=frame.index, dtype=object))
            pairs.update(cell for cell in cells if cell is not None)
        grid.close()
        row_levels = params.row_levels or sorted({r for r, _ in pairs}, key=level_order)
        col_levels = params.col_levels or sorted({c for _, c in pairs}, key=level_order)
        table = [[pairs.get((r, c), 0) for c in col_levels] for r in row_levels]
        return {"row_levels": row_levels, "col_levels": col_levels, "table": table}

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
        for payload in payloads:
            cells: dict[tuple[str, str], int] = {
                (r, c): int(payload["table"][i][j])
                for i, r in enumerate(payload["row_levels"])
                for j, c in enumerate(payload["col_levels"])
            }
            for i, r in enumerate(row_levels):
                for j, c in enumerate(col_levels):
                    table[i][j] += cells.get((r, c), 0)
        result = CrosstabResult(
            row_levels=row_levels,
            col_levels=col_levels,
            table=table,
            suppressed_nodes=suppressed,
        )
        return Finished(result.model_dump())
