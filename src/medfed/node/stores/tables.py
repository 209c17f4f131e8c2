"""Tabular data on a node: a CSV or Parquet file, queried through DuckDB.

How it runs: :meth:`TableStore.open` reads the whole file once with pandas (pyarrow for
Parquet) — a CSV file is first checked with the ``csv`` module, which refuses a header that
names a column twice (pandas would rename it ``age.1``) and any row with more or fewer
fields than the header (pandas would shift values or fill blanks) with the line number and
field counts, never a value — normalises the columns to medfed's small type set and infers the
:class:`~medfed.common.schemas.ColumnSchema` list. The frame is registered as a view in a
private in-memory DuckDB connection. Every query compiles the structured filter with
:func:`~medfed.common.filters.compile_filter` — quoted identifiers taken from the schema,
values as ``?`` parameters — so no text from a request ever becomes SQL.

One lock serialises queries on the connection (a DuckDB connection is not safe for
concurrent use); the node runs one algorithm step per dataset at a time anyway. Row order
is the file's order. Each row's id is its position in the file: a hidden column of the
view (not in the schema) and the index of every frame :meth:`TableStore.select` returns,
so the node's row-set memory (``medfed.node.gate.rowsets``) knows which rows a step used.
"""

from __future__ import annotations

import csv
import gzip
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from medfed.common.errors import BadRequest
from medfed.common.filters import Filter, compile_filter, quote_identifier
from medfed.common.schemas import ColumnSchema, ColumnType

__all__ = ["TableStore", "check_csv_shape", "infer_columns"]

_VIEW = "medfed_table"
#: the hidden row-id column of the view; a table may not have a column of this name
ROW_ID = "__medfed_row__"
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _column_type(series: pd.Series) -> ColumnType:
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        return ColumnType.boolean
    if ptypes.is_integer_dtype(dtype):
        return ColumnType.integer
    if ptypes.is_float_dtype(dtype):
        return ColumnType.float
    if ptypes.is_datetime64_any_dtype(dtype):
        return ColumnType.date
    return ColumnType.string


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns DuckDB and the schema agree on: strings or None, nullable booleans."""
    out = frame.copy()
    for name in out.columns:
        series = out[name]
        dtype = series.dtype
        if ptypes.is_bool_dtype(dtype) or ptypes.is_numeric_dtype(dtype):
            continue
        if ptypes.is_datetime64_any_dtype(dtype):
            continue
        values = series.dropna()
        if len(values) and all(isinstance(v, bool) for v in values):
            out[name] = series.astype("boolean")
        else:
            out[name] = series.map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    return out


def infer_columns(frame: pd.DataFrame) -> list[ColumnSchema]:
    """The medfed schema of a (normalised) frame, in column order."""
    columns: list[ColumnSchema] = []
    for name in frame.columns:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise BadRequest(f"table: column name {name!r} must be a string of 1-200 characters")
        if name == ROW_ID:
            raise BadRequest(f"table: column name '{ROW_ID}' is reserved")
        columns.append(ColumnSchema(name=name, type=_column_type(frame[name])))
    return columns


def check_csv_shape(path: Path) -> None:
    """Refuse duplicate header names and ragged rows (blank lines are skipped, as pandas)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise BadRequest(f"table: {path.name} is empty (no header line)")
            seen: dict[str, int] = {}
            for position, name in enumerate(header, start=1):
                if name in seen:
                    raise BadRequest(
                        f"table: {path.name}: column '{name}' appears twice in the header "
                        f"(fields {seen[name]} and {position}); rename one"
                    )
                seen[name] = position
            for row in reader:
                if row and len(row) != len(header):
                    raise BadRequest(
                        f"table: {path.name} line {reader.line_num} has {len(row)} field(s), "
                        f"the header has {len(header)}; fix or remove that row"
                    )
    except (csv.Error, UnicodeDecodeError, OSError, EOFError) as exc:
        raise BadRequest(f"table: cannot read {path.name}: {exc}") from None


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise BadRequest(f"table: file not found: {path}")
    name = path.name.lower()
    try:
        if name.endswith(_CSV_SUFFIXES):
            check_csv_shape(path)
            return pd.read_csv(path)
        if name.endswith(_PARQUET_SUFFIXES):
            return pd.read_parquet(path, engine="pyarrow")
    except (ValueError, OSError) as exc:
        raise BadRequest(f"table: cannot read {path.name}: {exc}") from None
    raise BadRequest(
        f"table: unsupported file type '{path.suffix}' for {path.name} (use .csv or .parquet)"
    )


class TableStore:
    """One table, read-only, implementing the algorithms' ``LocalData`` protocol."""

    def __init__(self, frame: pd.DataFrame, *, name: str = "table") -> None:
        if frame.columns.duplicated().any():
            dup = frame.columns[frame.columns.duplicated()][0]
            raise BadRequest(f"table {name}: duplicate column '{dup}'")
        self.name = name
        self._frame = _normalise(frame.reset_index(drop=True))
        self._columns = infer_columns(self._frame)
        self._by_name = {c.name: c for c in self._columns}
        self._lock = threading.Lock()
        self._con = duckdb.connect(":memory:")
        view = self._frame.assign(**{ROW_ID: np.arange(len(self._frame), dtype=np.int64)})
        self._con.register(_VIEW, view)

    @classmethod
    def open(cls, path: str | Path) -> TableStore:
        """Read a ``.csv`` or ``.parquet`` file (by suffix)."""
        path = Path(path)
        return cls(_read(path), name=path.name)

    @property
    def columns(self) -> list[ColumnSchema]:
        return list(self._columns)

    @property
    def row_count(self) -> int:
        return len(self._frame)

    def _where(self, where: Filter | None) -> tuple[str, list[Any]]:
        if where is None:
            return "", []
        sql, params = compile_filter(where, self._columns)
        return f" WHERE {sql}", params

    def select(self, columns: Sequence[str], where: Filter | None = None) -> pd.DataFrame:
        """Rows of ``columns`` (in file order) that match ``where``, indexed by row id."""
        if isinstance(columns, str):
            raise BadRequest("select: columns must be a list of names, not one string")
        names = list(dict.fromkeys(columns))
        for column in names:
            if column not in self._by_name:
                raise BadRequest(f"select: unknown column '{column}' in {self.name}")
        clause, params = self._where(where)
        fields = ", ".join(quote_identifier(c) for c in [ROW_ID, *names])
        with self._lock:
            frame: pd.DataFrame = self._con.execute(
                f"SELECT {fields} FROM {_VIEW}{clause}", params
            ).df()
        frame.index = pd.Index(frame.pop(ROW_ID).to_numpy(dtype=np.int64), name=None)
        return frame

    def row_ids(self, where: Filter | None = None) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The ids (file positions) of the rows that match ``where``, ascending."""
        clause, params = self._where(where)
        with self._lock:
            found = self._con.execute(
                f"SELECT {quote_identifier(ROW_ID)} FROM {_VIEW}{clause}", params
            ).fetchnumpy()
        ids = np.sort(np.asarray(found[ROW_ID], dtype=np.int64))
        return ids

    def count(self, where: Filter | None = None) -> int:
        """Number of rows that match ``where``."""
        clause, params = self._where(where)
        with self._lock:
            row = self._con.execute(f"SELECT count(*) FROM {_VIEW}{clause}", params).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._con.close()
