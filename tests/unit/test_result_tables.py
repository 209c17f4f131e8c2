"""A result's tables for the web pages, derived from its model for every algorithm.

Real results (GBSG2 split over three hospitals, in-process federation) of each algorithm
that presents itself go through :func:`medfed.hub.web.result_tables.result_tables`; the
tables must label their rows and columns by the result's own names.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from medfed.algorithms.registry import get_algorithm
from medfed.hub.web.result_tables import Table, format_value, result_tables
from medfed.node.stores.tables import TableStore
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.local import run_locally

CASES: dict[str, dict[str, Any]] = {
    "count": {},
    "summary": {"columns": ["age", "tsize"]},
    "histogram": {"column": "age", "bins": [20, 40, 60, 80]},
    "crosstab": {"row": "horTh", "col": "menostat"},
    "quantiles": {"column": "age"},
    "correlation": {"columns": ["age", "tsize", "pnodes"]},
    "grouped_summary": {"columns": ["age", "tsize"], "by": "horTh"},
    "ttest": {"column": "age", "group": "horTh"},
    "chisq": {"row": "horTh", "col": "menostat"},
    "km": {"duration": "time", "event": "cens", "group": "horTh"},
    "logrank": {"duration": "time", "event": "cens", "group": "horTh"},
    "cox": {"duration": "time", "event": "cens", "covariates": ["age", "tsize"]},
    "glm": {"outcome": "cens", "covariates": ["age", "tsize"], "family": "binomial"},
}


@pytest.fixture(scope="module")
def gbsg2_results() -> dict[str, Any]:
    stores = [TableStore(f, name=n) for n, f in split_gbsg2(load_gbsg2()).items()]
    return {
        name: get_algorithm(name).Result.model_validate(run_locally(name, params, stores))
        for name, params in CASES.items()
    }


def _cells(tables: list[Table], title: str) -> tuple[list[str], list[list[str]]]:
    table = next(t for t in tables if t.title == title)
    return table.headers, table.rows


def test_every_result_becomes_tables_without_a_template_of_its_own(
    gbsg2_results: dict[str, Any],
) -> None:
    tables = {name: result_tables(result) for name, result in gbsg2_results.items()}
    for name, found in tables.items():
        assert found and all(t.rows for t in found), name
        json.dumps([t.rows for t in found])  # plain strings throughout
    headers, rows = _cells(tables["glm"], "coefficients")
    assert headers[:3] == ["name", "estimate", "std error"]
    assert [r[0] for r in rows] == ["Intercept", "age", "tsize"]
    headers, rows = _cells(tables["cox"], "covariates")
    assert headers[0] == "covariates" and "hazard ratio" in headers and len(rows) == 2
    headers, rows = _cells(tables["km"], "curves")
    assert [r[0] for r in rows] == ["no", "yes"] and "median" in headers
    curve = next(t for t in tables["km"] if t.title == "curves: no")
    assert curve.folded and curve.headers[:4] == ["times", "at risk", "events", "survival"]
    headers, rows = _cells(tables["histogram"], "counts")
    assert rows[0][0] == "[20, 40)" and len(rows) == 3
    headers, rows = _cells(tables["crosstab"], "table")
    assert headers == ["row levels", "Post", "Pre"] and [r[0] for r in rows] == ["no", "yes"]
    headers, rows = _cells(tables["correlation"], "matrix")
    assert headers[1:] == ["age", "tsize", "pnodes"] and rows[0][:2] == ["age", "1"]
    headers, rows = _cells(tables["grouped_summary"], "groups")
    assert headers[:3] == ["groups", "columns", "n"] and rows[0][:2] == ["no", "age"]
    headers, rows = _cells(tables["ttest"], "figures")
    assert any(r[0] == "confidence interval" and r[1].startswith("[") for r in rows)
    headers, rows = _cells(tables["quantiles"], "quantiles")
    assert headers[:2] == ["prob", "value"] and len(rows) == 3


def test_values_are_formatted_for_reading() -> None:
    assert format_value(None) == "—"
    assert format_value(True) == "yes"
    assert format_value(0.000012345) == "1.2345e-05"
    assert format_value(53.052478134110785) == "53.0525"
    assert format_value([1, 2.5]) == "1, 2.5"
