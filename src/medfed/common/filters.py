"""A small structured filter language for row selection — never SQL from strings.

A filter travels as JSON: a condition ``{"column": "age", "op": ">=", "value": 50}`` or a
combinator ``{"and": [...]}`` / ``{"or": [...]}`` (non-empty, nestable up to
:data:`MAX_DEPTH` levels and :data:`MAX_CONDITIONS` conditions in all). The CLI writes the
same thing as text (``age >= 50 and (horTh == 'yes' or tsize > 20)``), which
:func:`medfed.common.filter_text.parse_filter_text` turns into the same models.

How a filter is used:

1. :func:`parse_filter` (JSON) or :func:`parse_filter_text` (CLI) builds the models;
   malformed input raises :class:`~medfed.common.errors.BadRequest` naming the problem.
2. :func:`check_filter` checks it against a dataset's columns (unknown column, a value of
   the wrong type) — the hub does this when a task is created, the node again before it runs.
3. :func:`compile_filter` turns it into a DuckDB ``WHERE`` clause with ``?`` placeholders
   and a parameter list. Identifiers are only names found in the dataset's columns, quoted;
   values only ever travel as parameters.

Comparisons follow SQL three-valued logic: a null cell matches no comparison (not even
``!=`` or ``not in``); use ``is null`` / ``is not null`` to select nulls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from typing import Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from medfed.common.errors import BadRequest
from medfed.common.schemas import ColumnSchema, ColumnType

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "And",
    "Condition",
    "Filter",
    "Op",
    "Or",
    "check_filter",
    "columns_in",
    "compile_filter",
    "filter_to_json",
    "parse_filter",
]

MAX_DEPTH = 10
MAX_CONDITIONS = 100
MAX_STRING = 1000

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null"]
OPS: tuple[str, ...] = get_args(Op)
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
ORDERING = ("<", "<=", ">", ">=")
LIST_OPS = ("in", "not in")
NULL_OPS = ("is null", "is not null")
_SQL_OPS = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

Scalar: TypeAlias = StrictBool | StrictInt | StrictFloat | StrictStr


class Condition(BaseModel):
    """``column op value``; ``value`` is a list for ``in``/``not in``, absent for null tests."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(min_length=1, max_length=200)
    op: Op
    value: Scalar | list[Scalar] | None = None


class And(BaseModel):
    """All of ``filters`` hold (JSON: ``{"and": [...]}``)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    filters: list[Filter] = Field(alias="and", min_length=1)


class Or(BaseModel):
    """At least one of ``filters`` holds (JSON: ``{"or": [...]}``)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    filters: list[Filter] = Field(alias="or", min_length=1)


Filter: TypeAlias = Condition | And | Or

And.model_rebuild()
Or.model_rebuild()


# --------------------------------------------------------------------------- JSON form


def _scalar(raw: Any, column: str) -> bool | int | float | str:
    if isinstance(raw, bool | int):
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise BadRequest(f"filter: value for column '{column}' must be finite, not {raw}")
        return raw
    if isinstance(raw, str):
        if len(raw) > MAX_STRING:
            raise BadRequest(f"filter: value for column '{column}' longer than {MAX_STRING}")
        return raw
    raise BadRequest(
        f"filter: value for column '{column}' must be a string, number or boolean, "
        f"not {type(raw).__name__}"
    )


def _condition(raw: dict[str, Any]) -> Condition:
    extra = sorted(set(raw) - {"column", "op", "value"})
    if extra:
        raise BadRequest(f"filter: unknown key '{extra[0]}' in condition")
    column = raw.get("column")
    if not isinstance(column, str) or not column:
        raise BadRequest("filter: condition needs 'column', a non-empty string")
    if len(column) > 200:
        raise BadRequest("filter: column name longer than 200 characters")
    op = raw.get("op")
    if op not in OPS:
        raise BadRequest(f"filter: unknown operator {op!r} (use one of {', '.join(OPS)})")
    if op in NULL_OPS:
        if raw.get("value") is not None:
            raise BadRequest(f"filter: operator '{op}' takes no value (column '{column}')")
        return Condition(column=column, op=op)
    if "value" not in raw or raw["value"] is None:
        raise BadRequest(f"filter: operator '{op}' needs a value (column '{column}')")
    value = raw["value"]
    if op in LIST_OPS:
        if not isinstance(value, list | tuple) or not value:
            raise BadRequest(f"filter: operator '{op}' needs a non-empty list (column '{column}')")
        return Condition(column=column, op=op, value=[_scalar(v, column) for v in value])
    if isinstance(value, list | tuple):
        raise BadRequest(f"filter: operator '{op}' takes one value, not a list ('{column}')")
    return Condition(column=column, op=op, value=_scalar(value, column))


def _parse(raw: Any, depth: int, budget: list[int]) -> Filter:
    if depth > MAX_DEPTH:
        raise BadRequest(f"filter: nested deeper than {MAX_DEPTH} levels")
    if isinstance(raw, Condition | And | Or):
        raw = filter_to_json(raw)
    if not isinstance(raw, dict):
        raise BadRequest(f"filter: expected an object, got {type(raw).__name__}")
    for key, model in (("and", And), ("or", Or)):
        if key in raw:
            if len(raw) != 1:
                raise BadRequest(f"filter: '{key}' must be the only key of its object")
            items = raw[key]
            if not isinstance(items, list) or not items:
                raise BadRequest(f"filter: '{key}' must be a non-empty list")
            return model(filters=[_parse(item, depth + 1, budget) for item in items])
    budget[0] += 1
    if budget[0] > MAX_CONDITIONS:
        raise BadRequest(f"filter: more than {MAX_CONDITIONS} conditions")
    return _condition(raw)


def parse_filter(raw: Any) -> Filter | None:
    """Build a filter from its JSON form; ``None`` for ``None`` or an empty object."""
    if raw is None or raw == {}:
        return None
    return _parse(raw, 1, [0])


def filter_to_json(f: Filter) -> dict[str, Any]:
    """The JSON form of ``f``; ``parse_filter(filter_to_json(f)) == f``."""
    if isinstance(f, And):
        return {"and": [filter_to_json(item) for item in f.filters]}
    if isinstance(f, Or):
        return {"or": [filter_to_json(item) for item in f.filters]}
    out: dict[str, Any] = {"column": f.column, "op": f.op}
    if f.op not in NULL_OPS:
        out["value"] = list(f.value) if isinstance(f.value, list) else f.value
    return out


def columns_in(f: Filter) -> set[str]:
    """Every column name the filter mentions."""
    if isinstance(f, Condition):
        return {f.column}
    return set().union(*(columns_in(item) for item in f.filters))


def _conditions(f: Filter) -> list[Condition]:
    if isinstance(f, Condition):
        return [f]
    return [c for item in f.filters for c in _conditions(item)]


# ------------------------------------------------------------------- checks and SQL


def _check_value(column: ColumnSchema, op: str, value: object) -> None:
    kind = column.type
    if kind == ColumnType.boolean and op in ORDERING:
        raise BadRequest(
            f"filter: operator '{op}' does not apply to boolean column '{column.name}'"
        )
    if kind == ColumnType.date:
        _as_date(column, value)
        return
    if kind.numeric:
        fits, wanted = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif kind == ColumnType.boolean:
        fits, wanted = isinstance(value, bool), "true or false"
    else:
        fits, wanted = isinstance(value, str), "a string"
    if not fits:
        raise BadRequest(
            f"filter: column '{column.name}' is {kind}, but value {value!r} is not {wanted}"
        )


def _as_date(column: ColumnSchema, value: object) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise BadRequest(
        f"filter: column '{column.name}' is date, but value {value!r} is not a date (YYYY-MM-DD)"
    )


def check_filter(f: Filter, columns: Sequence[ColumnSchema]) -> None:
    """Raise :class:`BadRequest` for an unknown column or a value that does not fit its type."""
    by_name = {c.name: c for c in columns}
    for cond in _conditions(f):
        column = by_name.get(cond.column)
        if column is None:
            raise BadRequest(f"filter: unknown column '{cond.column}'")
        if cond.op in NULL_OPS:
            continue
        values = cond.value if isinstance(cond.value, list) else [cond.value]
        for value in values:
            _check_value(column, cond.op, value)


def quote_identifier(name: str) -> str:
    """``name`` as a DuckDB quoted identifier (``"`` doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _param(column: ColumnSchema, value: object) -> Any:
    return _as_date(column, value) if column.type == ColumnType.date else value


def _compile(f: Filter, by_name: dict[str, ColumnSchema], params: list[Any]) -> str:
    if isinstance(f, And | Or):
        joiner = " AND " if isinstance(f, And) else " OR "
        return "(" + joiner.join(_compile(item, by_name, params) for item in f.filters) + ")"
    column = by_name[f.column]
    ident = quote_identifier(column.name)
    if f.op == "is null":
        return f"({ident} IS NULL)"
    if f.op == "is not null":
        return f"({ident} IS NOT NULL)"
    if isinstance(f.value, list):
        params.extend(_param(column, v) for v in f.value)
        marks = ", ".join("?" for _ in f.value)
        keyword = "IN" if f.op == "in" else "NOT IN"
        return f"({ident} {keyword} ({marks}))"
    params.append(_param(column, f.value))
    return f"({ident} {_SQL_OPS[f.op]} ?)"


def compile_filter(f: Filter, columns: Sequence[ColumnSchema]) -> tuple[str, list[Any]]:
    """Check ``f`` and return a DuckDB ``WHERE`` expression and its parameters."""
    check_filter(f, columns)
    params: list[Any] = []
    sql = _compile(f, {c.name: c for c in columns}, params)
    return sql, params
