"""An OMOP CDM 5.4 database at the node: DuckDB (a file) or the hospital's PostgreSQL.

How it runs:

* :meth:`OmopStore.open` connects, checks the schema against the CDM 5.4 specification
  (:mod:`medfed.node.stores.omop_schema`; any problem refuses the store with every
  problem named) and sets up a private *view schema*: one view per CDM table over the
  hospital's table. Views of tables with a ``person_id`` column leave out every person of
  the opt-out register (``NOT EXISTS`` against a session table ``medfed_optout``).
  - DuckDB: an in-memory connection that ``ATTACH``\\es the CDM file ``READ_ONLY``; the
    views live in the in-memory schema ``medfed_cdm``, cohort results in ``medfed_results``.
  - PostgreSQL: one SQLAlchemy connection (autocommit) whose session holds the
    temporary table, the temporary views and the cohort results (all in ``pg_temp``);
    nothing is written to the hospital's database.
* Every read — :meth:`read`, :meth:`row_counts`, :meth:`person_ids`, cohort generation
  (:mod:`medfed.node.stores.omop_cohort`) — first refreshes ``medfed_optout`` from the
  ``excluded_persons`` callable (the register, wired in by the node), under the store's
  lock, and then reads only through the views. So an opt-out takes effect at the next
  read and no caller can forget it.
* Reads are typed: a table and column names checked against the CDM specification
  (quoted identifiers), values as parameters, never text from a request as SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd

from medfed.common.errors import BadRequest
from medfed.node.stores.omop_schema import (
    cdm_spec,
    duckdb_columns,
    validate_columns,
)

__all__ = ["PERSON_TABLES", "OmopStore"]

Dialect = Literal["duckdb", "postgresql"]
ExcludedPersons = Callable[[], set[int]]

_SOURCE = "medfed_src"  # the attached CDM file (DuckDB)
_VIEWS = {"duckdb": "medfed_cdm", "postgresql": "pg_temp"}
_RESULTS = {"duckdb": "medfed_results", "postgresql": "pg_temp"}
_OPTOUT = "medfed_optout"
#: CDM tables that hold results, not data: never read from the hospital's database
RESULT_TABLES = frozenset({"cohort", "cohort_definition"})

#: CDM tables whose rows belong to one person (the opt-out filters them)
PERSON_TABLES: frozenset[str] = frozenset(
    table for table, cols in cdm_spec().items() if any(name == "person_id" for name, _ in cols)
)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pg_url(url: str) -> str:
    """A SQLAlchemy URL with the psycopg driver (``postgresql://`` as hospitals write it)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class OmopStore:
    """One OMOP CDM, read-only, with the opt-out applied below every read."""

    def __init__(
        self,
        *,
        duckdb_path: str | Path | None = None,
        url: str | None = None,
        schema: str = "main",
        name: str = "omop",
        excluded_persons: ExcludedPersons | None = None,
    ) -> None:
        if (duckdb_path is None) == (url is None):
            raise BadRequest(f"omop dataset '{name}': give exactly one of duckdb and url")
        self.name = name
        self.schema = schema
        self.excluded_persons = excluded_persons
        self._lock = threading.RLock()
        self._pg: Any = None
        self._duck: duckdb.DuckDBPyConnection | None = None
        self.dialect: Dialect
        if duckdb_path is not None:
            self.dialect = "duckdb"
            found = self._open_duckdb(Path(duckdb_path))
        else:
            assert url is not None
            self.dialect = "postgresql"
            found = self._open_pg(url)
        problems = validate_columns(found)
        if problems:
            self.close()
            shown = "; ".join(problems[:20])
            more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
            raise BadRequest(f"omop dataset '{name}' is not an OMOP CDM 5.4: {shown}{more}")
        self.tables: list[str] = sorted(t for t in cdm_spec() if t in found)
        self._make_views()

    # -- connections -------------------------------------------------------------------

    def _open_duckdb(self, path: Path) -> dict[str, dict[str, str]]:
        if not path.is_file():
            raise BadRequest(f"omop dataset '{self.name}': file not found: {path}")
        con = duckdb.connect(":memory:")
        quoted = str(path).replace("'", "''")
        try:
            con.execute(f"ATTACH '{quoted}' AS {_SOURCE} (READ_ONLY)")
        except duckdb.Error as exc:
            con.close()
            raise BadRequest(
                f"omop dataset '{self.name}': cannot open {path.name}: {exc}"
            ) from None
        self._duck = con
        return {
            t.lower(): cols
            for t, cols in duckdb_columns(con, schema=self.schema, catalog=_SOURCE).items()
        }

    def _open_pg(self, url: str) -> dict[str, dict[str, str]]:
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(pg_url(url), poolclass=sa.NullPool)
            conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except Exception as exc:  # driver errors vary; their text names host and database
            raise BadRequest(
                f"omop dataset '{self.name}': cannot connect: {type(exc).__name__}"
            ) from None
        self._pg = conn
        rows = conn.exec_driver_sql(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %(schema)s",
            {"schema": self.schema},
        ).fetchall()
        found: dict[str, dict[str, str]] = {}
        for table, column, declared in rows:
            found.setdefault(str(table).lower(), {})[str(column)] = str(declared)
        return found

    def _source(self, table: str) -> str:
        if self.dialect == "duckdb":
            return f"{_SOURCE}.{_ident(self.schema)}.{_ident(table)}"
        return f"{_ident(self.schema)}.{_ident(table)}"

    @property
    def views(self) -> str:
        """The schema the opt-out-filtered views live in (what cohort SQL reads)."""
        return _VIEWS[self.dialect]

    @property
    def results(self) -> str:
        """The schema cohort results are written to (in memory / this session only)."""
        return _RESULTS[self.dialect]

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> None:
        """Run statements on the store's session (the caller holds :meth:`session`)."""
        if self._duck is not None:
            self._duck.execute(sql, params).fetchall()
        else:
            self._pg.exec_driver_sql(sql, params) if params else self._pg.exec_driver_sql(sql)

    def frame(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """A query's rows as a frame (the caller holds :meth:`session`)."""
        if self._duck is not None:
            return self._duck.execute(sql, list(params or [])).df()
        if params:
            sql = sql.replace("?", "%s")
        result = self._pg.exec_driver_sql(sql, tuple(params or ()))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def _make_views(self) -> None:
        kind = "TEMP " if self.dialect == "postgresql" else ""
        with self._lock:
            if self.dialect == "duckdb":
                self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.views}")
                self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.results}")
                self.execute(f"CREATE TABLE {_OPTOUT} (person_id BIGINT PRIMARY KEY)")
            else:
                self.execute(f"CREATE TEMP TABLE {_OPTOUT} (person_id BIGINT PRIMARY KEY)")
            for table in self.tables:
                if table in RESULT_TABLES:
                    continue  # the cohort results are the store's own, in its results schema
                source = self._source(table)
                where = ""
                if table in PERSON_TABLES:
                    where = (
                        f" WHERE NOT EXISTS (SELECT 1 FROM {_OPTOUT} o "
                        f"WHERE o.person_id = t.person_id)"
                    )
                self.execute(
                    f"CREATE {kind}VIEW {self.views}.{_ident(table)} AS "
                    f"SELECT t.* FROM {source} t{where}"
                )

    # -- the opt-out -------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[OmopStore]:
        """Hold the store's lock with the opt-out refreshed: every read runs inside one."""
        with self._lock:
            self._refresh_optout()
            yield self

    def _refresh_optout(self) -> None:
        persons = sorted(self.excluded_persons()) if self.excluded_persons is not None else []
        self.execute(f"DELETE FROM {_OPTOUT}")
        if not persons:
            return
        if self._duck is not None:
            ids = pd.DataFrame({"person_id": pd.Series(persons, dtype="int64")})
            self._duck.register("medfed_optout_new", ids)
            try:
                self._duck.execute(
                    f"INSERT INTO {_OPTOUT} SELECT person_id FROM medfed_optout_new"
                ).fetchall()
            finally:
                self._duck.unregister("medfed_optout_new")
        else:
            self._pg.exec_driver_sql(
                f"INSERT INTO {_OPTOUT} (person_id) VALUES (%s)", [(int(p),) for p in persons]
            )

    # -- typed reads -------------------------------------------------------------------

    def _check_columns(self, table: str, columns: Sequence[str]) -> list[str]:
        if table not in self.tables or table in RESULT_TABLES:
            raise BadRequest(f"omop: unknown table '{table}' in dataset '{self.name}'")
        known = {name for name, _ in cdm_spec()[table]}
        names = list(dict.fromkeys(columns))
        for column in names:
            if column not in known:
                raise BadRequest(f"omop: unknown column '{table}.{column}'")
        return names

    def read(
        self,
        table: str,
        columns: Sequence[str],
        *,
        concept_ids: Sequence[int] | None = None,
        concept_column: str | None = None,
    ) -> pd.DataFrame:
        """Rows of ``table`` (opted-out persons left out), optionally of some concepts."""
        names = self._check_columns(
            table, [*columns, *([concept_column] if concept_column else [])]
        )
        fields = ", ".join(_ident(c) for c in names if c in columns)
        sql = f"SELECT {fields} FROM {self.views}.{_ident(table)}"
        params: list[Any] = []
        if concept_ids is not None and concept_column is not None:
            ids = [int(c) for c in concept_ids]
            if not ids:
                sql += " WHERE 1 = 0"
            else:
                sql += f" WHERE {_ident(concept_column)} IN ({', '.join('?' for _ in ids)})"
                params = ids
        with self.session():
            return self.frame(sql, params)

    def row_counts(self) -> dict[str, int]:
        """Rows per CDM table (after the opt-out); exact — the caller rounds before release."""
        counts: dict[str, int] = {}
        with self.session():
            for table in self.tables:
                if table in RESULT_TABLES:
                    continue
                frame = self.frame(f"SELECT count(*) AS n FROM {self.views}.{_ident(table)}")
                counts[table] = int(frame["n"].iloc[0])
        return counts

    def person_ids(self) -> list[int]:
        """Every person's id (opted-out persons left out), ascending."""
        with self.session():
            frame = self.frame(f"SELECT person_id FROM {self.views}.person ORDER BY person_id")
        return [int(p) for p in frame["person_id"]]

    def all_person_ids(self) -> list[int]:
        """Every person of the CDM, opted-out ones included, ascending: only for the node's
        row-set memory, which must index persons the same way whatever the register says
        (nothing derived from it leaves the node)."""
        with self._lock:
            frame = self.frame(f"SELECT person_id FROM {self._source('person')} ORDER BY person_id")
        return [int(p) for p in frame["person_id"]]

    def vocabulary_version(self) -> str | None:
        """The version of the ``None`` vocabulary row (Athena's whole-release version)."""
        with self.session():
            frame = self.frame(
                f"SELECT vocabulary_id, vocabulary_version FROM {self.views}.vocabulary "
                "ORDER BY vocabulary_id"
            )
        if frame.empty:
            return None
        for _, row in frame.iterrows():
            if str(row["vocabulary_id"]) == "None" and row["vocabulary_version"] is not None:
                return str(row["vocabulary_version"])
        first = frame["vocabulary_version"].dropna()
        return str(first.iloc[0]) if len(first) else None

    def missing_concepts(self, concept_ids: Sequence[int]) -> list[int]:
        """Those of ``concept_ids`` that the vocabulary's ``concept`` table lacks."""
        wanted = sorted({int(c) for c in concept_ids})
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        with self.session():
            frame = self.frame(
                f"SELECT concept_id FROM {self.views}.concept WHERE concept_id IN ({marks})",
                wanted,
            )
        have = {int(c) for c in frame["concept_id"]}
        return [c for c in wanted if c not in have]

    def close(self) -> None:
        with self._lock:
            if self._duck is not None:
                self._duck.close()
                self._duck = None
            if self._pg is not None:
                engine = self._pg.engine
                self._pg.invalidate()  # ends the session: its temporary objects go with it
                self._pg.close()
                engine.dispose()
                self._pg = None
