"""TableStore over CSV and Parquet: schema inference and filtered queries against pandas."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2

from medfed.common.errors import BadRequest
from medfed.common.filter_text import parse_filter_text
from medfed.common.schemas import ColumnType
from medfed.node.stores.tables import TableStore

GBSG2 = load_gbsg2()


@pytest.fixture(params=["csv", "parquet"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TableStore:
    path = tmp_path / f"gbsg2.{request.param}"
    if request.param == "csv":
        GBSG2.to_csv(path, index=False)
    else:
        GBSG2.to_parquet(path, index=False)
    return TableStore.open(path)


def test_schema_inference_on_gbsg2(store: TableStore) -> None:
    types = {c.name: c.type for c in store.columns}
    assert list(types) == list(GBSG2.columns)
    assert types["age"] == ColumnType.integer
    assert types["horTh"] == ColumnType.string
    assert types["tgrade"] == ColumnType.string
    assert store.row_count == len(GBSG2)


def test_schema_inference_of_every_type(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "i": [1, 2, 3],
            "f": [1.5, None, 2.0],
            "b": [True, False, True],
            "d": pd.to_datetime(pd.Series(["2020-01-01", "2021-06-30", None])),
            "s": ["a", None, "c"],
        }
    )
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    store = TableStore.open(path)
    assert [(c.name, c.type) for c in store.columns] == [
        ("i", ColumnType.integer),
        ("f", ColumnType.float),
        ("b", ColumnType.boolean),
        ("d", ColumnType.date),
        ("s", ColumnType.string),
    ]
    assert store.count(parse_filter_text("d >= '2021-01-01'")) == 1
    assert store.count(parse_filter_text("b == true")) == 2
    assert store.count(parse_filter_text("s is null")) == 1
    assert store.count(parse_filter_text("f > 1")) == 2


@pytest.mark.parametrize(
    ("text", "mask"),
    [
        ("age >= 50", GBSG2.age >= 50),
        (
            "age >= 50 and (horTh == 'yes' or tsize > 20)",
            (GBSG2.age >= 50) & ((GBSG2.horTh == "yes") | (GBSG2.tsize > 20)),
        ),
        ("tgrade in ('I', 'III')", GBSG2.tgrade.isin(["I", "III"])),
        ("tgrade not in ('II') and pnodes <= 3", ~GBSG2.tgrade.isin(["II"]) & (GBSG2.pnodes <= 3)),
        ("menostat != 'Post' or cens == 1", (GBSG2.menostat != "Post") | (GBSG2.cens == 1)),
        ("tsize < 12.5", GBSG2.tsize < 12.5),
        ("horTh == 'maybe'", GBSG2.horTh == "maybe"),
        ("age is not null", GBSG2.age.notna()),
    ],
)
def test_select_and_count_match_pandas(store: TableStore, text: str, mask: pd.Series) -> None:
    where = parse_filter_text(text)
    expected = GBSG2.loc[mask, ["age", "tsize", "horTh"]]  # indexed by row id (file position)
    got = store.select(["age", "tsize", "horTh"], where)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert store.count(where) == int(mask.sum())


def test_select_without_filter_and_order(store: TableStore) -> None:
    got = store.select(["time", "age"])
    np.testing.assert_array_equal(got["time"].to_numpy(), GBSG2["time"].to_numpy())
    assert list(got.columns) == ["time", "age"]
    assert store.count() == len(GBSG2)
    assert len(store.select([], parse_filter_text("age > 60"))) == int((GBSG2.age > 60).sum())


def test_unknown_columns_are_refused(store: TableStore) -> None:
    with pytest.raises(BadRequest, match="select: unknown column 'agee'"):
        store.select(["age", "agee"])
    with pytest.raises(BadRequest, match="filter: unknown column 'agee'"):
        store.count(parse_filter_text("agee > 1"))
    with pytest.raises(BadRequest, match="column 'age' is integer, but value 'old'"):
        store.count(parse_filter_text("age == 'old'"))


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="file not found"):
        TableStore.open(tmp_path / "missing.csv")
    other = tmp_path / "data.xlsx"
    other.write_text("x")
    with pytest.raises(BadRequest, match=r"unsupported file type '\.xlsx'"):
        TableStore.open(other)
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(BadRequest, match=r"cannot read broken\.parquet"):
        TableStore.open(broken)


def test_concurrent_queries(store: TableStore) -> None:
    where = parse_filter_text("age >= 50")
    expected = int((GBSG2.age >= 50).sum())
    results: list[int] = []

    def work() -> None:
        for _ in range(20):
            results.append(store.count(where))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 160
