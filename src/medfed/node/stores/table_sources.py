"""A table file as a DuckDB view: typed columns and row ids, without reading it into memory.

How it runs: :func:`file_source` builds the SQL of a view over a ``.parquet`` or ``.csv``
(``.csv.gz``) file and the file's :class:`~medfed.common.schemas.ColumnSchema` list. The
view has one extra column, :data:`ROW_ID`, each row's position in the file (Parquet:
``read_parquet(..., file_row_number = true)``; CSV: ``row_number() over ()`` over a
single-threaded read, which DuckDB streams). Queries on the view are pushed down by DuckDB
(projection, filters, aggregates); nothing is materialized in Python.

The types are the ones medfed inferred when it read the whole file with pandas, so a
dataset's schema does not change with the store:

* Parquet: from the file's own types — an integer column with a null becomes ``float``
  (pandas reads it as float64) unless the file's pandas metadata says it was a nullable
  ``Int64`` column (pandas restores that), a timestamp ``date``, a ``DATE``, decimal or
  anything else ``string`` (pandas reads those as Python objects and medfed keeps their
  text); the ``__index_level_N__`` and named-index columns pandas writes are left out, as
  pandas does.
* CSV: every field is read as text with pandas' missing-value markers as nulls; one
  streaming aggregate per file decides each column as pandas does — all ``True``/``False``
  literals: ``boolean``; all integers: ``integer`` (``float`` with a null); all numbers or
  all missing: ``float``; otherwise ``string`` — and the view casts the text accordingly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from medfed.common.errors import BadRequest
from medfed.common.filters import quote_identifier
from medfed.common.schemas import ColumnSchema, ColumnType

__all__ = [
    "CSV_SUFFIXES",
    "PARQUET_SUFFIXES",
    "ROW_ID",
    "FileSource",
    "file_source",
    "quote_literal",
]

#: the hidden row-id column of the view; a table may not have a column of this name
ROW_ID = "__medfed_row__"
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")

#: pandas.read_csv's default missing-value markers
_NA_TEXT = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)
_TRUE_TEXT = ("True", "TRUE", "true")
_FALSE_TEXT = ("False", "FALSE", "false")
_INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
}
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}


@dataclass(frozen=True)
class FileSource:
    """What a store needs of a file: the view's SQL, its schema and its number of rows."""

    sql: str
    columns: list[ColumnSchema]
    row_count: int


def quote_literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _check_name(name: str) -> None:
    if not name or len(name) > 200:
        raise BadRequest(f"table: column name {name!r} must be a string of 1-200 characters")
    if name == ROW_ID:
        raise BadRequest(f"table: column name '{ROW_ID}' is reserved")


def _pandas_metadata(path: Path) -> tuple[set[str], set[str]]:
    """From the file's pandas metadata: the columns pandas stored as the frame's index
    (``pd.read_parquet`` does not return them) and those of a nullable integer dtype
    (``Int64``: pandas reads them as integers even with a null)."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise BadRequest(f"table: cannot read {path.name}: {exc}") from None
    raw = metadata.get(b"pandas")
    if raw is None:
        return set(), set()
    try:
        described = json.loads(raw)
        index = {c for c in described.get("index_columns", []) if isinstance(c, str)}
        nullable = {
            str(c.get("name"))
            for c in described.get("columns", [])
            if str(c.get("numpy_type", "")).lstrip("U").startswith("Int")
        }
    except (ValueError, AttributeError, TypeError):
        return set(), set()
    return index, nullable


def _parquet(con: duckdb.DuckDBPyConnection, path: Path) -> FileSource:
    scan = f"read_parquet({quote_literal(str(path))}, file_row_number = true)"
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
    except duckdb.Error as exc:
        raise BadRequest(f"table: cannot read {path.name}: {exc}") from None
    index, nullable_ints = _pandas_metadata(path)
    skip = index | {"file_row_number"}
    fields = [(str(r[0]), str(r[1])) for r in described if r[0] not in skip]
    fields = [
        (n, t) for n, t in fields if not (n.startswith("__index_level_") and n.endswith("__"))
    ]
    for name, _ in fields:
        _check_name(name)
    ints = [n for n, t in fields if t in _INTEGER_TYPES]
    counts = ", ".join(["count(*)", *(f"count({quote_identifier(n)}) = count(*)" for n in ints)])
    row = con.execute(f"SELECT {counts} FROM {scan}").fetchone()
    assert row is not None
    complete = dict(zip(ints, row[1:], strict=True))
    columns: list[ColumnSchema] = []
    exprs = [f"file_row_number AS {quote_identifier(ROW_ID)}"]
    for name, dtype in fields:
        ident = quote_identifier(name)
        if dtype == "BOOLEAN":
            kind, expr = ColumnType.boolean, ident
        elif dtype in _INTEGER_TYPES and (complete[name] or name in nullable_ints):
            kind, expr = ColumnType.integer, ident
        elif dtype in _INTEGER_TYPES or dtype in _FLOAT_TYPES:
            kind, expr = ColumnType.float, f"CAST({ident} AS DOUBLE) AS {ident}"
        elif dtype.startswith("TIMESTAMP"):
            kind, expr = ColumnType.date, ident
        elif dtype == "VARCHAR":
            kind, expr = ColumnType.string, ident
        else:
            kind, expr = ColumnType.string, f"CAST({ident} AS VARCHAR) AS {ident}"
        columns.append(ColumnSchema(name=name, type=kind))
        exprs.append(expr)
    sql = f"SELECT {', '.join(exprs)} FROM {scan}"
    return FileSource(sql=sql, columns=columns, row_count=int(row[0]))


def _csv(con: duckdb.DuckDBPyConnection, path: Path) -> FileSource:
    nulls = ", ".join(quote_literal(v) for v in _NA_TEXT)
    scan = (
        f"read_csv({quote_literal(str(path))}, header = true, all_varchar = true, "
        f"parallel = false, delim = ',', quote = '\"', escape = '\"', "
        f"nullstr = [{nulls}], auto_detect = true)"
    )
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
    except duckdb.Error as exc:
        raise BadRequest(f"table: cannot read {path.name}: {exc}") from None
    names = [str(r[0]) for r in described]
    for name in names:
        _check_name(name)
    booleans = ", ".join(quote_literal(v) for v in (*_TRUE_TEXT, *_FALSE_TEXT))
    parts = ["count(*)"]
    for name in names:
        v = quote_identifier(name)
        parts += [
            f"count({v})",
            f"bool_and({v} IN ({booleans})) FILTER (WHERE {v} IS NOT NULL)",
            f"bool_and(regexp_full_match(trim({v}), '[+-]?[0-9]+') "
            f"AND TRY_CAST(trim({v}) AS BIGINT) IS NOT NULL) FILTER (WHERE {v} IS NOT NULL)",
            f"bool_and(TRY_CAST(trim({v}) AS DOUBLE) IS NOT NULL) FILTER (WHERE {v} IS NOT NULL)",
        ]
    try:
        row = con.execute(f"SELECT {', '.join(parts)} FROM {scan}").fetchone()
    except duckdb.Error as exc:
        raise BadRequest(f"table: cannot read {path.name}: {exc}") from None
    assert row is not None
    total = int(row[0])
    trues = ", ".join(quote_literal(v) for v in _TRUE_TEXT)
    columns: list[ColumnSchema] = []
    exprs = [f"(row_number() OVER ()) - 1 AS {quote_identifier(ROW_ID)}"]
    for i, name in enumerate(names):
        present, is_bool, is_int, is_num = row[1 + 4 * i : 5 + 4 * i]
        v = quote_identifier(name)
        if present == 0:
            kind = ColumnType.float if total else ColumnType.string
        elif is_bool:
            kind = ColumnType.boolean
        elif is_int:
            kind = ColumnType.integer if present == total else ColumnType.float
        elif is_num:
            kind = ColumnType.float
        else:
            kind = ColumnType.string
        if kind == ColumnType.boolean:
            expr = f"CASE WHEN {v} IS NULL THEN NULL ELSE {v} IN ({trues}) END AS {v}"
        elif kind == ColumnType.integer:
            expr = f"CAST(trim({v}) AS BIGINT) AS {v}"
        elif kind == ColumnType.float:
            expr = f"CAST(trim({v}) AS DOUBLE) AS {v}"
        else:
            expr = v
        columns.append(ColumnSchema(name=name, type=kind))
        exprs.append(expr)
    sql = f"SELECT {', '.join(exprs)} FROM {scan}"
    return FileSource(sql=sql, columns=columns, row_count=total)


def file_source(con: duckdb.DuckDBPyConnection, path: Path) -> FileSource:
    """The view over ``path`` (by suffix); a bad file raises ``BadRequest`` naming it."""
    if not path.is_file():
        raise BadRequest(f"table: file not found: {path}")
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return _csv(con, path)
    if name.endswith(PARQUET_SUFFIXES):
        return _parquet(con, path)
    raise BadRequest(
        f"table: unsupported file type '{path.suffix}' for {path.name} (use .csv or .parquet)"
    )
