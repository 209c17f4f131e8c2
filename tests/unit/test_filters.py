"""The structured filter language: JSON and text forms, checks, SQL compilation."""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb
import pandas as pd
import pytest

from medfed.common.errors import BadRequest
from medfed.common.filter_text import parse_filter_text
from medfed.common.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    And,
    Condition,
    Or,
    check_filter,
    columns_in,
    compile_filter,
    filter_to_json,
    parse_filter,
)
from medfed.common.schemas import ColumnSchema, ColumnType

COLUMNS = [
    ColumnSchema(name="age", type=ColumnType.integer),
    ColumnSchema(name="tsize", type=ColumnType.float),
    ColumnSchema(name="horTh", type=ColumnType.string),
    ColumnSchema(name="flag", type=ColumnType.boolean),
    ColumnSchema(name="seen", type=ColumnType.date),
    ColumnSchema(name='we"ird', type=ColumnType.integer),
]


def test_parse_condition_and_combinators() -> None:
    raw = {
        "and": [
            {"column": "age", "op": ">=", "value": 50},
            {
                "or": [
                    {"column": "horTh", "op": "==", "value": "yes"},
                    {"column": "x", "op": "is null"},
                ]
            },
        ]
    }
    f = parse_filter(raw)
    assert isinstance(f, And)
    assert f.filters[0] == Condition(column="age", op=">=", value=50)
    assert isinstance(f.filters[1], Or)
    assert filter_to_json(f) == raw
    assert parse_filter(filter_to_json(f)) == f
    assert columns_in(f) == {"age", "horTh", "x"}


def test_parse_none_and_empty() -> None:
    assert parse_filter(None) is None
    assert parse_filter({}) is None


def test_values_keep_their_types() -> None:
    f = parse_filter({"column": "a", "op": "in", "value": [1, 2.5, "x", True]})
    assert isinstance(f, Condition)
    assert f.value == [1, 2.5, "x", True]
    assert isinstance(f.value, list)
    assert [type(v) for v in f.value] == [int, float, str, bool]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"column": "age", "op": "=>", "value": 1}, "unknown operator '=>'"),
        ({"and": []}, "'and' must be a non-empty list"),
        ({"or": {"column": "a"}}, "'or' must be a non-empty list"),
        ({"and": [{"column": "a", "op": "is null"}], "x": 1}, "'and' must be the only key"),
        ({"op": "==", "value": 1}, "needs 'column'"),
        ({"column": "a", "op": "=="}, "operator '==' needs a value"),
        ({"column": "a", "op": "is null", "value": 3}, "'is null' takes no value"),
        ({"column": "a", "op": "in", "value": []}, "'in' needs a non-empty list"),
        ({"column": "a", "op": "not in", "value": 3}, "'not in' needs a non-empty list"),
        ({"column": "a", "op": "<", "value": [1, 2]}, "takes one value, not a list"),
        ({"column": "a", "op": "<", "value": {"x": 1}}, "must be a string, number or boolean"),
        ({"column": "a", "op": "<", "value": float("nan")}, "must be finite"),
        ({"column": "a", "op": "<", "value": 1, "extra": 2}, "unknown key 'extra'"),
        ([1, 2], "expected an object, got list"),
        ("age > 3", "expected an object, got str"),
    ],
)
def test_parse_errors_name_the_problem(raw: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_filter(raw)


def test_limits_on_depth_and_size() -> None:
    leaf: dict[str, Any] = {"column": "a", "op": "is null"}
    deep = leaf
    for _ in range(MAX_DEPTH):
        deep = {"and": [deep]}
    with pytest.raises(BadRequest, match="nested deeper than"):
        parse_filter(deep)
    wide = {"or": [leaf] * (MAX_CONDITIONS + 1)}
    with pytest.raises(BadRequest, match=f"more than {MAX_CONDITIONS} conditions"):
        parse_filter(wide)
    assert parse_filter({"or": [leaf] * MAX_CONDITIONS}) is not None


def test_text_parser_precedence_and_parens() -> None:
    f = parse_filter_text("age >= 50 and (horTh == 'yes' or tsize > 20)")
    assert filter_to_json(f) == {
        "and": [
            {"column": "age", "op": ">=", "value": 50},
            {
                "or": [
                    {"column": "horTh", "op": "==", "value": "yes"},
                    {"column": "tsize", "op": ">", "value": 20},
                ]
            },
        ]
    }
    # AND binds tighter than OR
    g = parse_filter_text('a == 1 or b == "x" and c != 2.5')
    assert filter_to_json(g) == {
        "or": [
            {"column": "a", "op": "==", "value": 1},
            {
                "and": [
                    {"column": "b", "op": "==", "value": "x"},
                    {"column": "c", "op": "!=", "value": 2.5},
                ]
            },
        ]
    }


def test_text_parser_forms() -> None:
    assert parse_filter_text("grade in (1, 2)") == Condition(column="grade", op="in", value=[1, 2])
    assert parse_filter_text("x is null") == Condition(column="x", op="is null")
    assert parse_filter_text("x IS NOT NULL") == Condition(column="x", op="is not null")
    assert parse_filter_text("t not in ('a', \"b\")") == Condition(
        column="t", op="not in", value=["a", "b"]
    )
    assert parse_filter_text("flag == true") == Condition(column="flag", op="==", value=True)
    assert parse_filter_text("x > -1.5e2") == Condition(column="x", op=">", value=-150.0)
    assert parse_filter_text("`my col` <= 3") == Condition(column="my col", op="<=", value=3)
    assert parse_filter_text("((x < 1))") == Condition(column="x", op="<", value=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age => 50", "unexpected '=' at position 5"),
        ("age = 50", "position 5 \\(use '=='\\)"),
        ("(age > 1", "expected '\\)' at position 9"),
        ("age >", "expected a value .* at position 6"),
        ("age in 1", "expected '\\(' to open a list of values at position 8"),
        ("age > 1 and", "expected a column name or '\\(' at position 12"),
        ("age > 'abc", "unexpected ''' at position 7 \\(unclosed quote\\)"),
        ("age 50", "expected an operator .* at position 5"),
        ("age > 1 age", "expected 'and', 'or' or the end at position 9"),
        ("x is 3", "expected 'null' at position 6"),
        ("(" * 12 + "x > 1" + ")" * 12, "nested deeper than"),
    ],
)
def test_text_errors_name_the_position(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_filter_text(text)


def test_check_unknown_column_and_types() -> None:
    cases = [
        ({"column": "agee", "op": ">", "value": 1}, "unknown column 'agee'"),
        ({"column": "age", "op": ">", "value": "50"}, "column 'age' is integer, but value '50'"),
        ({"column": "age", "op": "==", "value": True}, "column 'age' is integer, but value True"),
        ({"column": "horTh", "op": "==", "value": 1}, "column 'horTh' is string, but value 1"),
        ({"column": "flag", "op": "==", "value": 1}, "column 'flag' is boolean, but value 1"),
        ({"column": "flag", "op": "<", "value": True}, "operator '<' does not apply to boolean"),
        ({"column": "seen", "op": ">", "value": "soon"}, "column 'seen' is date, but value 'soon'"),
        ({"column": "horTh", "op": "in", "value": ["a", 2]}, "value 2 is not a string"),
    ]
    for raw, message in cases:
        f = parse_filter(raw)
        assert f is not None
        with pytest.raises(BadRequest, match=message):
            check_filter(f, COLUMNS)
    ok = parse_filter({"column": "tsize", "op": ">", "value": 3})  # int value, float column
    assert ok is not None
    check_filter(ok, COLUMNS)


def test_compile_emits_quoted_identifiers_and_parameters() -> None:
    f = parse_filter_text("age >= 50 and (horTh in ('yes', 'no') or tsize is null)")
    sql, params = compile_filter(f, COLUMNS)
    assert sql == '(("age" >= ?) AND (("horTh" IN (?, ?)) OR ("tsize" IS NULL)))'
    assert params == [50, "yes", "no"]
    sql, params = compile_filter(parse_filter_text('`we"ird` != 1'), COLUMNS)
    assert sql == '("we""ird" <> ?)'
    sql, params = compile_filter(parse_filter_text("seen >= '2020-01-31'"), COLUMNS)
    assert params == [date(2020, 1, 31)]


def _run(frame: pd.DataFrame, sql: str, params: list[Any]) -> pd.DataFrame:
    con = duckdb.connect(":memory:")
    con.register("t", frame)
    result: pd.DataFrame = con.execute(f"SELECT * FROM t WHERE {sql}", params).df()
    return result


def test_injection_attempts_stay_harmless() -> None:
    bad_column = 'x"; DROP TABLE t; --'
    f = parse_filter({"column": bad_column, "op": "==", "value": 1})
    assert f is not None
    with pytest.raises(BadRequest, match="unknown column"):
        compile_filter(f, COLUMNS)

    frame = pd.DataFrame({"horTh": ["yes", "no", "'; DROP TABLE"], "age": [1, 2, 3]})
    columns = [
        ColumnSchema(name="horTh", type=ColumnType.string),
        ColumnSchema(name="age", type=ColumnType.integer),
    ]
    sneaky = parse_filter_text('horTh == "\'; DROP TABLE t; --"')
    sql, params = compile_filter(sneaky, columns)
    assert "DROP" not in sql
    assert params == ["'; DROP TABLE t; --"]
    assert _run(frame, sql, params).empty
    exact = parse_filter_text('horTh == "\'; DROP TABLE"')
    sql, params = compile_filter(exact, columns)
    assert _run(frame, sql, params)["age"].tolist() == [3]


def test_compiled_filter_selects_rows() -> None:
    frame = pd.DataFrame({"age": [30, 55, 70, None], "horTh": ["yes", "no", "yes", "no"]})
    columns = [
        ColumnSchema(name="age", type=ColumnType.float),
        ColumnSchema(name="horTh", type=ColumnType.string),
    ]
    f = parse_filter_text("age >= 50 and horTh == 'yes' or age is null")
    sql, params = compile_filter(f, columns)
    got = _run(frame, sql, params)
    assert got["horTh"].tolist() == ["yes", "no"]
    assert got["age"].iloc[0] == 70
