"""The OMOP CDM 5.4 schema: create it, and check that a database holds it.

Where the specification comes from: the OHDSI CommonDataModel field-level specification
as bundled with ``duckcdm`` (``duckcdm/omop/cdm_fields.csv``: version, table, field,
datatype), its 5.4 rows, plus the MI-CDM ``image_occurrence`` table
(``cdm/mi_cdm_fields.csv`` beside this module). Both are read once and cached.

How a check runs: :func:`validate_columns` takes what a database says it has (table →
column → declared type, as ``information_schema.columns`` reports it on DuckDB and on
PostgreSQL) and compares it with the specification by *type family* — integer, float,
date, datetime, text — so an ``integer`` column the hospital declared ``bigint`` or a
``varchar(50)`` declared ``text`` passes, a ``person.year_of_birth`` declared ``varchar``
does not. The tables in :data:`REQUIRED_TABLES` must exist; any other CDM table is
checked only when present. Extra tables and extra columns are allowed (sites add their
own). Each problem is one sentence naming ``table.column`` and the types — never a value.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Literal

import duckdb

__all__ = [
    "CDM_VERSION",
    "REQUIRED_TABLES",
    "cdm_ddl",
    "cdm_spec",
    "create_cdm",
    "family",
    "validate_cdm",
    "validate_columns",
]

CDM_VERSION = "5.4"

#: tables a medfed OMOP dataset must have (the others of the CDM are optional)
REQUIRED_TABLES: tuple[str, ...] = (
    "person",
    "observation_period",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
    "death",
    "image_occurrence",
    "concept",
    "concept_ancestor",
    "concept_relationship",
    "vocabulary",
    "cdm_source",
    "cohort",
)

Family = Literal["integer", "float", "date", "datetime", "text"]

_SQL_TYPES: dict[str, dict[Family, str]] = {
    "duckdb": {
        "integer": "INTEGER",
        "float": "DOUBLE",
        "date": "DATE",
        "datetime": "TIMESTAMP",
        "text": "VARCHAR",
    },
    "postgresql": {
        "integer": "INTEGER",
        "float": "DOUBLE PRECISION",
        "date": "DATE",
        "datetime": "TIMESTAMP",
        "text": "TEXT",
    },
}


def _spec_family(datatype: str) -> Family:
    kind = datatype.strip().lower()
    if kind in ("integer", "bigint"):
        return "integer"
    if kind == "float":
        return "float"
    if kind == "date":
        return "date"
    if kind == "datetime":
        return "datetime"
    return "text"


def family(declared: str) -> Family | None:
    """The type family of a type as a database declares it (None: not a CDM type)."""
    kind = declared.strip().lower().split("(")[0].strip()
    if kind in ("integer", "int", "int4", "int8", "bigint", "smallint", "int2", "hugeint"):
        return "integer"
    if kind in ("double", "double precision", "float", "float4", "float8", "real", "numeric"):
        return "float"
    if kind == "decimal":
        return "float"
    if kind == "date":
        return "date"
    if kind.startswith("timestamp"):
        return "datetime"
    if kind in ("varchar", "text", "character varying", "character", "char", "string"):
        return "text"
    return None


def _read_spec(path: Path | resources.abc.Traversable) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8")
    return [row for row in csv.DictReader(io.StringIO(text)) if row["version"] == CDM_VERSION]


@functools.cache
def cdm_spec() -> dict[str, tuple[tuple[str, Family], ...]]:
    """Table → ((column, type family), …) of CDM 5.4 (+ MI-CDM ``image_occurrence``)."""
    rows = _read_spec(resources.files("duckcdm.omop") / "cdm_fields.csv")
    rows += _read_spec(resources.files("medfed.node.stores") / "cdm" / "mi_cdm_fields.csv")
    tables: dict[str, list[tuple[str, Family]]] = {}
    for row in rows:
        table, field = row["table"].strip(), row["field"].strip()
        if not table or not field:
            continue
        columns = tables.setdefault(table, [])
        if field not in [name for name, _ in columns]:
            columns.append((field, _spec_family(row["datatype"])))
    return {table: tuple(columns) for table, columns in tables.items()}


def cdm_ddl(
    *, dialect: Literal["duckdb", "postgresql"] = "duckdb", schema: str = "main"
) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` statements for every CDM 5.4 table in ``schema``."""
    types = _SQL_TYPES[dialect]
    _check_name(schema)
    statements = [f'CREATE SCHEMA IF NOT EXISTS "{schema}"']
    for table, columns in cdm_spec().items():
        fields = ", ".join(f'"{name}" {types[kind]}' for name, kind in columns)
        statements.append(f'CREATE TABLE IF NOT EXISTS "{schema}"."{table}" ({fields})')
    return statements


def create_cdm(conn: duckdb.DuckDBPyConnection, schema: str = "main") -> None:
    """Create the CDM 5.4 tables (and MI-CDM ``image_occurrence``) in a DuckDB database.

    Tables that exist already are left as they are (run :func:`validate_cdm` after).
    """
    for statement in cdm_ddl(dialect="duckdb", schema=schema):
        conn.execute(statement).fetchall()


def validate_columns(found: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Problems of a database's tables (table → column → declared type) against CDM 5.4."""
    have = {table.lower(): {c.lower(): t for c, t in cols.items()} for table, cols in found.items()}
    problems: list[str] = []
    for table, columns in cdm_spec().items():
        present = have.get(table)
        if present is None:
            if table in REQUIRED_TABLES:
                problems.append(f"missing table {table} (OMOP CDM {CDM_VERSION})")
            continue
        for name, kind in columns:
            declared = present.get(name)
            if declared is None:
                problems.append(f"missing column {table}.{name} ({kind})")
            elif family(declared) != kind:
                problems.append(
                    f"{table}.{name} has type {declared.upper()}; "
                    f"OMOP CDM {CDM_VERSION} says {kind}"
                )
    return problems


def validate_cdm(conn: duckdb.DuckDBPyConnection, schema: str = "main") -> list[str]:
    """Problems of the CDM in ``schema`` of a DuckDB database (empty: it conforms).

    Reads only the catalogue (``information_schema.columns``), never a row.
    """
    return validate_columns(duckdb_columns(conn, schema=schema))


def duckdb_columns(
    conn: duckdb.DuckDBPyConnection, *, schema: str, catalog: str | None = None
) -> dict[str, dict[str, str]]:
    """Table → column → declared type of ``schema`` (optionally of an attached ``catalog``)."""
    sql = (
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ?"
    )
    params: list[str] = [schema]
    if catalog is not None:
        sql += " AND table_catalog = ?"
        params.append(catalog)
    found: dict[str, dict[str, str]] = {}
    for table, column, declared in conn.execute(sql, params).fetchall():
        found.setdefault(str(table), {})[str(column)] = str(declared)
    return found


def _check_name(name: str) -> None:
    if not name or not name.replace("_", "a").isalnum() or len(name) > 63:
        raise ValueError(f"schema name '{name}' must be letters, digits and _ (1-63)")
