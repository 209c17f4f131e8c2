"""Quantiles, covariance, grouped summaries, Welch t-test and chi-square on three shares.

GBSG2, NCCTG lung (rows with missing values dropped) and the raw diabetes data from
scikit-learn, each split across three nodes; every federated result is compared with
numpy / pandas / scipy on the pooled rows, and every gate rule with a case it refuses.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2, load_lung
from scipy import stats
from sklearn.datasets import load_diabetes

from medfed.algorithms.base import LocalContext, NextRound, NodeOutput
from medfed.algorithms.registry import get_algorithm
from medfed.common.errors import BadRequest
from medfed.node.gate import GatePolicy, GateResult, apply_gate
from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally

GBSG2 = load_gbsg2()
LUNG_RAW = load_lung()
LUNG = LUNG_RAW.dropna().reset_index(drop=True)
DIABETES = load_diabetes(scaled=False, as_frame=True).frame
DATA = {"gbsg2": GBSG2, "lung": LUNG, "diabetes": DIABETES}
NUMERIC = {
    "gbsg2": ["age", "tsize", "pnodes", "progrec", "estrec", "time"],
    "lung": ["age", "ph.karno", "meal.cal", "wt.loss", "time"],
    "diabetes": ["age", "bmi", "bp", "s1", "s5", "target"],
}
PROBS = [0.25, 0.5, 0.75]


def split(frame: pd.DataFrame, n: int = 3, seed: int = 7) -> list[TableStore]:
    order = np.random.default_rng(seed).permutation(len(frame))
    return [
        TableStore(frame.iloc[np.sort(part)].reset_index(drop=True), name=f"share{i}")
        for i, part in enumerate(np.array_split(order, n))
    ]


STORES = {name: split(frame) for name, frame in DATA.items()}
K = 5


def gated(name: str, raw: dict[str, Any], store: TableStore, **policy: Any) -> GateResult:
    """One node's local step through the real gate's output rules, as the node runs it."""
    algorithm = get_algorithm(name)
    params = algorithm.parse_params(raw)
    output = algorithm.local(params, LocalContext(data=store, **policy))
    k = policy.get("min_cell_count", K)
    return apply_gate(output, algorithm.disclosure(params), GatePolicy(min_cell_count=k))


class Cells:
    """A stand-in for the node's row-set memory that keeps the cells a step declares."""

    def __init__(self) -> None:
        self.labels: list[pd.Series] = []

    def cells(self, labels: pd.Series) -> None:
        self.labels.append(labels)

    def magnitudes(self, label: str, values: object) -> None:
        """Dominance declarations are not what these tests look at."""

    def magnitude(self, label: str, figures: object) -> None:
        """Nor are the figures of a sum added batch by batch."""

    def grid(self) -> CellsGrid:
        """A grid declared batch by batch: one labelling of all its batches at close."""
        return CellsGrid(self)


class CellsGrid:
    def __init__(self, owner: Cells) -> None:
        self.owner = owner
        self.parts: list[pd.Series] = []

    def add(self, labels: pd.Series) -> None:
        self.parts.append(labels)

    def close(self) -> None:
        self.owner.cells(pd.concat(self.parts))


def declared(name: str, raw: dict[str, Any], store: TableStore) -> pd.Series:
    """The one grid a local step declares, by row id."""
    algorithm, recorder = get_algorithm(name), Cells()
    ctx = LocalContext(data=store, recorder=recorder, min_rows=1)
    algorithm.local(algorithm.parse_params(raw), ctx)
    (labels,) = recorder.labels
    return labels


@pytest.mark.parametrize("name", list(DATA))
def test_quantiles_are_numpy_quantiles_exactly(name: str) -> None:
    # at k = 1 no value is an individual's to protect: the search itself is exact
    for column in NUMERIC[name]:
        params = {"column": column, "probs": PROBS}
        result = run_locally("quantiles", params, STORES[name], min_cell_count=1)
        values = DATA[name][column]
        assert result["n"] == len(values)
        assert all(q["exact"] for q in result["quantiles"]), result["quantiles"]
        got = [q["value"] for q in result["quantiles"]]
        assert got == np.quantile(values, PROBS).tolist()  # bit for bit
        np.testing.assert_allclose(got, values.quantile(PROBS), rtol=1e-14)


def shared(values: pd.Series, prob: float) -> int:
    """How many rows share the order statistics behind numpy's quantile (the fewest)."""
    ordered = np.sort(values.to_numpy(dtype=float))
    h = (len(ordered) - 1) * prob
    used = {math.floor(h), math.ceil(h)}
    return min(int((ordered == ordered[j]).sum()) for j in used)


@pytest.mark.parametrize("name", list(DATA))
def test_quantiles_release_a_value_only_when_k_rows_share_it(name: str) -> None:
    # default policy (k = 5): a quantile whose order statistics at least 5 pooled rows share
    # equals numpy bit for bit; any other is a bin of at least 5 rows that holds it
    for column in NUMERIC[name]:
        result = run_locally("quantiles", {"column": column, "probs": PROBS}, STORES[name])
        values = DATA[name][column]
        truth = np.quantile(values, PROBS)
        for q, want, prob in zip(result["quantiles"], truth, PROBS, strict=True):
            if shared(values, prob) >= K:
                assert q["exact"] and q["value"] == want and not q["coarsened"]
                continue
            assert q["coarsened"] and q["value"] is None and not q["exact"]
            assert q["lower"] <= want <= q["upper"]
            inside = values[(values >= q["lower"]) & (values <= q["upper"])]
            assert len(inside) >= K  # the bin released is never one patient's value


def test_quantiles_of_unique_values_are_bins_that_bound_them() -> None:
    # GBSG2 survival times are nearly all distinct days: every quartile becomes a bin
    result = run_locally("quantiles", {"column": "time"}, STORES["gbsg2"])
    truth = np.quantile(GBSG2.time, PROBS)
    for q, want in zip(result["quantiles"], truth, strict=True):
        assert q["coarsened"] and q["lower"] <= want <= q["upper"]
        assert q["upper"] - q["lower"] <= 100  # the rule's effect, stated as the bin width
    summary = get_algorithm("quantiles").Result.model_validate(result).summary()
    assert "no" in summary


def test_quantiles_with_a_filter_and_many_probs_at_k1() -> None:
    probs = [0.01, 0.1, 1 / 3, 0.5, 0.9, 0.99]
    where = {"column": "tgrade", "op": "!=", "value": "I"}
    params = {"column": "time", "probs": probs, "where": where}
    result = run_locally("quantiles", params, STORES["gbsg2"], min_cell_count=1)
    pooled = GBSG2.loc[GBSG2.tgrade != "I", "time"]
    assert [q["value"] for q in result["quantiles"]] == np.quantile(pooled, probs).tolist()


def test_quantiles_in_the_tails_give_a_bound_not_a_value() -> None:
    probs = [0.002, 0.5, 0.998]
    result = run_locally("quantiles", {"column": "tsize", "probs": probs}, STORES["gbsg2"])
    low, median, high = result["quantiles"]
    truth = np.quantile(GBSG2.tsize, probs)
    assert median["exact"] and median["value"] == truth[1]
    for q, want in ((low, truth[0]), (high, truth[2])):
        assert q["exact"] is False and q["value"] is None
        assert q["lower"] <= want <= q["upper"]
    assert "no" in get_algorithm("quantiles").Result.model_validate(result).summary()


def test_quantiles_leave_out_a_node_with_fewer_than_k_rows(tmp_path: Path) -> None:
    frame = DIABETES[["bmi"]]
    stores = [*split(frame.iloc[:400], 2), TableStore(frame.iloc[400:403], name="tiny")]
    result = run_locally("quantiles", {"column": "bmi"}, stores)
    assert result["incomplete"] is True and result["suppressed_nodes"] == 1
    assert result["n"] == 400
    truth = np.quantile(frame.bmi[:400], PROBS)
    for q, want, prob in zip(result["quantiles"], truth, PROBS, strict=True):
        if shared(frame.bmi[:400], prob) >= K:
            assert q["value"] == want
        else:
            assert q["coarsened"] and q["lower"] <= want <= q["upper"]
    path = tmp_path / "q.png"
    get_algorithm("quantiles").Result.model_validate(result).plot(str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", list(DATA))
@pytest.mark.parametrize("kind", ["covariance", "correlation"])
def test_matrices_equal_pandas_on_complete_cases(name: str, kind: str) -> None:
    columns = NUMERIC[name]
    result = run_locally(kind, {"columns": columns}, STORES[name])
    pooled = DATA[name][columns].dropna()
    expected = pooled.cov() if kind == "covariance" else pooled.corr()
    np.testing.assert_allclose(np.array(result["matrix"]), expected.to_numpy(), rtol=1e-10)
    assert result["n"] == [[len(pooled)] * len(columns)] * len(columns)
    assert result["suppressed_nodes"] == 0 and "incomplete" not in result


@pytest.mark.parametrize("kind", ["covariance", "correlation"])
def test_matrices_pairwise_and_complete_case_on_data_with_gaps(kind: str, tmp_path: Path) -> None:
    columns = ["age", "ph.ecog", "meal.cal", "wt.loss"]
    stores = split(LUNG_RAW)
    frame = LUNG_RAW[columns]
    for pairwise, expected in (
        (True, frame.cov() if kind == "covariance" else frame.corr()),
        (False, frame.dropna().cov() if kind == "covariance" else frame.dropna().corr()),
    ):
        params = {"columns": columns, "pairwise": pairwise}
        result = run_locally(kind, params, stores)
        np.testing.assert_allclose(np.array(result["matrix"]), expected.to_numpy(), rtol=1e-10)
    model = get_algorithm(kind).Result.model_validate(result)
    assert "meal.cal" in model.summary()
    model.plot(str(tmp_path / "m.png"))
    assert (tmp_path / "m.png").stat().st_size > 0


def test_a_small_pair_withholds_the_node_and_the_others_pool_exactly() -> None:
    frame = GBSG2[["age", "tsize"]].copy()
    frame["rare"] = GBSG2.tsize.where(GBSG2.age >= 72)
    stores = split(frame)
    counts = [int(s.select(["rare"])["rare"].count()) for s in stores]
    small = [0 < n < K for n in counts]
    assert sum(small) == 1, counts
    params = {"columns": ["age", "rare"], "pairwise": True}
    for store, withheld in zip(stores, small, strict=True):
        answer = gated("covariance", params, store)
        assert answer.status == ("suppressed" if withheld else "ok")
        assert (answer.payload is None) is withheld
    result = run_locally("covariance", params, stores)
    kept = pd.concat(
        [s.select(["age", "rare"]) for s, w in zip(stores, small, strict=True) if not w]
    )
    np.testing.assert_allclose(np.array(result["matrix"]), kept.cov().to_numpy(), rtol=1e-10)
    assert result["n"][1][1] == kept["rare"].count() and result["n"][0][0] == len(kept)
    assert result["suppressed_nodes"] == 1 and "incomplete" not in result
    assert (
        "(1 node(s) withheld theirs)"
        in get_algorithm("covariance").Result.model_validate(result).summary()
    )
    complete = run_locally("correlation", {"columns": ["age", "rare"]}, stores)
    assert complete["suppressed_nodes"] == sum(1 for n in counts if n < K)  # 0 rows too


GROUPED = [("gbsg2", "tgrade", ["age", "tsize"]), ("diabetes", "sex", ["bmi", "bp", "target"])]


@pytest.mark.parametrize(("name", "by", "columns"), GROUPED)
def test_grouped_summary_equals_pandas_groupby(name: str, by: str, columns: list[str]) -> None:
    result = run_locally("grouped_summary", {"columns": columns, "by": by}, STORES[name])
    expected = DATA[name].groupby(by)[columns].agg(["count", "mean", "var", "std"])
    assert set(result) == {"by", "columns", "groups", "suppressed_nodes"}
    assert result["suppressed_nodes"] == 0
    assert len(result["groups"]) == len(expected)
    for level, row in expected.iterrows():
        key = str(level) if not isinstance(level, float) else str(int(level))
        for column in columns:
            got = result["groups"][key][column]
            assert set(got) == {"n", "mean", "variance", "std"}
            assert got["n"] == row[(column, "count")]
            for stat, name_ in (("mean", "mean"), ("variance", "var"), ("std", "std")):
                np.testing.assert_allclose(got[stat], row[(column, name_)], rtol=1e-12)


def test_grouped_summary_withholds_a_node_with_a_small_group(tmp_path: Path) -> None:
    # one patient has ECOG 3: the node that holds them withholds its whole answer
    params = {"columns": ["age"], "by": "ph.ecog"}
    sizes = [s.select(["ph.ecog"])["ph.ecog"].value_counts() for s in STORES["lung"]]
    small = [bool(((v > 0) & (v < K)).any()) for v in sizes]
    assert sum(small) == 1, sizes
    for store, withheld in zip(STORES["lung"], small, strict=True):
        answer = gated("grouped_summary", params, store)
        assert (answer.status, answer.payload is None) == (
            ("suppressed", True) if withheld else ("ok", False)
        )
    result = run_locally("grouped_summary", params, STORES["lung"])
    kept = pd.concat(
        [s.select(["ph.ecog", "age"]) for s, w in zip(STORES["lung"], small, strict=True) if not w]
    )
    expected = kept.groupby("ph.ecog")["age"].agg(["count", "mean", "var"])
    assert list(result["groups"]) == [str(int(level)) for level in expected.index]
    assert "3" not in result["groups"] and result["suppressed_nodes"] == 1
    for level, row in expected.iterrows():
        got = result["groups"][str(int(level))]["age"]
        assert got["n"] == row["count"]
        np.testing.assert_allclose(got["mean"], row["mean"], rtol=1e-12)
        np.testing.assert_allclose(got["variance"], row["var"], rtol=1e-12)
    model = get_algorithm("grouped_summary").Result.model_validate(result)
    assert "(1 node(s) withheld theirs)" in model.summary()
    model.plot(str(tmp_path / "g.png"))


def test_grid_algorithms_declare_each_used_row_s_cell() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0],
            "g": ["a", "b", "a", None, "c", "b", "a"],
            "h": ["u", "v", "u", "v", None, "u", "v"],
        }
    )
    store = TableStore(frame, name="t")
    labels = declared("grouped_summary", {"columns": ["x"], "by": "g"}, store)
    assert labels.to_dict() == {0: "a", 1: "b", 2: "a", 4: "c", 5: "b", 6: "a"}
    labels = declared("ttest", {"column": "x", "group": "g", "groups": ["a", "b"]}, store)
    assert labels.to_dict() == {0: "a", 1: "b", 5: "b", 6: "a"}
    labels = declared("chisq", {"row": "g", "col": "h", "row_levels": ["a"]}, store)
    assert labels.to_dict() == {0: ("a", "u"), 1: None, 2: ("a", "u"), 5: None, 6: ("a", "v")}


TTESTS: list[tuple[str, str, str, list[Any] | None]] = [
    ("gbsg2", "age", "menostat", None),
    ("gbsg2", "tsize", "horTh", ["yes", "no"]),
    ("lung", "wt.loss", "sex", None),
    ("diabetes", "bmi", "sex", [2, 1]),
]


def _check_ttest(result: dict[str, Any], a: pd.Series, b: pd.Series, **kw: Any) -> None:
    want = stats.ttest_ind(a, b, equal_var=False, **{k: v for k, v in kw.items() if k != "cl"})
    ci = want.confidence_interval(kw.get("cl", 0.95))
    assert result["n"] == [len(a), len(b)]
    np.testing.assert_allclose(result["statistic"], want.statistic, rtol=1e-10)
    np.testing.assert_allclose(result["pvalue"], want.pvalue, rtol=1e-9)
    np.testing.assert_allclose(result["df"], want.df, rtol=1e-10)
    for got, expected in zip(result["confidence_interval"], ci, strict=True):
        assert (got is None and np.isinf(expected)) or np.isclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize(("name", "column", "group", "groups"), TTESTS)
def test_ttest_equals_scipy_welch(
    name: str, column: str, group: str, groups: list[Any] | None
) -> None:
    frame = DATA[name].dropna(subset=[column, group])
    params: dict[str, Any] = {"column": column, "group": group}
    if groups is not None:
        params["groups"] = groups
    result = run_locally("ttest", params, STORES[name])
    levels = groups or sorted(frame[group].unique())
    a, b = (frame.loc[frame[group] == level, column] for level in levels)
    _check_ttest(result, a, b)
    assert result["groups"] == [str(level) for level in levels]
    assert result["suppressed_nodes"] == 0
    model = get_algorithm("ttest").Result.model_validate(result)
    assert "Welch" in model.summary()


@pytest.mark.parametrize("alternative", ["less", "greater"])
def test_ttest_one_sided_and_confidence_level(alternative: str) -> None:
    params = {"column": "time", "group": "cens", "alternative": alternative}
    result = run_locally("ttest", params | {"confidence_level": 0.9}, STORES["gbsg2"])
    a, b = (GBSG2.time[GBSG2.cens == v] for v in (0, 1))
    _check_ttest(result, a, b, alternative=alternative, cl=0.9)


CHISQ = [
    ("gbsg2", "tgrade", "horTh", {}),
    ("gbsg2", "menostat", "horTh", {}),
    ("gbsg2", "menostat", "cens", {"correction": False}),
    ("lung", "sex", "status", {}),
    ("diabetes", "sex", "s4", {"col_levels": [3, 4, 5]}),
]


@pytest.mark.parametrize(("name", "row", "col", "extra"), CHISQ)
def test_chisq_equals_scipy(name: str, row: str, col: str, extra: dict[str, Any]) -> None:
    result = run_locally("chisq", {"row": row, "col": col, **extra}, STORES[name])
    frame = DATA[name]
    if "col_levels" in extra:
        frame = frame[frame[col].isin(extra["col_levels"])]
    table = pd.crosstab(frame[row], frame[col])
    want = stats.chi2_contingency(table, correction=extra.get("correction", True))
    np.testing.assert_allclose(result["statistic"], want.statistic, rtol=1e-12)
    np.testing.assert_allclose(result["pvalue"], want.pvalue, rtol=1e-12)
    assert result["dof"] == want.dof
    np.testing.assert_allclose(result["expected"], want.expected_freq, rtol=1e-12)
    assert result["observed"] == table.to_numpy().tolist()
    assert result["suppressed_nodes"] == 0
    assert "chi-square" in get_algorithm("chisq").Result.model_validate(result).summary()


def test_chisq_pools_the_nodes_whose_table_has_no_small_cell() -> None:
    # a fourth node whose table has one cell of 2 withholds it whole; the others pool
    rows = [("II", "yes")] * 6 + [("II", "no")] * 7 + [("III", "no")] * 2
    small = TableStore(pd.DataFrame(rows, columns=["tgrade", "horTh"]), name="small")
    params = {"row": "tgrade", "col": "horTh"}
    answer = gated("chisq", params, small, min_rows=1)
    assert answer.status == "suppressed" and answer.payload is None
    result = run_locally("chisq", params, [*STORES["gbsg2"], small], min_rows=1)
    table = pd.crosstab(GBSG2.tgrade, GBSG2.horTh)
    want = stats.chi2_contingency(table)
    assert result["observed"] == table.to_numpy().tolist() and result["n"] == len(GBSG2)
    np.testing.assert_allclose(result["statistic"], want.statistic, rtol=1e-12)
    np.testing.assert_allclose(result["pvalue"], want.pvalue, rtol=1e-12)
    assert result["suppressed_nodes"] == 1
    model = get_algorithm("chisq").Result.model_validate(result)
    assert "(1 node(s) withheld theirs)" in model.summary()
    # every node has a rare pnodes level (one patient has 38 nodes): no table to test
    with pytest.raises(BadRequest, match=r"chisq: gate: min_cell_count: all 3 node\(s\) withheld"):
        run_locally("chisq", {"row": "pnodes", "col": "horTh"}, STORES["gbsg2"])


def test_chisq_names_only_levels_with_rows_in_the_table() -> None:
    # with row levels given, a column level that occurs only outside them is not named
    params = {"row": "tgrade", "col": "pnodes", "row_levels": ["I"]}
    store = STORES["gbsg2"][0]
    answer = gated("chisq", params, store, min_cell_count=1)
    assert answer.payload is not None
    frame = store.select(["tgrade", "pnodes"])
    inside = frame[frame.tgrade == "I"]
    assert answer.payload["col_levels"] == [str(v) for v in sorted(inside.pnodes.unique())]
    assert answer.payload["rows"] == len(inside)
    assert set(frame.pnodes) - set(inside.pnodes)  # levels that only occur outside


def test_tests_refuse_nodes_with_fewer_than_min_rows() -> None:
    where = {"column": "age", "op": "<", "value": 50}
    counts = [s.count(None) for s in STORES["lung"]]
    assert max(counts) < 60 and min(counts) >= 10
    refusals: list[str] = []
    with pytest.raises(BadRequest, match=r"ttest: gate: min_cell_count: all 3 node\(s\)"):
        params = {"column": "age", "group": "sex"}
        run_locally("ttest", params, STORES["lung"], min_rows=60, withheld=refusals)
    message = "gate: min_rows: ttest needs at least 60 rows at a node; this node has fewer"
    assert refusals == [message] * 3
    refusals.clear()
    with pytest.raises(BadRequest, match="chisq: gate: min_cell_count"):
        params = {"row": "sex", "col": "status", "where": where}
        run_locally("chisq", params, STORES["lung"], min_cell_count=1, withheld=refusals)
    assert len(refusals) == 3 and all("gate: min_rows: chisq" in r for r in refusals)


def test_ttest_pools_the_nodes_without_a_small_group() -> None:
    # a fourth node with three premenopausal patients withholds its whole answer
    tiny = GBSG2[GBSG2.menostat == "Pre"].head(3)
    tiny = pd.concat([tiny, GBSG2[GBSG2.menostat == "Post"].head(20)]).reset_index(drop=True)
    small = TableStore(tiny, name="small")
    params = {"column": "age", "group": "menostat"}
    answer = gated("ttest", params, small)
    assert answer.status == "suppressed" and answer.payload is None
    result = run_locally("ttest", params, [*STORES["gbsg2"], small])
    post, pre = (GBSG2.age[GBSG2.menostat == level] for level in ("Post", "Pre"))
    _check_ttest(result, post, pre)
    assert result["suppressed_nodes"] == 1 and "hidden_groups" not in result
    summary = get_algorithm("ttest").Result.model_validate(result).summary()
    assert "(1 node(s) withheld theirs)" in summary


def test_ttest_refuses_unclear_or_empty_groups() -> None:
    with pytest.raises(BadRequest, match=r"'tgrade' has 3 levels at the contributing nodes \("):
        run_locally("ttest", {"column": "age", "group": "tgrade"}, STORES["gbsg2"])
    where = {"column": "age", "op": ">=", "value": 40}
    # the one patient with ECOG 3 is at a node that withholds: the group is empty
    with pytest.raises(BadRequest, match=r"ttest: group '3' has 0 row\(s\); it needs at least 2"):
        params = {"column": "age", "group": "ph.ecog", "groups": [2, 3], "where": where}
        run_locally("ttest", params, STORES["lung"], min_rows=1)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("quantiles", {"column": "tgrade"}, "quantiles: column 'tgrade' is string"),
        ("quantiles", {"column": "age", "probs": [0.5, 1.0]}, "strictly between 0 and 1"),
        ("quantiles", {"column": "age", "probs": [0.5, 0.5]}, "a prob is listed twice"),
        ("correlation", {"columns": ["age"]}, "List should have at least 2"),
        ("covariance", {"columns": ["age", "age"]}, "a column is named twice"),
        ("grouped_summary", {"columns": ["age"], "by": "nope"}, "unknown column 'nope'"),
        ("grouped_summary", {"columns": ["age"], "by": "age"}, "is also in columns"),
        ("ttest", {"column": "age", "group": "age"}, "the same column 'age'"),
        ("ttest", {"column": "age", "group": "x", "groups": ["a"]}, "at least 2 items"),
        ("ttest", {"column": "tgrade", "group": "horTh"}, "'tgrade' is string, not numeric"),
        ("chisq", {"row": "tgrade", "col": "tgrade"}, "chisq: row and col are the same"),
        ("chisq", {"row": "tgrade", "col": "x"}, "chisq: unknown column 'x'"),
    ],
)
def test_validation_errors_name_the_problem(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        run_locally(name, params, STORES["gbsg2"])


def test_quantiles_of_extreme_floats_and_of_no_rows() -> None:
    x = [5e-324, -5e-324, 1e-300, -1.7e308, 1.7e308, 0.0, -0.0, 123.456789012345, 2.0**-1074]
    frame = pd.DataFrame({"x": x * 2 + [np.nan, np.inf, -np.inf]})
    stores = split(frame, 3, seed=1)
    probs = [0.05, 0.3, 0.5, 0.61, 0.95]
    result = run_locally("quantiles", {"column": "x", "probs": probs}, stores, min_cell_count=1)
    finite = frame.x[np.isfinite(frame.x)]  # infinite values are left out
    assert [q["value"] for q in result["quantiles"]] == np.quantile(finite, probs).tolist()
    where = {"column": "x", "op": "==", "value": 7.5}
    empty = run_locally("quantiles", {"column": "x", "where": where}, stores)
    assert empty["n"] == 0 and all(q["value"] is None for q in empty["quantiles"])


def test_quantiles_aggregate_leaves_the_broadcast_state_alone() -> None:
    # the hub stores a round's state only when aggregate returns a new object
    algorithm = get_algorithm("quantiles")
    params = algorithm.parse_params({"column": "age"})
    outputs = [
        NodeOutput(node_id=i, dataset_id=i, status="ok", payload=algorithm.local(params, ctx))
        for i, ctx in enumerate(LocalContext(data=s) for s in STORES["gbsg2"])
    ]
    first = algorithm.aggregate(params, 0, {}, outputs)
    assert isinstance(first, NextRound)
    state = first.state
    outputs = [
        NodeOutput(node_id=i, dataset_id=i, status="ok", payload=algorithm.local(params, ctx))
        for i, ctx in enumerate(LocalContext(data=s, round=1, state=state) for s in STORES["gbsg2"])
    ]
    before = copy.deepcopy(state)
    algorithm.aggregate(params, 1, state, outputs)
    assert state == before
