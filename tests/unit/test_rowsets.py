"""The row-set memory: subset and differencing rules over real data (lifelines' GBSG2).

Each test drives :class:`RecordingData` the way a local step does (``select``, ``count``,
``cells``) and asks :class:`RowSetMemory` to release; the attack tests check that the
pair or trio of row sets a differencing attack needs never both get out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2

from medfed.common.filters import parse_filter
from medfed.node.gate import RecordingData, RowSetMemory
from medfed.node.stores.tables import TableStore

K = 5
KEY = b"k" * 32


@pytest.fixture(scope="module")
def store() -> TableStore:
    return TableStore(load_gbsg2(), name="gbsg2.csv")


def memory(tmp_path: Path, store: TableStore) -> RowSetMemory:
    return RowSetMemory(tmp_path / "rowsets", "ab12" * 16, store.row_count)


def ask(mem: RowSetMemory, store: TableStore, where: dict[str, object] | None) -> bool:
    data = RecordingData(store, key=KEY)
    data.select(["age"], parse_filter(where))
    return mem.release(data.labelings, K).released


def test_select_returns_rows_indexed_by_their_id(store: TableStore) -> None:
    frame = store.select(["age"], parse_filter({"column": "age", "op": "<", "value": 40}))
    source = load_gbsg2()
    assert list(frame.index) == list(source.index[source["age"] < 40])
    assert frame["age"].tolist() == source.loc[source["age"] < 40, "age"].tolist()


def test_whole_dataset_and_broad_subgroups_are_released(tmp_path: Path, store: TableStore) -> None:
    mem = memory(tmp_path, store)
    assert ask(mem, store, None)
    assert mem.n_cells == 1
    assert ask(mem, store, {"column": "horTh", "op": "==", "value": "yes"})
    assert ask(mem, store, {"column": "age", "op": ">=", "value": 50})
    assert mem.n_cells == 4


def test_subset_rule_refuses_a_small_set_and_a_small_complement(
    tmp_path: Path, store: TableStore
) -> None:
    mem = memory(tmp_path, store)
    ages = load_gbsg2()["age"]
    small = int(ages.min()) + 1  # a handful of the youngest patients
    assert 0 < (ages < small).sum() < K
    assert not ask(mem, store, {"column": "age", "op": "<", "value": small})
    assert not ask(mem, store, {"column": "age", "op": ">=", "value": small})  # complement
    assert mem.n_cells == 1  # refusals change nothing


def test_empty_set_splits_nothing(tmp_path: Path, store: TableStore) -> None:
    mem = memory(tmp_path, store)
    assert ask(mem, store, {"column": "age", "op": ">", "value": 1000})
    assert mem.n_cells == 1


def test_differencing_by_one_patient_is_refused(tmp_path: Path, store: TableStore) -> None:
    """count/mean over F, then over F minus one patient: the second is refused."""
    mem = memory(tmp_path, store)
    source = load_gbsg2()
    assert ask(mem, store, {"column": "tsize", "op": ">=", "value": 20})
    # one patient singled out by a second condition that removes exactly one row
    target = source[source["tsize"] >= 20].sort_values("pnodes").iloc[-1]
    narrower = {
        "and": [
            {"column": "tsize", "op": ">=", "value": 20},
            {"column": "pnodes", "op": "<", "value": int(target["pnodes"])},
        ]
    }
    assert ((source["tsize"] >= 20) & (source["pnodes"] >= target["pnodes"])).sum() < K
    assert not ask(mem, store, narrower)


def test_three_set_tracker_is_refused(tmp_path: Path, store: TableStore) -> None:
    """A = age < 50, B = age < 50 or (one patient), refused even when built in steps."""
    mem = memory(tmp_path, store)
    source = load_gbsg2()
    assert ask(mem, store, {"column": "age", "op": "<", "value": 50})
    assert ask(mem, store, {"column": "menostat", "op": "==", "value": "Post"})
    # the tracker: (age < 50) OR (Post AND pnodes >= a high value) adds one or two rows
    high = int(source["pnodes"].sort_values().iloc[-2])
    tracker = {
        "or": [
            {"column": "age", "op": "<", "value": 50},
            {
                "and": [
                    {"column": "menostat", "op": "==", "value": "Post"},
                    {"column": "pnodes", "op": ">=", "value": high},
                ]
            },
        ]
    }
    added = (source["age"] >= 50) & (source["menostat"] == "Post") & (source["pnodes"] >= high)
    assert 0 < added.sum() < K
    assert not ask(mem, store, tracker)


def test_an_already_released_set_is_answered_again(tmp_path: Path, store: TableStore) -> None:
    mem = memory(tmp_path, store)
    where = {"column": "tgrade", "op": "==", "value": "II"}
    assert ask(mem, store, where)
    cells = mem.n_cells
    same_rows = {"column": "tgrade", "op": "in", "value": ["II"]}
    assert ask(mem, store, same_rows)
    assert mem.n_cells == cells


def test_grid_cells_are_remembered(tmp_path: Path, store: TableStore) -> None:
    """Bins [.., 50) then [.., 51): the second histogram would isolate age 50."""
    mem = memory(tmp_path, store)
    source = load_gbsg2()
    for edge, allowed in ((50, True), (51, (source["age"] == 50).sum() >= K)):
        data = RecordingData(store, key=KEY)
        frame = data.select(["age"])
        data.cells(pd.Series(np.where(frame["age"] < edge, "low", "high"), index=frame.index))
        assert mem.release(data.labelings, K).released == allowed
    one_year = int(source["age"].value_counts().loc[lambda s: s < K].index[0])
    data = RecordingData(store, key=KEY)
    frame = data.select(["age"])
    data.cells(pd.Series(np.where(frame["age"] < one_year, "lo", "hi"), index=frame.index))
    data.cells(pd.Series(np.where(frame["age"] <= one_year, "lo", "hi"), index=frame.index))
    assert not mem.release(data.labelings, K).released


def test_null_pattern_of_a_column_is_a_row_set(tmp_path: Path) -> None:
    """A column with 2 missing values: using it would release the complete cases."""
    frame = load_gbsg2()
    frame["extra"] = frame["age"].astype(float)
    frame.loc[[3, 7], "extra"] = np.nan
    store = TableStore(frame, name="gbsg2-missing.csv")
    mem = RowSetMemory(tmp_path, "cd34" * 16, store.row_count)
    data = RecordingData(store, key=KEY)
    data.select(["age"])
    assert mem.release(data.labelings, K).released
    data = RecordingData(store, key=KEY)
    data.select(["age", "extra"])
    assert not mem.release(data.labelings, K).released


def test_memory_is_durable_and_tied_to_the_dataset_version(
    tmp_path: Path, store: TableStore
) -> None:
    mem = memory(tmp_path, store)
    assert ask(mem, store, {"column": "age", "op": "<", "value": 50})
    assert ask(mem, store, {"column": "horTh", "op": "==", "value": "yes"})
    again = memory(tmp_path, store)  # a restarted node
    assert again.n_cells == mem.n_cells == 4
    source = load_gbsg2()
    small = int(source.loc[source["age"] < 50, "pnodes"].sort_values().iloc[-2])
    narrower = {
        "and": [
            {"column": "age", "op": "<", "value": 50},
            {"column": "pnodes", "op": "<", "value": small},
        ]
    }
    assert not ask(again, store, narrower)
    with pytest.raises(ValueError, match="another version"):
        RowSetMemory(tmp_path / "rowsets", "ab12" * 16, store.row_count - 1)


def test_count_records_its_rows_like_select(tmp_path: Path, store: TableStore) -> None:
    mem = memory(tmp_path, store)
    data = RecordingData(store, key=KEY)
    assert data.count(parse_filter({"column": "age", "op": "<", "value": 50})) == int(
        (load_gbsg2()["age"] < 50).sum()
    )
    assert mem.release(data.labelings, K).released
    assert mem.n_cells == 2
    assert len(data.fingerprints) == 1 and len(data.fingerprints[0]) == 32


def test_a_dataset_smaller_than_k_releases_nothing(tmp_path: Path) -> None:
    store = TableStore(load_gbsg2().head(K - 1), name="tiny.csv")
    mem = RowSetMemory(tmp_path, "ef56" * 16, store.row_count)
    data = RecordingData(store, key=KEY)
    data.select(["age"])
    decision = mem.release(data.labelings, K)
    assert not decision.released and decision.rule == "subset"


@pytest.mark.parametrize("cells,levels", [(3, 4), (50, 7), (2000, 3), (5000, 4)])
def test_a_grid_split_in_slices_equals_the_whole_array_split(cells: int, levels: int) -> None:
    from medfed.node.gate.rowsets import _compact, _split

    rng = np.random.default_rng(cells)
    key = rng.integers(0, cells, size=5000).astype(np.int32)
    labels = rng.integers(-1, levels, size=5000).astype(np.int32)  # -1: rows outside
    whole = _compact(key.astype(np.int64) * (levels + 1) + (labels.astype(np.int64) + 1))
    for chunk in (7, 1000, 1 << 22):
        got = _split(key, labels, chunk=chunk)
        assert got[0].dtype == np.int32
        assert got[0].tolist() == whole[0].tolist() and got[1].tolist() == whole[1].tolist()
