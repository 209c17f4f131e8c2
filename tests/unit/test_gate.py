"""The disclosure gate's output rules: MinRows, Grid, Cells, plain-data checks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from medfed.algorithms.base import Cells, Grid, MinRows, Rule
from medfed.node.gate import GatePolicy, apply_gate

K5 = GatePolicy(min_cell_count=5)


@pytest.mark.parametrize("n", [0, 1, 3, 4])
def test_min_rows_withholds_few_rows_and_no_rows_alike(n: int) -> None:
    result = apply_gate({"n": n, "sum": 12.5}, [MinRows("n")], K5)
    assert result.status == "suppressed"
    assert result.payload is None
    assert result.reason is not None and "12.5" not in result.reason


@pytest.mark.parametrize("n", [5, 6, 1000])
def test_min_rows_passes_enough(n: int) -> None:
    result = apply_gate({"n": n, "sum": 1.0}, [MinRows("n")], K5)
    assert result.status == "ok"
    assert result.payload == {"n": n, "sum": 1.0}
    assert result.suppressed_cells == 0


@pytest.mark.parametrize(
    "table",
    [[[0, 1, 40], [10, 50, 7]], [[5, 5], [5, 4]], {"a": {"b": 2, "c": 9}}],
)
def test_grid_withholds_the_whole_grid_when_any_cell_is_small(table: Any) -> None:
    result = apply_gate({"table": table, "rows": 120}, [Grid("table")], K5)
    assert result.status == "suppressed"
    assert result.payload is None
    assert result.suppressed_cells == 0


def test_grid_passes_zero_and_large_cells_unchanged() -> None:
    output = {"table": [[0, 5, 40], [10, 0, 7]], "levels": ["a", "b"]}
    result = apply_gate(output, [Grid("table")], K5)
    assert result.status == "ok"
    assert result.payload == output


def test_cells_nested_lists_and_dicts() -> None:
    output = {
        "table": [[0, 1, 4, 5], [10, None, 2, 7]],
        "by_level": {"a": 3, "b": {"c": 8, "d": 1}},
        "other": 2,
    }
    result = apply_gate(output, [Cells("table"), Cells("by_level")], K5)
    assert result.status == "ok"
    assert result.payload == {
        "table": [[0, None, None, 5], [10, None, None, 7]],
        "by_level": {"a": None, "b": {"c": 8, "d": None}},
        "other": 2,  # not named by a rule
    }
    assert result.suppressed_cells == 5
    assert output["table"] == [[0, 1, 4, 5], [10, None, 2, 7]]  # input untouched


def test_cells_on_a_single_number_and_float_counts() -> None:
    result = apply_gate(
        {"below": 2, "above": 2.5, "mid": 9.0}, [Cells("below"), Cells("above"), Cells("mid")], K5
    )
    assert result.payload == {"below": None, "above": None, "mid": 9.0}
    assert result.suppressed_cells == 2


def test_min_rows_and_cells_together() -> None:
    rules: list[Rule] = [MinRows("rows"), Cells("n")]
    ok = apply_gate({"rows": 20, "n": {"a": 20, "b": 3}}, rules, K5)
    assert ok.payload == {"rows": 20, "n": {"a": 20, "b": None}}
    assert ok.suppressed_cells == 1
    gone = apply_gate({"rows": 4, "n": {"a": 4, "b": 3}}, rules, K5)
    assert gone.status == "suppressed" and gone.payload is None


def test_policy_threshold_one_suppresses_nothing() -> None:
    result = apply_gate({"n": 1, "c": [1, 2]}, [MinRows("n"), Cells("c")], GatePolicy(1))
    assert result.payload == {"n": 1, "c": [1, 2]}


def test_nan_and_inf_become_none() -> None:
    result = apply_gate(
        {"mean": math.nan, "x": [math.inf, -math.inf, 1.5], "n": 10}, [MinRows("n")], K5
    )
    assert result.payload == {"mean": None, "x": [None, None, 1.5], "n": 10}


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"n": np.int64(10)}, "output.n is numpy.int64, not plain JSON data"),
        ({"n": 10, "x": np.float64(1.0)}, "output.x is numpy.float64"),
        ({"n": 10, "rows": [{"id": (1, 2)}]}, r"output.rows\[0\].id is builtins.tuple"),
        ({"n": 10, "s": {1, 2}}, "output.s is builtins.set"),
        ({"n": 10, 3: "x"}, "has a key 3 that is not a string"),
        ({"n": 10, "b": b"bytes"}, "output.b is builtins.bytes"),
    ],
)
def test_refuses_data_that_is_not_plain(output: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_gate(output, [MinRows("n")], K5)


def test_refuses_a_dataframe() -> None:
    pd = pytest.importorskip("pandas")
    with pytest.raises(ValueError, match=r"pandas.*DataFrame"):
        apply_gate({"n": 10, "rows": pd.DataFrame({"a": [1]})}, [], K5)
    with pytest.raises(ValueError, match="output must be a dict"):
        apply_gate([1, 2], [], K5)  # type: ignore[arg-type]


def test_missing_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="names key 'n', which the output lacks"):
        apply_gate({"count": 3}, [MinRows("n")], K5)
    with pytest.raises(ValueError, match="names key 'table', which the output lacks"):
        apply_gate({"n": 30}, [Cells("table")], K5)


def test_counts_must_be_counts() -> None:
    with pytest.raises(ValueError, match=r"output.table\[1\] must be a count, not 'x'"):
        apply_gate({"table": [1, "x"]}, [Cells("table")], K5)
    with pytest.raises(ValueError, match="negative count"):
        apply_gate({"n": -3}, [MinRows("n")], K5)
    with pytest.raises(ValueError, match="must be a count, not True"):
        apply_gate({"n": True}, [MinRows("n")], K5)
    with pytest.raises(ValueError, match="row count 'n' is null"):
        apply_gate({"n": math.nan}, [MinRows("n")], K5)


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GatePolicy(min_cell_count=0)
