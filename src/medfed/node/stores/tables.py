"""Tabular data on a node: a CSV or Parquet file, queried through DuckDB without loading it.

How it runs: :meth:`TableStore.open` never reads the table into pandas. A CSV file is first
checked, streaming, with the ``csv`` module, which refuses a header that names a column
twice and any row with more or fewer fields than the header (line number and field counts,
never a value); then :func:`~medfed.node.stores.table_sources.file_source` makes a DuckDB
view over the file — typed as medfed always inferred them, with each row's position in the
file as a hidden row-id column — in a private in-memory DuckDB database. A store built from
a frame (an OMOP cohort, an export, a validation table) copies the normalised frame into
that database instead. Every query compiles the structured filter with
:func:`~medfed.common.filters.compile_filter` — quoted identifiers taken from the schema,
values as ``?`` parameters — so no text from a request ever becomes SQL; DuckDB pushes the
projection, the filter and any aggregate down to the file (``count`` and ``row_ids`` never
build a frame; ``select`` returns only the rows and columns asked for; :meth:`aggregate`
runs a whole aggregate query for the local steps that push their sums down).

Concurrency: each query opens its own cursor (a DuckDB connection to the same database),
so concurrent runs read in parallel; a lock only guards the opt-out refresh. DuckDB's
memory use is capped (:data:`MEMORY_LIMIT`), so a table larger than memory is streamed;
what DuckDB spills goes to a private temporary folder removed with the store.
Row order is the file's order. Each row's id is its position in the file: a hidden column
of the view (not in the schema) and the index of every frame :meth:`TableStore.select`
returns, so the node's row-set memory (``medfed.node.gate.rowsets``) knows which rows a
step used.

Opt-out: a store built with ``person_column`` and ``excluded_persons`` (a callable giving
the opted-out persons, :meth:`medfed.node.stores.optout.OptOutRegister.excluded`) asks it
before every query; when the answer changed it recomputes which rows belong to those
persons (the distinct person values are keyed with ``person_key``) into a hidden-row table,
and every query reads the view without them, so ``select``, ``count`` and ``row_ids`` — and
every algorithm, training, script and export reading through them — never see an opted-out
person. Row ids stay file positions; ``row_count`` stays the file's rows (the length of the
row-set memory's masks); :meth:`TableStore.count` is what is visible.
"""

from __future__ import annotations

import csv
import gzip
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from medfed.common.errors import BadRequest
from medfed.common.filters import Filter, compile_filter, quote_identifier
from medfed.common.schemas import ColumnSchema, ColumnType
from medfed.common.sqlvalues import missing_sql
from medfed.node.stores.table_sources import CSV_SUFFIXES, ROW_ID, file_source, quote_literal

__all__ = ["MEMORY_LIMIT", "ROW_ID", "TableStore", "check_csv_shape", "infer_columns"]

_TABLE = "medfed_table"
_VIEW = "medfed_visible"
_HIDDEN = "medfed_hidden"
#: DuckDB's memory cap per store; beyond it DuckDB streams or spills
MEMORY_LIMIT = "512MB"


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


def _connect(spill: str) -> duckdb.DuckDBPyConnection:
    """A private in-memory database that spills to ``spill`` (not the working directory)."""
    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": MEMORY_LIMIT,
            "temp_directory": spill,
        },
    )
    con.execute("SET enable_progress_bar = false")
    # DuckDB 2.0 propagates Parquet column statistics, which leave NaN out, into the plan:
    # isnan(x) and nullif(x, NaN) then fold to "never" and a NaN counts as a value. The
    # pushed-down steps read NaN as missing (as pandas did), so that optimizer is off.
    con.execute("SET disabled_optimizers = 'statistics_propagation'")
    con.execute(f"CREATE TABLE {_HIDDEN} (id BIGINT)")
    return con


class TableStore:
    """One table, read-only, implementing the algorithms' ``LocalData`` protocol."""

    #: rows per frame of :meth:`select_batches` (a multiple of DuckDB's 2,048-row vector)
    batch_rows: int = 262_144

    def __init__(
        self,
        frame: pd.DataFrame | None = None,
        *,
        name: str = "table",
        person_column: str | None = None,
        excluded_persons: Callable[[], frozenset[str]] | None = None,
        path: Path | None = None,
    ) -> None:
        self.name = name
        self._lock = threading.Lock()
        # DuckDB creates the folder only when it spills
        spill = str(Path(tempfile.gettempdir()) / f"medfed-duckdb-{uuid.uuid4().hex}")
        self._cleanup = weakref.finalize(self, shutil.rmtree, spill, ignore_errors=True)
        self._con = _connect(spill)
        if frame is not None:
            if frame.columns.duplicated().any():
                dup = frame.columns[frame.columns.duplicated()][0]
                raise BadRequest(f"table {name}: duplicate column '{dup}'")
            normal = _normalise(frame.reset_index(drop=True))
            self._columns = infer_columns(normal)
            view = normal.assign(**{ROW_ID: np.arange(len(normal), dtype=np.int64)})
            self._con.register("medfed_frame", view)
            self._con.execute(f"CREATE TABLE {_TABLE} AS SELECT * FROM medfed_frame")
            self._con.unregister("medfed_frame")
            self._row_count = len(normal)
        elif path is not None:
            try:
                source = file_source(self._con, path)
            except BadRequest:
                self._con.close()
                self._cleanup()
                raise
            self._columns = source.columns
            body = source.sql
            if path.name.lower().endswith(CSV_SUFFIXES):
                # parsed once, into a typed Parquet copy in the store's private folder:
                # later queries read columns instead of re-parsing the text
                copy = quote_literal(str(Path(spill) / "table.parquet"))
                try:
                    Path(spill).mkdir(parents=True, exist_ok=True)
                    self._con.execute(f"COPY ({source.sql}) TO {copy} (FORMAT parquet)")
                except (duckdb.Error, OSError) as exc:  # a half-written copy goes with it
                    self._con.close()
                    self._cleanup()
                    raise BadRequest(f"table: cannot copy {path.name}: {exc}") from None
                body = f"SELECT * FROM read_parquet({copy})"
            self._con.execute(f"CREATE VIEW {_TABLE} AS {body}")
            self._row_count = source.row_count
        else:
            raise BadRequest(f"table {name}: needs a frame or a file")
        self._by_name = {c.name: c for c in self._columns}
        if (person_column is None) != (excluded_persons is None):
            raise BadRequest(f"table {name}: opt-out needs both person_column and a register")
        if person_column is not None and person_column not in self._by_name:
            raise BadRequest(f"table {name}: person_column '{person_column}' is not a column")
        self._person_column = person_column
        self._excluded_persons = excluded_persons
        self._excluded_seen: frozenset[str] | None = None
        self._hidden_count = 0
        #: bumped whenever the hidden rows are recomputed (see :meth:`refresh`)
        self._hidden_version = 0
        self._con.execute(f"CREATE VIEW {_VIEW} AS SELECT * FROM {_TABLE}")

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        person_column: str | None = None,
        excluded_persons: Callable[[], frozenset[str]] | None = None,
    ) -> TableStore:
        """A view over a ``.csv`` or ``.parquet`` file (by suffix); nothing is loaded."""
        path = Path(path)
        if path.is_file() and path.name.lower().endswith((".csv", ".csv.gz")):
            check_csv_shape(path)
        return cls(
            name=path.name,
            path=path,
            person_column=person_column,
            excluded_persons=excluded_persons,
        )

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own for one query (safe beside other threads' queries)."""
        return self._con.cursor()

    def _refresh(self) -> None:
        """Ask the register; when its answer changed, hide the rows of opted-out persons."""
        if self._excluded_persons is None or self._person_column is None:
            return
        current = self._excluded_persons()
        if current is self._excluded_seen:
            return
        with self._lock:
            if current is self._excluded_seen:
                return
            if current != self._excluded_seen:  # a register may answer an equal new set
                self._hide(current)
            self._excluded_seen = current

    def refresh(self) -> int:
        """Ask the opt-out register now; the version of the visible rows (it changes each
        time the hidden rows are recomputed), so a caller that runs several queries can
        tell that they all saw the same rows."""
        self._refresh()
        return self._hidden_version

    def _hide(self, current: frozenset[str]) -> None:
        """Recompute the hidden rows for the opted-out ``current`` (the lock is held)."""
        from medfed.node.stores.optout import person_key

        assert self._person_column is not None
        person = quote_identifier(self._person_column)
        rid = quote_identifier(ROW_ID)
        with self._cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            cur.execute(f"DELETE FROM {_HIDDEN}")
            if current:
                found = cur.execute(
                    f"SELECT DISTINCT {person} AS v FROM {_TABLE} WHERE {person} IS NOT NULL"
                ).df()
                values = found[found["v"].map(person_key).isin(current)]
                if len(values):
                    cur.register("medfed_hidden_values", values)
                    cur.execute(
                        f"INSERT INTO {_HIDDEN} SELECT {rid} FROM {_TABLE} "
                        f"WHERE {person} IN (SELECT v FROM medfed_hidden_values)"
                    )
                    cur.unregister("medfed_hidden_values")
            row = cur.execute(f"SELECT count(*) FROM {_HIDDEN}").fetchone()
            self._hidden_count = int(row[0]) if row else 0
            body = f"SELECT * FROM {_TABLE}"
            if self._hidden_count:
                body += f" WHERE {rid} NOT IN (SELECT id FROM {_HIDDEN})"
            cur.execute(f"CREATE OR REPLACE VIEW {_VIEW} AS {body}")
            cur.execute("COMMIT")
        self._hidden_version += 1

    def hidden_mask(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Per file row, whether it is hidden now (for the row-set memory; never released)."""
        mask = np.zeros(self._row_count, dtype=bool)
        if self._excluded_persons is None:
            return mask
        self._refresh()
        with self._cursor() as cur:
            found = cur.execute(f"SELECT id FROM {_HIDDEN}").fetchnumpy()
        mask[np.asarray(found["id"], dtype=np.int64)] = True
        return mask

    def all_rows(self) -> pd.DataFrame:
        """Every row of the file, opted-out ones included: only for the content manifest,
        which hashes the file as it is (it never leaves the node as values)."""
        return pd.concat(list(self.all_row_batches()), ignore_index=True)

    def all_row_batches(self, rows: int = 100_000) -> Iterator[pd.DataFrame]:
        """:meth:`all_rows` in file order, ``rows`` at a time (memory bounded by a batch)."""
        rid = quote_identifier(ROW_ID)
        with self._cursor() as cur:
            result = cur.execute(f"SELECT * EXCLUDE ({rid}) FROM {_TABLE} ORDER BY {rid}")
            empty = True
            while True:
                batch: pd.DataFrame = result.fetch_df_chunk(max(1, rows // 2048))
                if len(batch) == 0:
                    break
                empty = False
                yield batch
            if empty:
                yield batch

    @property
    def columns(self) -> list[ColumnSchema]:
        return list(self._columns)

    @property
    def row_count(self) -> int:
        """Rows in the file (row ids are below it); :meth:`count` gives the visible ones."""
        return self._row_count

    def _where(self, where: Filter | None) -> tuple[str, list[Any]]:
        if where is None:
            return "", []
        sql, params = compile_filter(where, self._columns)
        return f" WHERE {sql}", params

    def _check_columns(self, columns: Sequence[str], what: str) -> list[str]:
        if isinstance(columns, str):
            raise BadRequest(f"{what}: columns must be a list of names, not one string")
        names = list(dict.fromkeys(columns))
        for column in names:
            if column not in self._by_name:
                raise BadRequest(f"{what}: unknown column '{column}' in {self.name}")
        return names

    def select(self, columns: Sequence[str], where: Filter | None = None) -> pd.DataFrame:
        """Visible rows of ``columns`` (in file order) that match ``where``, indexed by row id."""
        names = self._check_columns(columns, "select")
        clause, params = self._where(where)
        fields = ", ".join(quote_identifier(c) for c in [ROW_ID, *names])
        self._refresh()
        with self._cursor() as cur:
            frame: pd.DataFrame = cur.execute(f"SELECT {fields} FROM {_VIEW}{clause}", params).df()
        frame.index = pd.Index(frame.pop(ROW_ID).to_numpy(dtype=np.int64), name=None)
        return frame

    def select_batches(
        self, columns: Sequence[str], where: Filter | None = None
    ) -> Iterator[pd.DataFrame]:
        """:meth:`select` streamed :attr:`batch_rows` rows at a time (at least one frame,
        maybe empty), each indexed by row id: memory bounded by a batch, not by the table."""
        rows = self.batch_rows
        names = self._check_columns(columns, "select")
        clause, params = self._where(where)
        fields = ", ".join(quote_identifier(c) for c in [ROW_ID, *names])
        self._refresh()
        with self._cursor() as cur:
            result = cur.execute(f"SELECT {fields} FROM {_VIEW}{clause}", params)
            empty = True
            while True:
                batch: pd.DataFrame = result.fetch_df_chunk(max(1, rows // 2048))
                if len(batch) == 0 and not empty:
                    break
                batch.index = pd.Index(batch.pop(ROW_ID).to_numpy(dtype=np.int64), name=None)
                empty = False
                yield batch
                if len(batch) == 0:
                    break

    def row_ids(self, where: Filter | None = None) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The ids (file positions) of the rows that match ``where``, ascending."""
        clause, params = self._where(where)
        self._refresh()
        with self._cursor() as cur:
            found = cur.execute(
                f"SELECT {quote_identifier(ROW_ID)} FROM {_VIEW}{clause}", params
            ).fetchnumpy()
        return np.sort(np.asarray(found[ROW_ID], dtype=np.int64))

    def row_id_batches(
        self, where: Filter | None = None, *, missing: str | None = None, rows: int = 1_000_000
    ) -> Iterator[np.ndarray[Any, np.dtype[np.int64]]]:
        """The ids of the visible rows matching ``where`` (and, with ``missing``, where that
        column is null or NaN), streamed from DuckDB ``rows`` at a time, in no set order.

        A float column's missing test is read per row, not put in the ``WHERE``: DuckDB
        (2.0) prunes Parquet row groups by their statistics, which leave NaN out, so
        ``WHERE isnan(x)`` can miss a NaN that ``count(*) FILTER (WHERE isnan(x))`` sees.
        """
        clause, params = self._where(where)
        fields = quote_identifier(ROW_ID)
        flagged = False
        if missing is not None:
            self._check_columns([missing], "row ids")
            column = self._by_name[missing]
            test = missing_sql(column)
            if column.type == ColumnType.float:
                fields, flagged = f"{fields}, {test}", True
            else:
                clause = f"{clause} AND {test}" if clause else f" WHERE {test}"
        self._refresh()
        with self._cursor() as cur:
            query = cur.sql(f"SELECT {fields} FROM {_VIEW}{clause}", params=params)
            for batch in query.to_arrow_reader(rows):
                ids = batch.column(0).to_numpy().astype(np.int64, copy=False)
                if flagged:
                    ids = ids[batch.column(1).to_numpy(zero_copy_only=False)]
                yield ids

    def count(self, where: Filter | None = None) -> int:
        """Number of rows that match ``where``."""
        clause, params = self._where(where)
        self._refresh()
        with self._cursor() as cur:
            rows = cur.execute(f"SELECT count(*) FROM {_VIEW}{clause}", params).fetchall()
        return int(rows[0][0]) if rows else 0

    def aggregate(
        self,
        expressions: Sequence[str],
        where: Filter | None = None,
        params: Sequence[Any] = (),
        *,
        columns: Sequence[str] = (),
    ) -> tuple[Any, ...]:
        """One row of aggregates over the visible rows matching ``where``.

        ``expressions`` are SQL built by the caller from quoted schema names and numbers only
        (``params`` for anything else, before the filter's own); never request text.
        ``columns`` names the columns the aggregates read (checked here; the row-set memory
        records their non-null rows, as for :meth:`select`).
        """
        self._check_columns(columns, "aggregate")
        clause, where_params = self._where(where)
        self._refresh()
        with self._cursor() as cur:
            row = cur.execute(
                f"SELECT {', '.join(expressions)} FROM {_VIEW}{clause}",
                [*params, *where_params],
            ).fetchone()
        return tuple(row) if row is not None else ()

    def close(self) -> None:
        with self._lock:
            self._con.close()
        self._cleanup()
