"""Flat table → OMOP CDM by a declarative mapping file (``medfed node omop load``).

A mapping (TOML) says, for one row per person of a flat table, what goes where::

    index_date = "2000-01-01"         # every date is this date plus a number of days
    person_id = "pid"                 # optional: the id column (default: row number)

    [person]
    gender = { column = "sex", map = { "1" = 8507, "2" = 8532 } }   # or: concept = 8532
    age = "age"                       # year_of_birth = year(index_date) - age

    [observation_period]
    start_days = 0                    # a number, or { column = "…" }
    end_days = { column = "time" }

    [[condition]]                     # also [[measurement]], [[observation]], [[drug]]
    concept = { column = "tgrade", map = { I = 2000000101, II = 2000000102 } }
    days = 0
    when = { column = "cens", equals = 1 }      # optional: only rows where this holds
    value = "tsize"                   # measurement/observation: value_as_number column
    duration_days = 1825              # drug: drug_exposure_end_date = start + this

    [death]
    days = { column = "time" }
    when = { column = "status", equals = 2 }

How it runs: :func:`load_mapping` validates the file (pydantic; a problem is named by its
place in the file). :func:`load_table` reads the table with pandas, builds one frame per
CDM table (rows whose value or date column is empty are skipped — an absent fact), and
appends them with DuckDB to a CDM created by :func:`~medfed.node.stores.omop_schema.
create_cdm` (the test vocabulary loaded too unless asked not to). Ids continue after the
largest already in each table, so several tables can be loaded into one CDM. A row that
does not fit (a value outside ``map``, a non-number) is refused with the column and row
number, and nothing is written (one transaction).
"""

from __future__ import annotations

import tomllib
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medfed.common.errors import BadRequest
from medfed.node.stores.omop_schema import cdm_spec, create_cdm, validate_cdm

__all__ = ["Mapping", "load_mapping", "load_table", "load_test_vocabulary"]

EHR = 32817  # OMOP type concept "EHR"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FromColumn(_Strict):
    column: str
    map: dict[str, int] | None = None


class When(_Strict):
    column: str
    equals: str | int | float | bool


Number = int | FromColumn
Concept = int | FromColumn


class PersonMap(_Strict):
    gender: Concept = 0
    age: str | None = None
    year_of_birth: str | None = None


class PeriodMap(_Strict):
    start_days: Number = 0
    end_days: Number = 0


class EventMap(_Strict):
    concept: Concept
    days: Number = 0
    when: When | None = None
    value: str | None = None
    duration_days: Number | None = None


class DeathMap(_Strict):
    days: Number
    when: When | None = None
    cause: Concept = 0


class Mapping(_Strict):
    index_date: date
    person_id: str | None = None
    person: PersonMap = Field(default_factory=PersonMap)
    observation_period: PeriodMap | None = None
    condition: list[EventMap] = Field(default_factory=list)
    measurement: list[EventMap] = Field(default_factory=list)
    observation: list[EventMap] = Field(default_factory=list)
    drug: list[EventMap] = Field(default_factory=list)
    death: DeathMap | None = None


_EVENTS: dict[str, tuple[str, str, str]] = {
    # mapping key: (table, concept column, date column prefix)
    "condition": ("condition_occurrence", "condition_concept_id", "condition_start"),
    "measurement": ("measurement", "measurement_concept_id", "measurement"),
    "observation": ("observation", "observation_concept_id", "observation"),
    "drug": ("drug_exposure", "drug_concept_id", "drug_exposure_start"),
}


def load_mapping(path: Path) -> Mapping:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BadRequest(f"mapping: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"mapping: {path.name} is not valid TOML: {exc}") from None
    try:
        return Mapping.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadRequest(f"mapping {path.name}: {where}: {first['msg']}") from None


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        raise BadRequest(f"mapping: the table has no column '{name}'")
    return frame[name]


def _numbers(frame: pd.DataFrame, spec: Number) -> pd.Series:
    if isinstance(spec, int):
        return pd.Series(float(spec), index=frame.index)
    values = pd.to_numeric(_column(frame, spec.column), errors="coerce")
    bad = values.isna() & _column(frame, spec.column).notna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0]) + 1
        raise BadRequest(f"mapping: column '{spec.column}' row {row} is not a number")
    return values


def _concepts(frame: pd.DataFrame, spec: Concept) -> pd.Series:
    if isinstance(spec, int):
        return pd.Series(spec, index=frame.index, dtype="Int64")
    source = _column(frame, spec.column)
    if spec.map is None:
        return _numbers(frame, spec).astype("Int64")
    keys = source.map(lambda v: None if pd.isna(v) else _key(v))
    out = keys.map(lambda k: spec.map.get(k) if spec.map and k is not None else None)
    bad = keys.notna() & out.isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0]) + 1
        raise BadRequest(f"mapping: column '{spec.column}' row {row} has a value not in its map")
    return out.astype("Int64")


def _key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _selected(frame: pd.DataFrame, when: When | None) -> pd.Series:
    if when is None:
        return pd.Series(True, index=frame.index)
    source = _column(frame, when.column)
    return source.map(lambda v: not pd.isna(v) and _key(v) == _key(when.equals)).astype(bool)


def _dates(index: date, days: pd.Series) -> pd.Series:
    return pd.Timestamp(index) + pd.to_timedelta(days, unit="D")


def _frames(mapping: Mapping, table: pd.DataFrame, first_person: int) -> dict[str, pd.DataFrame]:
    if mapping.person_id is not None:
        person = _numbers(table, FromColumn(column=mapping.person_id)).astype("int64")
    else:
        person = pd.Series(range(first_person, first_person + len(table)), index=table.index)
    index_year = mapping.index_date.year
    if mapping.person.year_of_birth is not None:
        born = _numbers(table, FromColumn(column=mapping.person.year_of_birth))
    elif mapping.person.age is not None:
        born = index_year - _numbers(table, FromColumn(column=mapping.person.age))
    else:
        raise BadRequest("mapping: [person] needs age or year_of_birth")
    out: dict[str, pd.DataFrame] = {
        "person": pd.DataFrame(
            {
                "person_id": person,
                "gender_concept_id": _concepts(table, mapping.person.gender).fillna(0),
                "year_of_birth": born.astype("Int64"),
                "race_concept_id": 0,
                "ethnicity_concept_id": 0,
            }
        )
    }
    if mapping.observation_period is not None:
        start = _numbers(table, mapping.observation_period.start_days)
        end = _numbers(table, mapping.observation_period.end_days)
        keep = start.notna() & end.notna()
        out["observation_period"] = pd.DataFrame(
            {
                "person_id": person[keep],
                "observation_period_start_date": _dates(mapping.index_date, start[keep]),
                "observation_period_end_date": _dates(mapping.index_date, end[keep]),
                "period_type_concept_id": EHR,
            }
        )
    for key, (name, concept_col, date_prefix) in _EVENTS.items():
        parts = []
        for event in getattr(mapping, key):
            days = _numbers(table, event.days)
            concept = _concepts(table, event.concept)
            keep = _selected(table, event.when) & days.notna() & concept.notna()
            frame = pd.DataFrame({"person_id": person, concept_col: concept})
            frame[f"{date_prefix}_date"] = _dates(mapping.index_date, days)
            if event.value is not None:
                value = _numbers(table, FromColumn(column=event.value))
                keep &= value.notna()
                frame["value_as_number"] = value
            if key == "drug":
                duration = _numbers(table, event.duration_days or 1)
                frame["drug_exposure_end_date"] = _dates(mapping.index_date, days + duration)
            parts.append(frame[keep])
        if parts:
            events = pd.concat(parts, ignore_index=True)
            type_col = {"drug_exposure": "drug_type_concept_id"}.get(
                name, f"{name.split('_')[0]}_type_concept_id"
            )
            events[type_col] = EHR
            out[name] = events
    if mapping.death is not None:
        days = _numbers(table, mapping.death.days)
        keep = _selected(table, mapping.death.when) & days.notna()
        out["death"] = pd.DataFrame(
            {
                "person_id": person[keep],
                "death_date": _dates(mapping.index_date, days[keep]),
                "death_type_concept_id": EHR,
                "cause_concept_id": _concepts(table, mapping.death.cause)[keep],
            }
        )
    return out


_ID_COLUMNS = {
    "observation_period": "observation_period_id",
    "condition_occurrence": "condition_occurrence_id",
    "measurement": "measurement_id",
    "observation": "observation_id",
    "drug_exposure": "drug_exposure_id",
}


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """The one value a query returns (fetched whole: DuckDB 2 keeps a result open)."""
    return con.execute(sql).fetchall()[0][0]


def _append(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> int:
    id_col = _ID_COLUMNS.get(table)
    if id_col is not None:
        start = int(_one(con, f"SELECT coalesce(max({id_col}), 0) FROM {table}")) + 1
        frame = frame.assign(**{id_col: range(start, start + len(frame))})
    fields = [name for name, _ in cdm_spec()[table] if name in frame.columns]
    con.register("medfed_load", frame[fields])
    try:
        names = ", ".join(fields)
        con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM medfed_load").fetchall()
    finally:
        con.unregister("medfed_load")
    return len(frame)


def load_test_vocabulary(con: duckdb.DuckDBPyConnection) -> None:
    """The medfed test vocabulary (``cdm/test_vocabulary``) into an empty vocabulary."""
    if int(_one(con, "SELECT count(*) FROM concept")) > 0:
        return
    folder = resources.files("medfed.node.stores") / "cdm" / "test_vocabulary"
    for table in ("concept", "concept_ancestor", "vocabulary"):
        with resources.as_file(folder / f"{table}.csv") as path:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame = frame.replace({"": None})
        if table == "concept":
            frame["valid_start_date"] = pd.Timestamp("1970-01-01")
            frame["valid_end_date"] = pd.Timestamp("2099-12-31")
        con.register("medfed_vocab", frame)
        try:
            names = ", ".join(frame.columns)
            con.execute(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM medfed_vocab"
            ).fetchall()
        finally:
            con.unregister("medfed_vocab")


def load_table(
    *,
    mapping: Mapping,
    table: pd.DataFrame,
    cdm: Path,
    vocabulary: Literal["test", "none"] = "test",
    source_name: str = "medfed mapping",
) -> dict[str, int]:
    """Append ``table`` mapped by ``mapping`` to the DuckDB CDM at ``cdm``; rows per table."""
    con = duckdb.connect(str(cdm))
    try:
        create_cdm(con)
        problems = validate_cdm(con)
        if problems:
            raise BadRequest(f"cdm {cdm.name}: {problems[0]}")
        top = int(_one(con, "SELECT coalesce(max(person_id), 0) FROM person"))
        frames = _frames(mapping, table.reset_index(drop=True), top + 1)
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            if vocabulary == "test":
                load_test_vocabulary(con)
            written = {name: _append(con, name, frame) for name, frame in frames.items()}
            if int(_one(con, "SELECT count(*) FROM cdm_source")) == 0:
                con.execute(
                    "INSERT INTO cdm_source (cdm_source_name, cdm_source_abbreviation, "
                    "cdm_version, vocabulary_version) SELECT ?, 'medfed', '5.4', "
                    "(SELECT vocabulary_version FROM vocabulary WHERE vocabulary_id = 'None')",
                    [source_name],
                ).fetchall()
            con.execute("COMMIT").fetchall()
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise
        return written
    except duckdb.Error as exc:
        raise BadRequest(f"cdm {cdm.name}: cannot load: {exc}") from None
    finally:
        con.close()
