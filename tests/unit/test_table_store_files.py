"""The file-backed TableStore (DuckDB views, nothing loaded) against the pandas reading.

Every file is also read the way medfed read tables before (``pandas.read_csv`` /
``read_parquet``, then ``_normalise`` and ``infer_columns``); the store over the file must
give the same schema and the same values, row ids being the file positions. Real data:
lifelines' GBSG2 and lung (integer columns with missing values), scikit-learn's diabetes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2, load_lung
from sklearn.datasets import load_diabetes

from medfed.common.filter_text import parse_filter_text
from medfed.node.stores.tables import TableStore, _normalise, infer_columns


def _reference(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        # DuckDB parses decimals correctly rounded; pandas' default parser can be an ulp off
        return _normalise(pd.read_csv(path, float_precision="round_trip"))
    return _normalise(pd.read_parquet(path, engine="pyarrow").reset_index(drop=True))


def _assert_same(path: Path) -> TableStore:
    expected = _reference(path)
    store = TableStore.open(path)
    assert store.columns == infer_columns(expected)
    assert store.row_count == len(expected)
    got = store.select(list(expected.columns))
    assert got.index.tolist() == list(range(len(expected)))
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), expected, check_dtype=False, check_exact=True
    )
    return store


EDGE = pd.DataFrame(
    {
        "i": [1, 2, 3, 4],
        "i_missing": [1.0, None, 3.0, 4.0],
        "i_nullable": pd.array([1, None, 3, 4], dtype="Int64"),
        "f": [1.5, np.nan, 2.0, -0.25],
        "b": [True, False, True, False],
        "b_missing": [True, None, False, True],
        "d": pd.to_datetime(pd.Series(["2020-01-01", "2021-06-30", None, "1999-12-31"])),
        "s": ["a", None, "c", "NA-like"],
        "codes": ["007", "8", "9", "10"],
        "tf": ["t", "f", "t", "f"],
        "empty": [None, None, None, None],
    }
)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("name", ["gbsg2", "lung", "diabetes", "edge"])
def test_file_store_equals_pandas_reading(tmp_path: Path, suffix: str, name: str) -> None:
    frame = {
        "gbsg2": load_gbsg2,
        "lung": load_lung,
        "diabetes": lambda: load_diabetes(as_frame=True).frame,
        "edge": lambda: EDGE,
    }[name]()
    path = tmp_path / f"{name}.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    _assert_same(path)


def test_parquet_with_a_stored_index(tmp_path: Path) -> None:
    frame = load_gbsg2().set_index("pnodes")
    path = tmp_path / "indexed.parquet"
    frame.to_parquet(path)
    store = _assert_same(path)
    assert "pnodes" not in {c.name for c in store.columns}


def test_empty_csv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n")
    store = _assert_same(path)
    assert store.count() == 0
    assert len(store.all_rows()) == 0


def test_all_rows_in_batches_is_the_file(tmp_path: Path) -> None:
    frame = pd.concat([load_gbsg2()] * 4, ignore_index=True)
    path = tmp_path / "g.parquet"
    frame.to_parquet(path, index=False)
    store = TableStore.open(path)
    batches = list(store.all_row_batches(rows=2048))
    assert len(batches) > 1
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), frame, check_dtype=False)


def test_aggregate_pushdown_matches_numpy(tmp_path: Path) -> None:
    frame = load_gbsg2()
    path = tmp_path / "g.parquet"
    frame.to_parquet(path, index=False)
    store = TableStore.open(path)
    n, total = store.aggregate(['count("age")', 'sum("age")'], parse_filter_text("tgrade != 'I'"))
    chosen = frame.loc[frame.tgrade != "I", "age"]
    assert (n, total) == (len(chosen), int(chosen.sum()))


def test_parallel_queries_on_a_file(tmp_path: Path) -> None:
    frame = load_gbsg2()
    path = tmp_path / "g.csv"
    frame.to_csv(path, index=False)
    store = TableStore.open(path)
    where = parse_filter_text("age >= 50 and tsize > 20")
    expected = frame.index[(frame.age >= 50) & (frame.tsize > 20)].to_numpy()
    failures: list[str] = []

    def work() -> None:
        for _ in range(5):
            ids = store.row_ids(where)
            if not np.array_equal(ids, expected):
                failures.append("row ids differ")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_csv_that_cannot_be_copied_is_refused_by_name_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV is served from a typed Parquet copy in the store's private folder; when the
    copy cannot be written (here the temporary folder is a file) the store refuses the
    dataset with a BadRequest naming it, and no folder is left behind."""
    import medfed.node.stores.tables as tables
    from medfed.common.errors import BadRequest

    path = tmp_path / "gbsg2.csv"
    load_gbsg2().to_csv(path, index=False)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setattr(tables.tempfile, "gettempdir", lambda: str(blocked))
    with pytest.raises(BadRequest, match=r"cannot copy gbsg2\.csv"):
        TableStore.open(path)
    assert blocked.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
        "gbsg2.csv",
        "not-a-folder",
    ]
    monkeypatch.undo()
    store = TableStore.open(path)  # the same file opens where the folder can be made
    assert store.row_count == 686
    store.close()
