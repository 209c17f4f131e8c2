"""Moments of numeric columns pushed down to DuckDB: counts, sums, spreads, no frame.

How it runs: :func:`pushed_moments` asks the node's table (``ctx.data.aggregate``) for one
row of SQL aggregates over the rows ``where`` selects — the row count and, per column, its
non-missing count, ``fsum`` of its values, their minimum and maximum (``summary``) and the
three figures of the dominance rules (:func:`~medfed.node.gate.dominance.magnitude_sql`:
total and two largest absolute values) — then, for ``variance`` and ``summary``, a second
row with ``Σ(x - local mean)²`` and its figures. The column values never reach Python; the
node's row-set memory records the same row sets as ``select(columns, where)`` (the
``columns`` argument). A column's values are the ones pandas saw (``NaN`` missing,
:mod:`medfed.common.sqlvalues`); ``fsum`` is DuckDB's compensated sum, within a few units
in the last place of :func:`math.fsum` over the same values.
"""

from __future__ import annotations

from collections.abc import Sequence

from medfed.algorithms.base import LocalContext
from medfed.common.filters import Filter
from medfed.common.sqlvalues import double_sql, number_sql
from medfed.node.gate.dominance import Magnitude, magnitude_of, magnitude_sql

__all__ = ["pushed_moments"]


def pushed_moments(
    ctx: LocalContext,
    columns: Sequence[str],
    where: Filter | None,
    *,
    spread: bool,
    bounds: bool,
) -> tuple[int, dict[str, int], dict[str, dict[str, float] | None]]:
    """The rows, per-column counts and ``{"sum", "m2"?, "min", "max"?}`` (None: no value).

    Declares each released sum (and sum of squared deviations) to the dominance rules.
    """
    by_name = {c.name: c for c in ctx.data.columns}
    values = {c: number_sql(by_name[c]) for c in columns}
    width = 5 + (2 if bounds else 0)
    exprs = ["count(*)"]
    for column in columns:
        v = values[column]
        exprs += [f"count({v})", f"fsum({v})", *magnitude_sql(v)]
        if bounds:
            exprs += [f"min({v})", f"max({v})"]
    row = ctx.data.aggregate(exprs, where, columns=columns)
    counts: dict[str, int] = {}
    stats: dict[str, dict[str, float] | None] = {}
    means: dict[str, float] = {}
    figures: dict[str, Magnitude] = {}
    for i, column in enumerate(columns):
        part = row[1 + i * width : 1 + (i + 1) * width]
        n = int(part[0])
        counts[column] = n
        if n == 0:
            stats[column] = None
            continue
        total = float(part[1])
        figures[f"{column}.sum"] = magnitude_of(part[2:5])
        out = {"sum": total}
        if bounds:
            out["min"], out["max"] = float(part[5]), float(part[6])
        stats[column] = out
        means[column] = total / n
    if spread and means:
        deviations = {}
        for column, mean in means.items():
            d = f"({values[column]} - {double_sql(mean)})"
            deviations[column] = f"({d} * {d})"
        second = [f"fsum({deviations[c]})" for c in means]
        second += [e for c in means for e in magnitude_sql(deviations[c])]
        spreads = ctx.data.aggregate(second, where, columns=list(means))
        for i, column in enumerate(means):
            at = len(means) + 3 * i
            figures[f"{column}.m2"] = magnitude_of(spreads[at : at + 3])
            found = stats[column]
            assert found is not None
            found["m2"] = float(spreads[i])
    for column in means:  # declared in the order the frame path declared them
        ctx.magnitude(f"{column}.sum", figures[f"{column}.sum"])
        if spread:
            ctx.magnitude(f"{column}.m2", figures[f"{column}.m2"])
    return int(row[0]), counts, stats
