"""A task's result as HTML tables, derived from its ``Result`` model, for any algorithm.

How it works: :func:`result_tables` dumps the pydantic model to JSON-like values and walks
them once, with no per-algorithm template:

* scalar fields → one "figures" table of name and value (a two-number ``…interval`` too);
* a list of lists (a matrix: crosstab, covariance, chi-square) → a grid labelled by the
  sibling string lists whose lengths match its rows and columns (``row_levels``,
  ``columns``);
* lists of the same length (Cox's ``covariates``, ``coef``, ``se``…; a t-test's
  ``groups``, ``n``, ``mean``) → one table with a column per list; a list one longer than
  another (histogram ``edges`` beside ``counts``) becomes the interval column;
* a list of objects (GLM coefficients, quantiles, Kaplan-Meier curves, training rounds) →
  one row per object, with each object's own lists as tables of their own;
* a mapping of objects (mean per column, summaries per group and column) → one row per
  key path; a mapping of scalars (reference levels, metrics) → name and value.

Tables longer than :data:`FOLD_ROWS` rows are shown folded (``<details>``). Values are
formatted for reading (6 significant digits, "—" for none/not reached).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

__all__ = ["FOLD_ROWS", "Table", "format_value", "result_tables"]

FOLD_ROWS = 25


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    @property
    def folded(self) -> bool:
        return len(self.rows) > FOLD_ROWS


def format_value(value: Any) -> str:
    """A value as a person reads it: 6 significant digits, yes/no, "—" for none."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-4 or abs(value) >= 1e9):
            return f"{value:.5g}"
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def _label(name: str) -> str:
    return name.replace("_", " ")


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_scalar(v) for v in value)


def _matrix(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_scalar_list(v) for v in value)


def _records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


SHORT = 4


def _flat(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """What of a record fits in one row: its scalars, short lists (bounds) in brackets,
    nested mappings of scalars as ``outer.inner``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if _scalar(value):
            out[prefix + key] = value
        elif _scalar_list(value) and len(value) <= SHORT:
            out[prefix + key] = "[" + format_value(value) + "]"
        elif isinstance(value, dict) and all(_scalar(v) for v in value.values()):
            out.update(_flat(value, f"{prefix}{key}."))
    return out


Row = tuple[list[str], dict[str, Any]]


def _rows_table(title: str, key_headers: list[str], rows: Sequence[Row]) -> Table:
    """One row per record: its key path (if any), then its scalars by name."""
    names: list[str] = []
    for _, record in rows:
        names.extend(n for n in record if n not in names)
    table = Table(title, [*key_headers, *(_label(n) for n in names)])
    for keys, record in rows:
        table.rows.append([*keys, *(format_value(record.get(n)) for n in names)])
    return table


def _key_paths(
    name: str, mapping: Mapping[str, Any], lists: Mapping[str, list[Any]], depth: int = 0
) -> tuple[list[str], list[Row]]:
    """Rows of a mapping of mappings: the key path of each leaf record, and its scalars.

    A level's header is the sibling string list that holds its keys (``columns``), else
    the mapping's own name at the top.
    """
    keys = {str(k) for k in mapping}
    header = next(
        (n for n, values in lists.items() if keys <= {str(v) for v in values}),
        name if depth == 0 else "",
    )
    nested = depth < 3 and all(
        isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values())
        for v in mapping.values()
    )
    if not nested:
        return [_label(header)], [([str(k)], _flat(v)) for k, v in mapping.items()]
    headers: list[str] = [_label(header)]
    rows: list[Row] = []
    for key, inner in mapping.items():
        sub_headers, sub_rows = _key_paths(name, inner, lists, depth + 1)
        headers = [headers[0], *sub_headers]
        rows.extend(([str(key), *path], record) for path, record in sub_rows)
    return headers, rows


def _as_ranges(data: Mapping[str, Any]) -> dict[str, Any]:
    """``*_bounds`` lists of ``[lo, hi]`` pairs become lists of "[lo, hi]" strings.

    So a range per coefficient is a column beside the coefficient, not a matrix of its own.
    """
    out = dict(data)
    for key, value in data.items():
        pairs = key.endswith("_bounds") and _matrix(value)
        if pairs and all(len(pair) == 2 for pair in value):
            out[key] = [f"[{format_value(lo)}, {format_value(hi)}]" for lo, hi in value]
    return out


def _tables(title: str, data: Mapping[str, Any]) -> list[Table]:
    data = _as_ranges(data)
    figures = Table(title, ["", "value"])
    out: list[Table] = [figures]
    lists = {k: v for k, v in data.items() if _scalar_list(v)}
    str_lists = {k: v for k, v in lists.items() if all(isinstance(x, str) for x in v)}
    used: set[str] = set()
    later: list[Table] = []

    for key, value in data.items():
        if _scalar(value):
            figures.rows.append([_label(key), format_value(value)])
        elif key.endswith("interval") and _scalar_list(value) and len(value) == 2:
            figures.rows.append(
                [_label(key), f"[{format_value(value[0])}, {format_value(value[1])}]"]
            )
            used.add(key)

    # matrices, labelled by sibling string lists of matching lengths
    for key, value in data.items():
        if not _matrix(value):
            continue
        n_rows, n_cols = len(value), max(len(r) for r in value)
        row_labels = next(
            (k for k, v in str_lists.items() if len(v) == n_rows and "row" in k), None
        )
        row_labels = row_labels or next((k for k, v in str_lists.items() if len(v) == n_rows), None)
        col_labels = next(
            (k for k, v in str_lists.items() if len(v) == n_cols and k != row_labels), None
        ) or (row_labels if n_rows == n_cols else None)
        used.update(k for k in (row_labels, col_labels) if k)
        cols = (
            [str(c) for c in str_lists[col_labels]]
            if col_labels
            else [str(i) for i in range(n_cols)]
        )
        rlabels = str_lists[row_labels] if row_labels else [str(i) for i in range(n_rows)]
        table = Table(_label(key), [_label(row_labels or ""), *cols])
        for label, row in zip(rlabels, value, strict=False):
            table.rows.append([str(label), *(format_value(v) for v in row)])
        later.append(table)

    # parallel lists: one table per length, string lists first (they label the rows)
    by_length: dict[int, list[str]] = {}
    for key, value in lists.items():
        if key not in used:
            by_length.setdefault(len(value), []).append(key)
    for length in sorted(by_length):
        keys = [k for k in by_length[length] if k not in used]
        if not keys:
            continue
        edges = [k for k in by_length.get(length + 1, []) if k not in used]
        if len(keys) == 1 and not edges and length <= 12:
            figures.rows.append([_label(keys[0]), format_value(lists[keys[0]])])
            continue
        keys = sorted(keys, key=lambda k: k not in str_lists)
        headers = [_label(k) for k in keys]
        if edges:
            used.add(edges[0])
            headers.insert(0, f"interval ({_label(edges[0])})")
        table = Table(_label(keys[0]), headers)
        for i in range(length):
            row = [format_value(lists[k][i]) for k in keys]
            if edges:
                lo, hi = lists[edges[0]][i], lists[edges[0]][i + 1]
                row.insert(0, f"[{format_value(lo)}, {format_value(hi)})")
            table.rows.append(row)
        later.append(table)
        used.update(keys)

    # lists of objects and mappings
    for key, value in data.items():
        if _records(value):
            later.append(_rows_table(_label(key), [], [([], _flat(item)) for item in value]))
            for i, item in enumerate(value):
                rest = {k: v for k, v in item.items() if not _flat({k: v})}
                if rest:
                    name = next((str(v) for v in item.values() if isinstance(v, str)), str(i + 1))
                    inner = [t for t in _tables("", rest) if t.rows]
                    for table in inner:
                        suffix = f" · {table.title}" if len(inner) > 1 and table.title else ""
                        table.title = f"{_label(key)}: {name}{suffix}"
                    later.extend(inner)
        elif isinstance(value, dict) and value:
            if all(_scalar(v) for v in value.values()):
                table = Table(_label(key), ["", "value"])
                table.rows = [[str(k), format_value(v)] for k, v in value.items()]
                later.append(table)
            elif all(isinstance(v, dict) for v in value.values()):
                headers, rows = _key_paths(key, value, str_lists)
                later.append(_rows_table(_label(key), headers, rows))
            else:
                later.extend(t for t in _tables(_label(key), value) if t.rows)
    return [t for t in (*out, *later) if t.rows]


def result_tables(result: BaseModel) -> list[Table]:
    """Every table of ``result``: its figures first, then its lists and groups."""
    return _tables("figures", result.model_dump(mode="json"))
