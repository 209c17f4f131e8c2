"""Statistics algorithms on three GBSG2 shares, gated at k=5, against pandas on the pool."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2

from medfed.algorithms.registry import algorithm_names, get_algorithm
from medfed.common.errors import BadRequest
from medfed.common.filter_text import parse_filter_text
from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally

GBSG2 = load_gbsg2()
WHERE = {"column": "age", "op": ">=", "value": 45}


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
    assert result["n"] == sum(n for n in local if n == 0 or n >= 5)
    assert result["suppressed_nodes"] == sum(1 for n in local if 0 < n < 5)


@pytest.mark.parametrize("name", ["mean", "variance", "summary"])
def test_moments_equal_pooled_pandas(name: str, stores: list[TableStore]) -> None:
    columns = ["age", "tsize", "pnodes", "time"]
    result = run_locally(name, {"columns": columns, "where": WHERE}, stores)
    pooled = GBSG2.loc[GBSG2.age >= 45, columns]
    assert result["rows"] == len(pooled)
    for column in columns:
        stats = result["columns"][column]
        assert stats["n"] == pooled[column].count()
        assert stats["incomplete"] is False
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


def test_moments_skip_a_column_a_node_holds_back(tmp_path: Path) -> None:
    frame = GBSG2.copy()
    frame["rare"] = frame["tsize"].where(frame["age"] >= 75)
    stores = _shares(frame, tmp_path)
    counts = [int(s.select(["rare"])["rare"].count()) for s in stores]
    assert any(0 < n < 5 for n in counts), counts
    result = run_locally("summary", {"columns": ["rare", "age"]}, stores)
    rare = result["columns"]["rare"]
    assert rare["incomplete"] is True
    assert rare["n"] == sum(n for n in counts if n >= 5)
    assert result["columns"]["age"]["incomplete"] is False


def test_histogram_equals_numpy(stores: list[TableStore]) -> None:
    bins = [30.0, 45.0, 55.0, 65.0]
    result = run_locally("histogram", {"column": "age", "bins": bins}, stores)
    counts, _ = np.histogram(GBSG2.age, bins=bins)
    assert result["counts"] == counts.tolist()
    assert result["incomplete"] == [False, False, False]
    below = int((GBSG2.age < 30).sum())
    assert result["below"] == below if not result["below_incomplete"] else result["below"] < below
    assert result["above"] == int((GBSG2.age > 65).sum())
    assert result["edges"] == bins


def test_histogram_last_bin_closed_and_suppression(stores: list[TableStore]) -> None:
    bins = [20, 40, 60, 80]  # max age is 80: it falls in the last bin
    exact = run_locally("histogram", {"column": "age", "bins": bins}, stores, min_cell_count=1)
    assert exact["counts"] == np.histogram(GBSG2.age, bins=bins)[0].tolist()
    assert exact["above"] == 0
    fine = list(range(20, 82, 2))
    gated = run_locally("histogram", {"column": "age", "bins": fine, "where": WHERE}, stores)
    pooled = np.histogram(GBSG2.age[GBSG2.age >= 45], bins=fine)[0]
    assert any(gated["incomplete"])
    for got, want, partial in zip(gated["counts"], pooled, gated["incomplete"], strict=True):
        assert got == want if not partial else got <= want


def test_crosstab_equals_pandas(stores: list[TableStore]) -> None:
    result = run_locally("crosstab", {"row": "tgrade", "col": "horTh"}, stores)
    expected = pd.crosstab(GBSG2.tgrade, GBSG2.horTh)
    assert result["row_levels"] == list(expected.index)
    assert result["col_levels"] == list(expected.columns)
    assert result["table"] == expected.to_numpy().tolist()
    assert not any(map(any, result["incomplete"]))
    assert result["hidden_cells"] == 0


def test_crosstab_with_levels_reports_full_grid(stores: list[TableStore]) -> None:
    params = {"row": "cens", "col": "menostat", "row_levels": [1, 0], "col_levels": ["Pre"]}
    result = run_locally("crosstab", params, stores)
    expected = pd.crosstab(GBSG2.cens, GBSG2.menostat)
    assert result["row_levels"] == ["1", "0"]
    pre = expected["Pre"].to_dict()
    assert result["table"] == [[pre[1]], [pre[0]]]


def test_crosstab_hides_rare_levels(stores: list[TableStore]) -> None:
    result = run_locally("crosstab", {"row": "pnodes", "col": "horTh"}, stores)
    expected = pd.crosstab(GBSG2.pnodes, GBSG2.horTh)
    assert result["hidden_cells"] > 0
    local_max: dict[str, int] = {}
    for store in stores:
        frame = store.select(["pnodes", "horTh"])
        sizes = frame.groupby(["pnodes", "horTh"])["pnodes"].transform("size")
        for level, n in zip(frame["pnodes"], sizes, strict=True):
            local_max[str(level)] = max(local_max.get(str(level), 0), int(n))
    for level in result["row_levels"]:
        assert local_max[level] >= 5  # named only where some node has a frequent pair
    assert "38" not in result["row_levels"]  # a single patient has 38 nodes
    for i, level in enumerate(result["row_levels"]):
        for j, col in enumerate(result["col_levels"]):
            want = int(expected.loc[int(level), col])
            got, partial = result["table"][i][j], result["incomplete"][i][j]
            assert got == want if not partial else got <= want


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
