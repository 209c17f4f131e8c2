"""Statistics algorithms on three GBSG2 shares, gated at k=5, against pandas on the pool."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2

from medfed.algorithms.base import LocalContext
from medfed.algorithms.registry import algorithm_names, get_algorithm
from medfed.common.errors import BadRequest
from medfed.common.filter_text import parse_filter_text
from medfed.node.gate import GatePolicy, GateResult, RecordingData, RowSetMemory, apply_gate
from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally

GBSG2 = load_gbsg2()
WHERE = {"column": "age", "op": ">=", "value": 45}
K = 5


def gated(name: str, raw: dict[str, Any], store: TableStore, k: int = K) -> GateResult:
    """One node's local step through the real gate's output rules, as the node runs it."""
    algorithm = get_algorithm(name)
    params = algorithm.parse_params(raw)
    output = algorithm.local(params, LocalContext(data=store, min_cell_count=k))
    return apply_gate(output, algorithm.disclosure(params), GatePolicy(min_cell_count=k))


def released(name: str, raw: dict[str, Any], store: TableStore, memory: RowSetMemory) -> bool:
    """One run at a node with row-set memory: output rules, then the row-set rules."""
    algorithm = get_algorithm(name)
    params = algorithm.parse_params(raw)
    data = RecordingData(store, key=b"k" * 32)
    output = algorithm.local(params, LocalContext(data=data, recorder=data))
    if (
        apply_gate(output, algorithm.disclosure(params), GatePolicy(min_cell_count=K)).status
        != "ok"
    ):
        return False
    return memory.release(data.labelings, K).released


def _shares(frame: pd.DataFrame, tmp_path: Path, n: int = 3) -> list[TableStore]:
    order = np.random.default_rng(7).permutation(len(frame))
    stores = []
    for i, part in enumerate(np.array_split(order, n)):
        path = tmp_path / f"share{i}.csv"
        frame.iloc[np.sort(part)].to_csv(path, index=False)
        stores.append(TableStore.open(path))
    return stores


@pytest.fixture
def stores(tmp_path: Path) -> list[TableStore]:
    return _shares(GBSG2, tmp_path)


def test_registry_names_every_algorithm() -> None:
    names = algorithm_names()
    assert {"count", "mean", "variance", "summary", "histogram", "crosstab", "noop"} <= set(names)
    assert all(get_algorithm(name).name == name for name in names)
    with pytest.raises(BadRequest, match=r"unknown algorithm 'kmeans' \(known: [a-z_, ]*count, "):
        get_algorithm("kmeans")


def test_count(stores: list[TableStore]) -> None:
    assert run_locally("count", {}, stores) == {"n": len(GBSG2), "suppressed_nodes": 0}
    result = run_locally("count", {"where": WHERE}, stores)
    assert result == {"n": int((GBSG2.age >= 45).sum()), "suppressed_nodes": 0}


def test_count_suppresses_small_nodes(stores: list[TableStore]) -> None:
    where = parse_filter_text("age < 30")
    local = [s.count(where) for s in stores]
    assert any(0 < n < 5 for n in local), local
    result = run_locally("count", {"where": {"column": "age", "op": "<", "value": 30}}, stores)
    # no rows and a few rows look alike: both are withheld
    assert result["n"] == sum(n for n in local if n >= 5)
    assert result["suppressed_nodes"] == sum(1 for n in local if n < 5)


@pytest.mark.parametrize("name", ["mean", "variance", "summary"])
def test_moments_equal_pooled_pandas(name: str, stores: list[TableStore]) -> None:
    columns = ["age", "tsize", "pnodes", "time"]
    result = run_locally(name, {"columns": columns, "where": WHERE}, stores)
    pooled = GBSG2.loc[GBSG2.age >= 45, columns]
    assert result["rows"] == len(pooled) and result["suppressed_nodes"] == 0
    for column in columns:
        stats = result["columns"][column]
        assert stats["n"] == pooled[column].count()
        assert "incomplete" not in stats
        np.testing.assert_allclose(stats["mean"], pooled[column].mean(), rtol=1e-12)
        if name == "mean":
            assert "variance" not in stats
            continue
        np.testing.assert_allclose(stats["variance"], pooled[column].var(), rtol=1e-12)
        np.testing.assert_allclose(stats["std"], pooled[column].std(), rtol=1e-12)
        if name == "summary":
            low, high = stats["min_bound"], stats["max_bound"]
            assert low <= pooled[column].min() and high >= pooled[column].max()
            for bound in (low, high):
                assert len(Decimal(repr(bound)).normalize().as_tuple().digits) <= 2


def test_moments_withhold_a_node_with_a_small_column(tmp_path: Path) -> None:
    frame = GBSG2.copy()
    frame["rare"] = frame["tsize"].where(frame["age"] >= 72)
    stores = _shares(frame, tmp_path)
    counts = [int(s.select(["rare"])["rare"].count()) for s in stores]
    small = [0 < n < K for n in counts]
    assert any(small) and not all(small), counts
    for store, withheld in zip(stores, small, strict=True):
        answer = gated("summary", {"columns": ["rare", "age"]}, store)
        assert (answer.status, answer.payload is None) == (
            ("suppressed", True) if withheld else ("ok", False)
        )
    result = run_locally("summary", {"columns": ["rare", "age"]}, stores)
    assert result["suppressed_nodes"] == sum(small)
    kept = pd.concat(
        [s.select(["rare", "age"]) for s, w in zip(stores, small, strict=True) if not w]
    )
    assert result["rows"] == len(kept)
    for column in ("rare", "age"):
        stats = result["columns"][column]
        assert set(stats) == {"n", "mean", "variance", "std", "min_bound", "max_bound"}
        assert stats["n"] == kept[column].count()
        np.testing.assert_allclose(stats["mean"], kept[column].mean(), rtol=1e-12)
        np.testing.assert_allclose(stats["variance"], kept[column].var(), rtol=1e-12)
    summary = get_algorithm("summary").Result.model_validate(result).summary()
    assert f"({sum(small)} node(s) withheld theirs)" in summary


def test_histogram_equals_numpy(stores: list[TableStore]) -> None:
    bins = [20.0, 45.0, 55.0, 65.0, 90.0]
    result = run_locally("histogram", {"column": "age", "bins": bins}, stores)
    counts, _ = np.histogram(GBSG2.age, bins=bins)
    assert result == {
        "edges": bins,
        "counts": counts.tolist(),
        "below": 0,
        "above": 0,
        "suppressed_nodes": 0,
    }
    tails = run_locally("histogram", {"column": "age", "bins": [40, 50, 60]}, stores)
    assert tails["counts"] == np.histogram(GBSG2.age, bins=[40, 50, 60])[0].tolist()
    assert (tails["below"], tails["above"]) == ((GBSG2.age < 40).sum(), (GBSG2.age > 60).sum())


def test_histogram_last_bin_closed_and_a_small_bin_withholds_the_node(
    stores: list[TableStore], tmp_path: Path
) -> None:
    bins = [20, 40, 60, 80]  # max age is 80: it falls in the last bin
    exact = run_locally("histogram", {"column": "age", "bins": bins}, stores, min_cell_count=1)
    assert exact["counts"] == np.histogram(GBSG2.age, bins=bins)[0].tolist()
    assert exact["above"] == 0
    # a fourth node whose [55, 65) bin holds two patients: its whole answer is withheld
    extra = GBSG2[(GBSG2.age >= 45) & (GBSG2.age < 55)].head(10)
    extra = pd.concat([extra, GBSG2[(GBSG2.age >= 55) & (GBSG2.age < 65)].head(2)])
    small = TableStore(extra.reset_index(drop=True), name="small")
    params = {"column": "age", "bins": [20, 45, 55, 65, 90]}
    answer = gated("histogram", params, small)
    assert answer.status == "suppressed" and answer.payload is None
    result = run_locally("histogram", params, [*stores, small])
    assert result["counts"] == np.histogram(GBSG2.age, bins=params["bins"])[0].tolist()
    assert result["suppressed_nodes"] == 1
    assert "incomplete" not in json.dumps(result)
    model = get_algorithm("histogram").Result.model_validate(result)
    assert "(1 node(s) withheld theirs)" in model.summary()
    assert "suppressed somewhere" not in model.summary()
    model.plot(str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_histogram_declares_its_bins_to_the_row_set_memory(tmp_path: Path) -> None:
    """Bins [0, 45) then [0, 55): together they would isolate the two patients aged 50."""
    gappy = TableStore(pd.DataFrame({"age": [40.0, 50.0, 60.0, None, 10.0, 99.0]}), name="g")
    data = RecordingData(gappy, key=b"k" * 32)
    params = get_algorithm("histogram").parse_params({"column": "age", "bins": [20, 45, 90]})
    get_algorithm("histogram").local(params, LocalContext(data=data, recorder=data))
    cells = data.labelings[-1]  # bin 0, bin 1, bin 1, no cell (null), below, above
    assert cells[1] == cells[2] and cells[3] == -1
    assert len({cells[0], cells[1], cells[3], cells[4], cells[5]}) == 5
    ages = [40.0] * 10 + [50.0] * 2 + [60.0] * 10 + [10.0] * 5 + [99.0] * 5
    store = TableStore(pd.DataFrame({"age": ages}), name="ages")
    memory = RowSetMemory(tmp_path, "ab" * 32, store.row_count)
    for bins, allowed in (([0, 45, 100], True), ([0, 55, 100], False), ([0, 45, 100], True)):
        assert released("histogram", {"column": "age", "bins": bins}, store, memory) is allowed


def test_crosstab_equals_pandas(stores: list[TableStore]) -> None:
    result = run_locally("crosstab", {"row": "tgrade", "col": "horTh"}, stores)
    expected = pd.crosstab(GBSG2.tgrade, GBSG2.horTh)
    assert result["row_levels"] == list(expected.index)
    assert result["col_levels"] == list(expected.columns)
    assert result["table"] == expected.to_numpy().tolist()
    assert set(result) == {"row_levels", "col_levels", "table", "suppressed_nodes"}
    assert result["suppressed_nodes"] == 0


def test_crosstab_with_levels_reports_full_grid(stores: list[TableStore]) -> None:
    params = {"row": "cens", "col": "menostat", "row_levels": [1, 0], "col_levels": ["Pre"]}
    result = run_locally("crosstab", params, stores)
    expected = pd.crosstab(GBSG2.cens, GBSG2.menostat)
    assert result["row_levels"] == ["1", "0"]
    pre = expected["Pre"].to_dict()
    assert result["table"] == [[pre[1]], [pre[0]]]


def test_crosstab_withholds_a_node_with_one_small_cell(stores: list[TableStore]) -> None:
    # a fourth node: tgrade x horTh with one cell of 2 (and a level no other node has)
    rows = [("II", "yes")] * 6 + [("II", "no")] * 7 + [("IV", "no")] * 2
    small = TableStore(pd.DataFrame(rows, columns=["tgrade", "horTh"]), name="small")
    answer = gated("crosstab", {"row": "tgrade", "col": "horTh"}, small)
    assert answer.status == "suppressed" and answer.payload is None
    result = run_locally("crosstab", {"row": "tgrade", "col": "horTh"}, [*stores, small])
    expected = pd.crosstab(GBSG2.tgrade, GBSG2.horTh)
    assert result["table"] == expected.to_numpy().tolist()
    assert result["row_levels"] == ["I", "II", "III"] and result["suppressed_nodes"] == 1
    text = get_algorithm("crosstab").Result.model_validate(result).summary()
    assert "IV" not in json.dumps(result) + text
    assert "(1 node(s) withheld theirs)" in text and "*" not in text
    # every node has a rare pnodes level (one patient has 38 nodes): no table at all
    rare = run_locally("crosstab", {"row": "pnodes", "col": "horTh"}, stores)
    assert rare == {"row_levels": [], "col_levels": [], "table": [], "suppressed_nodes": 3}


def test_noop(stores: list[TableStore]) -> None:
    assert run_locally("noop", {}, stores) == {"nodes": 3}


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mean", {"columns": ["agee"]}, "mean: unknown column 'agee' in dataset 'share0.csv'"),
        ("variance", {"columns": ["horTh"]}, "variance: column 'horTh' is string, not numeric"),
        ("mean", {"columns": []}, "mean: parameter columns: List should have at least 1"),
        ("mean", {"columns": ["age", "age"]}, "a column is named twice"),
        ("summary", {"column": "age"}, "summary: parameter columns: Field required"),
        ("histogram", {"column": "age", "bins": [1, 3, 2]}, "strictly increasing \\(3.0 then 2.0"),
        (
            "histogram",
            {"column": "age", "bins": [1]},
            "parameter bins: List should have at least 2",
        ),
        ("histogram", {"column": "tgrade", "bins": [1, 2]}, "column 'tgrade' is string"),
        ("histogram", {"column": "age", "bins": [1, float("inf")]}, "not a finite number"),
        ("crosstab", {"row": "tgrade", "col": "tgrade"}, "row and col are the same column"),
        ("crosstab", {"row": "tgrade", "col": "nope"}, "crosstab: unknown column 'nope'"),
        ("count", {"where": {"column": "age", "op": "=>", "value": 1}}, "unknown operator '=>'"),
        ("count", {"where": {"and": []}}, "filter: 'and' must be a non-empty list"),
        ("count", {"where": {"column": "agee", "op": ">", "value": 1}}, "unknown column 'agee'"),
        ("count", {"where": {"column": "age", "op": ">", "value": "x"}}, "column 'age' is integer"),
        ("count", {"wher": {}}, "count: parameter wher: Extra inputs are not permitted"),
        ("noop", {"x": 1}, "noop: parameter x: Extra inputs"),
    ],
)
def test_validation_errors_name_the_problem(
    name: str, params: dict[str, Any], message: str, stores: list[TableStore]
) -> None:
    with pytest.raises(BadRequest, match=message):
        run_locally(name, params, stores)


def test_params_normalise_the_filter() -> None:
    algorithm = get_algorithm("count")
    params = algorithm.parse_params({"where": {"and": [WHERE]}})
    assert params.model_dump() == {"where": {"and": [WHERE]}}
    assert algorithm.parse_params(params.model_dump()) == params
