"""SQL for a column's values as pandas saw them, for queries pushed down to DuckDB.

How it runs: a node's table is a DuckDB view (``medfed.node.stores.tables``). When a local
step or the row-set memory asks DuckDB for sums, counts or the rows where a column is
missing instead of selecting the column into pandas, the answer must be the one the frame
gave: pandas treats a float ``NaN`` as missing (``dropna``, ``notna``) where SQL counts it
as a value. :func:`value_sql` is the column with ``NaN`` as ``NULL`` (float columns only;
others are the quoted name), :func:`number_sql` that as ``DOUBLE`` (booleans as 0/1, as
``to_numpy(dtype=float64)`` gives) and :func:`missing_sql` the test for a missing value.
Names are quoted with :func:`~medfed.common.filters.quote_identifier`; no request text
becomes SQL.
"""

from __future__ import annotations

from medfed.common.filters import quote_identifier
from medfed.common.schemas import ColumnSchema, ColumnType

__all__ = ["double_sql", "missing_sql", "number_sql", "value_sql"]


def value_sql(column: ColumnSchema) -> str:
    """The column's values, a float ``NaN`` read as ``NULL`` (missing, as in pandas)."""
    ident = quote_identifier(column.name)
    if column.type == ColumnType.float:
        return f"nullif({ident}, 'NaN'::DOUBLE)"
    return ident


def number_sql(column: ColumnSchema) -> str:
    """The column's values as ``DOUBLE`` (missing: ``NULL``)."""
    return f"CAST({value_sql(column)} AS DOUBLE)"


def missing_sql(column: ColumnSchema) -> str:
    """True where the column's value is missing (``NULL``, or ``NaN`` in a float column)."""
    return f"({value_sql(column)} IS NULL)"


def double_sql(value: float) -> str:
    """A float computed at the node (never request text) as an exact ``DOUBLE`` literal."""
    return f"CAST('{float(value)!r}' AS DOUBLE)"
