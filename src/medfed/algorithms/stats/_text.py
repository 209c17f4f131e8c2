"""Plain-text tables for result summaries (statsmodels-like), shared by every statistic."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["number", "text_table"]


def number(value: float | int | None, digits: int = 6) -> str:
    """A figure for a summary table: ``-`` for a missing one, ``digits`` significant digits."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def text_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table with a title line and ``=``/``-`` rules, like statsmodels'."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    rule = max(len(title), max(len(line) for line in lines))
    return "\n".join([title, "=" * rule, lines[0], "-" * rule, *lines[1:], "=" * rule])
