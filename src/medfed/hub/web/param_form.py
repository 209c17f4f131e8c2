"""The run-an-analysis form, generated from each algorithm's ``Params`` JSON schema.

How it works: :func:`run_form` walks ``get_algorithm(name).Params.model_json_schema()``
and makes one :class:`ParamField` per property, so every registered algorithm gets a form
without a hand-written template:

* ``where`` → a text field in the filter text syntax (``age > 50 and horTh == 'yes'``,
  :mod:`medfed.common.filter_text`);
* a property named in :data:`COLUMN_PARAMS` → a picker of the chosen datasets' columns
  (a select for one column, a multi-select for a list of them);
* an enum → a select; a boolean → a checkbox; an integer or number → a number input with
  the schema's bounds; a list of numbers or strings → a comma-separated text field;
* anything else (nested objects such as ``dp``, free ``plan_args``) → a JSON text area.

:func:`params_from_form` reads a posted form back into raw parameters, which then go
through the same ``tasks.create_task`` as ``POST /api/tasks`` (so the same validation and
the same error messages). An empty field means "the default"; ``null`` alternatives
(``anyOf [X, null]``) make a field optional. Nothing here touches the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from medfed.algorithms.base import Algorithm
from medfed.common.errors import BadRequest
from medfed.common.filter_text import parse_filter_text
from medfed.common.filters import filter_to_json
from medfed.common.schemas import ColumnSchema

__all__ = [
    "COLUMN_PARAMS",
    "Option",
    "ParamField",
    "RunForm",
    "params_from_form",
    "run_form",
]

#: parameter names that hold column names of the dataset (one, or a list of them)
COLUMN_PARAMS = frozenset(
    {
        "by",
        "categorical",
        "col",
        "column",
        "columns",
        "covariates",
        "duration",
        "event",
        "freq_weights",
        "group",
        "label",
        "offset",
        "outcome",
        "row",
        "strata",
        "weights",
    }
)

Widget = Literal[
    "column", "columns", "select", "checkbox", "number", "text", "list", "filter", "json"
]


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    selected: bool = False


@dataclass(frozen=True)
class ParamField:
    """One input of the form, ready for ``_run_form.html``."""

    name: str
    label: str
    widget: Widget
    required: bool
    help: str = ""
    value: str = ""
    options: tuple[Option, ...] = ()
    step: str = "any"
    minimum: str = ""
    maximum: str = ""
    placeholder: str = ""


@dataclass(frozen=True)
class RunForm:
    algorithm: str
    description: str
    fields: list[ParamField] = field(default_factory=list)


@dataclass(frozen=True)
class _Spec:
    """A property of the schema as the form sees it."""

    name: str
    widget: Widget
    schema: dict[str, Any]
    required: bool
    item_type: str = "string"
    enum: tuple[Any, ...] = ()


def _resolve(prop: dict[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {
            **defs.get(ref.rsplit("/", 1)[1], {}),
            **{k: v for k, v in prop.items() if k != "$ref"},
        }
    return prop


def _unwrap(prop: dict[str, Any], defs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The property without its ``null`` alternative, and whether ``null`` was allowed."""
    options = prop.get("anyOf")
    if isinstance(options, list):
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            outer = {k: v for k, v in prop.items() if k != "anyOf"}
            return {**_resolve(rest[0], defs), **outer}, len(rest) < len(options)
    return _resolve(prop, defs), False


def _specs(algorithm: Algorithm[Any]) -> list[_Spec]:
    schema = algorithm.Params.model_json_schema()
    defs: Mapping[str, Any] = schema.get("$defs", {})
    required = set(schema.get("required", []))
    specs = []
    for name, raw in schema.get("properties", {}).items():
        prop, nullable = _unwrap(raw, defs)
        kind = prop.get("type")
        items = prop.get("items")
        item_type = str(items.get("type", "string")) if isinstance(items, dict) else "string"
        widget: Widget
        enum: tuple[Any, ...] = ()
        if name == "where":
            widget = "filter"
        elif name in COLUMN_PARAMS and kind == "string":
            widget = "column"
        elif name in COLUMN_PARAMS and kind == "array" and item_type == "string":
            widget = "columns"
        elif "enum" in prop:
            widget, enum = "select", tuple(prop["enum"])
        elif kind == "boolean":
            widget = "checkbox"
        elif kind in ("integer", "number"):
            widget = "number"
        elif kind == "array" and item_type in ("string", "number", "integer"):
            widget = "list"
        elif kind == "string":
            widget = "text"
        else:
            widget = "json"
        specs.append(_Spec(name, widget, prop, name in required and not nullable, item_type, enum))
    return specs


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _help(spec: _Spec) -> str:
    s = spec.schema
    parts = [str(s["description"])] if s.get("description") else []
    bounds = [
        f"{op} {_text(s[key])}"
        for key, op in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        if key in s
    ]
    if bounds:
        parts.append(", ".join(bounds))
    if spec.widget == "filter":
        parts.append("e.g. age > 50 and horTh == 'yes'")
    elif spec.widget == "list":
        parts.append("comma-separated")
    elif spec.widget == "columns":
        parts.append("hold Ctrl or ⌘ to pick several")
    elif spec.widget == "json":
        nested = s.get("properties")
        parts.append(
            "a JSON object" + (f" with {', '.join(nested)}" if isinstance(nested, dict) else "")
        )
    return "; ".join(parts)


def _default(spec: _Spec) -> list[str]:
    """The default as form values (what a fresh form shows)."""
    default = spec.schema.get("default")
    if default is None:
        return []
    if spec.widget in ("list", "columns"):
        return [", ".join(_text(v) for v in default)] if spec.widget == "list" else list(default)
    if spec.widget == "json":
        return [json.dumps(default)] if default else []
    return [_text(default)]


def run_form(
    algorithm: Algorithm[Any],
    columns: Sequence[ColumnSchema],
    submitted: Mapping[str, Sequence[str]] | None = None,
) -> RunForm:
    """The form of ``algorithm``: column pickers list ``columns``; values as ``submitted``.

    ``submitted`` (the form as posted, re-shown after an error) replaces the defaults.
    """
    fields = []
    for spec in _specs(algorithm):
        given = submitted.get(spec.name) if submitted is not None else None
        values = list(given) if given is not None else _default(spec)
        label = spec.name.replace("_", " ")
        help = _help(spec)
        s = spec.schema
        if spec.widget in ("column", "columns"):
            chosen = set(_split(values)) if spec.widget == "columns" else set(values[-1:])
            options = tuple(
                Option(c.name, f"{c.name} ({c.type.value})", c.name in chosen) for c in columns
            )
            fields.append(
                ParamField(spec.name, label, spec.widget, spec.required, help, options=options)
            )
        elif spec.widget == "select":
            current = values[-1] if values else ""
            options = tuple(Option(_text(e), _text(e), _text(e) == current) for e in spec.enum)
            fields.append(
                ParamField(spec.name, label, "select", spec.required, help, options=options)
            )
        elif spec.widget == "checkbox":
            value = values[-1] if values else "false"
            fields.append(ParamField(spec.name, label, "checkbox", False, help, value=value))
        elif spec.widget == "number":
            fields.append(
                ParamField(
                    spec.name,
                    label,
                    "number",
                    spec.required,
                    help,
                    value=values[-1] if values else "",
                    step="1" if s.get("type") == "integer" else "any",
                    minimum=_text(s.get("minimum", "")),
                    maximum=_text(s.get("maximum", "")),
                )
            )
        else:
            placeholder = {"filter": "age > 50", "json": "{}"}.get(spec.widget, "")
            if spec.widget == "list":
                placeholder = "20, 40, 60" if spec.item_type != "string" else "a, b"
            fields.append(
                ParamField(
                    spec.name,
                    label,
                    spec.widget,
                    spec.required,
                    help,
                    value=values[-1] if values else "",
                    placeholder=placeholder,
                )
            )
    return RunForm(algorithm.name, algorithm.summary, fields)


def _split(values: Sequence[str]) -> list[str]:
    """Column lists arrive as several values or as one comma-separated value."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _number(algorithm: str, name: str, text: str, integer: bool) -> int | float:
    try:
        return int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise BadRequest(f"{algorithm}: parameter {name}: {text!r} is not {kind}") from None


def params_from_form(
    algorithm: Algorithm[Any], form: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Raw parameters from the posted form; an empty field leaves the default."""
    params: dict[str, Any] = {}
    for spec in _specs(algorithm):
        values = [v for v in form.get(spec.name, ()) if isinstance(v, str)]
        text = values[-1].strip() if values else ""
        name = spec.name
        if spec.widget == "columns":
            if _split(values):
                params[name] = _split(values)
        elif spec.widget == "checkbox":
            if values:
                params[name] = text == "true"
        elif not text:
            continue
        elif spec.widget == "filter":
            params[name] = filter_to_json(parse_filter_text(text))
        elif spec.widget == "select":
            params[name] = next((e for e in spec.enum if _text(e) == text), text)
        elif spec.widget == "number":
            params[name] = _number(algorithm.name, name, text, spec.schema.get("type") == "integer")
        elif spec.widget == "list":
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if spec.item_type in ("number", "integer"):
                parts = [p for chunk in parts for p in re.split(r"\s+", chunk)]
                integer = spec.item_type == "integer"
                params[name] = [_number(algorithm.name, name, p, integer) for p in parts]
            else:
                params[name] = parts
        elif spec.widget == "json":
            try:
                params[name] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadRequest(
                    f"{algorithm.name}: parameter {name}: not valid JSON: {exc.msg} at {exc.pos}"
                ) from None
        else:
            params[name] = text
    return params
