"""Local steps pushed down to DuckDB equal the frame path, and record the same row sets.

A Parquet file made from lifelines' GBSG2 (with nulls and a ``NaN`` written into two
columns, and a person column) is opened as a node opens it (``TableStore.open``, a DuckDB
view). ``mean``/``variance``/``summary`` now run as SQL aggregates
(``medfed.algorithms.stats._sums``); their output is compared with numpy on the rows the
frame path selected, the dominance figures with :func:`magnitude` on the same values, and
the row sets :class:`RecordingData` records from DuckDB row ids (``aggregate``, ``count``)
with the masks the frame path built from ``select`` (an opted-out person hidden).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lifelines.datasets import load_gbsg2

from medfed.algorithms.base import LocalContext, NodeOutput
from medfed.algorithms.registry import get_algorithm
from medfed.algorithms.stats.crosstab import level_names
from medfed.algorithms.stats.moments import outward_round
from medfed.algorithms.stats.quantiles import withheld
from medfed.algorithms.survival.cox_local import design
from medfed.common.errors import Refused
from medfed.common.filters import Filter, parse_filter
from medfed.node.gate import RecordingData
from medfed.node.gate.dominance import magnitude
from medfed.node.stores.tables import TableStore

KEY = b"p" * 32
WHERE = {"column": "horTh", "op": "==", "value": "yes"}


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = load_gbsg2()
    frame.insert(0, "pid", [f"p{i}" for i in range(len(frame))])
    frame["age"] = frame["age"].astype(float)
    frame.loc[[3, 40, 41], "age"] = None  # nulls
    frame.loc[[7, 100], "tsize"] = np.nan
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # a real NaN (not a null) in a float column: pandas reads it as missing
    tsize = pa.array(frame["tsize"].to_numpy(dtype=float), from_pandas=False)
    table = table.set_column(table.schema.get_field_index("tsize"), "tsize", tsize)
    out = tmp_path_factory.mktemp("pushdown") / "gbsg2.parquet"
    pq.write_table(table, out)
    return out


@pytest.fixture(scope="module")
def store(path: Path) -> TableStore:
    return TableStore.open(path, person_column="pid", excluded_persons=lambda: frozenset({"p5"}))


def batched(path: Path, rows: int) -> TableStore:
    """The file opened as a node does, handing out ``select_batches`` frames of ``rows``."""
    store = TableStore.open(path, person_column="pid", excluded_persons=lambda: frozenset())
    store.batch_rows = rows
    return store


def old_masks(store: TableStore, columns: list[str], where: Filter | None) -> list[np.ndarray]:
    """The frame path's masks (``select``: rows, then each column's non-missing rows)."""
    frame = store.select(columns, where)
    ids = frame.index.to_numpy()
    masks = []
    for chosen in [ids, *(ids[frame[c].notna().to_numpy()] for c in columns)]:
        mask = np.zeros(store.row_count, dtype=np.int64)
        mask[chosen] = 1
        if not any(np.array_equal(mask, m) for m in masks):
            masks.append(mask)
    return masks


@pytest.mark.parametrize("where", [None, WHERE])
def test_aggregate_records_the_row_sets_select_recorded(
    store: TableStore, where: dict[str, object] | None
) -> None:
    f = parse_filter(where)
    pushed = RecordingData(store, key=KEY)
    pushed.aggregate(["count(*)"], f, columns=["age", "tsize", "tgrade"])
    framed = RecordingData(store, key=KEY)
    framed.select(["age", "tsize", "tgrade"], f)
    expected = old_masks(store, ["age", "tsize", "tgrade"], f)
    assert [m.dtype for m in pushed.labelings] == [np.dtype(bool)] * len(expected)
    assert [m.astype(np.int64).tolist() for m in pushed.labelings] == [m.tolist() for m in expected]
    assert pushed.fingerprints == framed.fingerprints
    if where is None:
        assert len(expected) == 3  # the rows, age's and tsize's non-missing rows
    assert not pushed.labelings[0][5]  # the opted-out person is in no row set


def test_count_records_its_rows_from_duckdb(store: TableStore) -> None:
    f = parse_filter(WHERE)
    data = RecordingData(store, key=KEY)
    n = data.count(f)
    assert n == store.count(f) == len(store.row_ids(f))
    assert data.labelings[0].astype(np.int64).tolist() == old_masks(store, [], f)[0].tolist()


@pytest.mark.parametrize("name", ["mean", "variance", "summary"])
@pytest.mark.parametrize("where", [None, WHERE])
def test_pushed_moments_equal_the_frame_path(
    store: TableStore, name: str, where: dict[str, object] | None
) -> None:
    columns = ["age", "tsize", "pnodes"]
    algorithm = get_algorithm(name)
    params = algorithm.parse_params({"columns": columns, "where": where})
    data = RecordingData(store, key=KEY)
    out = algorithm.local(params, LocalContext(data=data, recorder=data))
    frame = store.select(columns, parse_filter(where))
    assert out["rows"] == len(frame)
    for column in columns:
        values = frame[column].dropna().to_numpy(dtype=np.float64)
        assert out["n"][column] == len(values)
        got = out["stats"][column]
        assert got["sum"] == pytest.approx(math.fsum(values), rel=1e-14)
        figures = data.magnitudes_seen[f"{column}.sum"]
        expected = magnitude(values)
        assert (figures.top1, figures.top2, figures.rows) == (
            expected.top1,
            expected.top2,
            expected.rows,
        )
        assert figures.total == pytest.approx(expected.total, rel=1e-14)
        if name == "mean":
            assert set(got) == {"sum"}
            continue
        deviations = (values - math.fsum(values) / len(values)) ** 2
        assert got["m2"] == pytest.approx(math.fsum(deviations), rel=1e-12)
        assert data.magnitudes_seen[f"{column}.m2"].top1 == pytest.approx(
            magnitude(deviations).top1, rel=1e-12
        )
        if name == "summary":
            assert got["min_bound"] == outward_round(float(values.min()), up=False)
            assert got["max_bound"] == outward_round(float(values.max()), up=True)
    assert list(data.magnitudes_seen) == [
        label
        for column in columns
        for label in (f"{column}.sum", *([f"{column}.m2"] if name != "mean" else []))
    ]


def test_a_float_nan_is_missing_as_in_pandas(store: TableStore) -> None:
    # the file holds NaN (not NULL) in two rows of tsize: SQL counts it, pandas does not
    (sql_count,) = store.aggregate(["count(tsize)"])
    visible = store.count()
    assert sql_count == visible
    params = get_algorithm("mean").parse_params({"columns": ["tsize"]})
    data = RecordingData(store, key=KEY)
    out = get_algorithm("mean").local(params, LocalContext(data=data, recorder=data))
    assert out["n"]["tsize"] == visible - 2
    assert int(data.labelings[1].sum()) == visible - 2  # its non-missing rows, recorded


def test_an_opt_out_during_an_aggregate_refuses_the_step(path: Path) -> None:
    # the register changes after the aggregate's first query (it is asked again by the
    # recorded rows' query): rows aggregated and rows recorded could differ, so no answer
    answers = iter([frozenset(), frozenset(), frozenset({"p9"})])
    last: list[frozenset[str]] = [frozenset()]

    def register() -> frozenset[str]:
        last[0] = next(answers, last[0])
        return last[0]

    store = TableStore.open(path, person_column="pid", excluded_persons=register)
    data = RecordingData(store, key=KEY)
    with pytest.raises(Refused, match="opt-out register changed"):
        data.aggregate(["count(*)"], parse_filter(WHERE), columns=["age"])
    assert store.count() == 685  # the store itself serves the new visible rows


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_glm_sums_over_batches_equal_one_batch(path: Path, family: str) -> None:
    """GLM's local steps read ``select_batches``; 60-row batches give the sums and the
    recorded row sets (complete cases, level cells) of one batch, i.e. of the frame path."""
    outcome = "cens" if family == "binomial" else "pnodes"
    raw = {
        "outcome": outcome,
        "covariates": ["age", "tsize", "tgrade", "horTh"],
        "family": family,
        "where": {"column": "menostat", "op": "==", "value": "Post"},
    }
    algorithm = get_algorithm("glm")
    params = algorithm.parse_params(raw)
    outputs, prints = [], []
    for rows in (2048 * 8, 60):
        store = batched(path, rows)
        first = RecordingData(store, key=KEY)
        zero = algorithm.local(params, LocalContext(data=first, recorder=first))
        state = {
            "levels": {c: sorted(v) for c, v in zero["levels"].items()},
            "ybar": zero["sums"]["y"] / zero["rows"],
            "beta": [0.01] * 6,
            "beta_prev": [0.0] * 6,
            "has_prev": True,
            "null_beta": 0.1,
        }
        data = RecordingData(store, key=KEY)
        ctx = LocalContext(data=data, recorder=data, round=1, state=state)
        outputs.append((zero, algorithm.local(params, ctx)))
        prints.append((first.fingerprints, data.fingerprints))
    (zero_a, one_a), (zero_b, one_b) = outputs
    # rows, age and tsize non-missing, complete cases, two level grids
    assert prints[0] == prints[1] and len(prints[0][0]) == 6
    assert zero_a["levels"] == zero_b["levels"] and zero_a["rows"] == zero_b["rows"]
    assert zero_a["sums"] == pytest.approx(zero_b["sums"], rel=1e-13)
    for key in ("xtwx", "score", "x2", "xtwx_prev"):
        assert np.allclose(one_a[key], one_b[key], rtol=1e-12, atol=0), key
    for key in ("deviance", "pearson", "loglik", "rows", "boundary"):
        assert one_a[key] == pytest.approx(one_b[key], rel=1e-12), key
    assert one_a["null"] == pytest.approx(one_b["null"], rel=1e-12)


def in_thirds(store: TableStore) -> None:
    """Make ``store.select_batches`` hand out a selection as three frames (the file has
    fewer rows than one DuckDB vector, so the real batching would give one)."""
    whole = store.select

    def batches(columns: list[str], where: Filter | None = None):  # type: ignore[no-untyped-def]
        frame = whole(columns, where)
        third = len(frame) // 3 + 1
        for start in range(0, 3 * third, third):
            yield frame.iloc[start : start + third]

    store.select_batches = batches  # type: ignore[method-assign]


@pytest.mark.parametrize("where", [None, WHERE])
def test_histogram_over_batches_equals_numpy_and_records_the_frame_paths_cells(
    path: Path, where: dict[str, object] | None
) -> None:
    """``histogram`` reads ``select_batches``: over three batches its counts are numpy's on
    the rows the frame path selected, and the row sets and bin cells it records are the
    ones the frame path (``select`` + ``cells`` over the whole column) recorded."""
    edges = [20.0, 40.0, 50.0, 60.0, 70.0]
    algorithm = get_algorithm("histogram")
    raw: dict[str, object] = {"column": "age", "bins": edges}
    if where is not None:
        raw["where"] = where
    params = algorithm.parse_params(raw)
    f = parse_filter(where)
    store = TableStore.open(path, person_column="pid", excluded_persons=lambda: frozenset())
    # the frame path, as the step ran before: the whole column, one labelling of its rows
    framed = RecordingData(store, key=KEY)
    column = framed.select(["age"], f)["age"].dropna()
    values = column.to_numpy(dtype=float)
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = len(edges) - 2
    cell = np.asarray(index, dtype=object)
    cell[index < 0] = "below"
    cell[index >= len(edges) - 1] = "above"
    framed.cells(pd.Series(cell, index=column.index, dtype=object))
    in_thirds(store)
    data = RecordingData(store, key=KEY)
    out = algorithm.local(params, LocalContext(data=data, recorder=data))
    counts, _ = np.histogram(values, bins=edges)
    assert out["counts"] == counts.tolist()
    assert out["below"] == int((values < edges[0]).sum())
    assert out["above"] == int((values > edges[-1]).sum())
    assert data.fingerprints == framed.fingerprints and len(data.fingerprints) == 3


@pytest.mark.parametrize("where", [None, WHERE])
def test_quantiles_over_batches_equal_the_frame_path(
    path: Path, where: dict[str, object] | None
) -> None:
    """``quantiles`` reads ``select_batches``: over three batches, round 0's count and
    rounded extremes and a round's counts below and at each cut are numpy's on the rows
    the frame path selected (nulls and a ``NaN`` left out), and the row sets recorded are
    the same."""
    store = TableStore.open(path, person_column="pid", excluded_persons=lambda: frozenset({"p5"}))
    algorithm = get_algorithm("quantiles")
    raw: dict[str, object] = {"column": "tsize", "probs": [0.5]}
    if where is not None:
        raw["where"] = where
    params = algorithm.parse_params(raw)
    f = parse_filter(where)
    framed = RecordingData(store, key=KEY)
    values = framed.select(["tsize"], f)["tsize"].dropna().to_numpy(dtype=float)
    values = np.sort(values[np.isfinite(values)])
    in_thirds(store)
    data = RecordingData(store, key=KEY)
    zero = algorithm.local(params, LocalContext(data=data, recorder=data))
    assert zero["n"] == len(values)
    assert zero["bounds"] == [
        outward_round(float(values[0]), up=False),
        outward_round(float(values[-1]), up=True),
    ]
    assert data.fingerprints == framed.fingerprints
    cuts = [10.0, 20.0, 25.0, 25.5, 40.0, 1000.0]
    data = RecordingData(store, key=KEY)
    ctx = LocalContext(data=data, recorder=data, round=1, state={"cuts": cuts})
    one = algorithm.local(params, ctx)
    lt = np.searchsorted(values, cuts, side="left")
    le = np.searchsorted(values, cuts, side="right")
    k = ctx.min_cell_count
    n = len(values)
    assert one["lt"] == [withheld(c, n, k)[0] for c in lt.tolist()]
    assert one["le"] == [withheld(c, n, k)[0] for c in le.tolist()]
    assert one["le"][-1] == n  # every value is at or below the last cut
    assert data.fingerprints == framed.fingerprints


@pytest.mark.parametrize("strata", [None, "horTh"])
def test_cox_over_batches_equals_one_batch(path: Path, strata: str | None) -> None:
    """Cox's node step is one pass over ``select_batches`` per round: over 37-row batches
    its round 0 (moments, levels, coarsened event times), a Newton round and the bound's
    round (risk-set and tied sums on a grid holding other nodes' times too, some beyond this
    node's boundary) equal one batch's, and record the same row sets and level cells."""
    raw: dict[str, object] = {
        "duration": "time",
        "event": "cens",
        "covariates": ["age", "tsize", "tgrade"],
        "categorical": ["tgrade"],
        "where": {"column": "menostat", "op": "==", "value": "Post"},
    }
    if strata:
        raw["strata"] = strata
    algorithm = get_algorithm("cox")
    params = algorithm.parse_params(raw)
    rng = np.random.default_rng(3)
    got, prints = [], []
    for rows in (2048 * 8, 37):
        store = batched(path, rows)
        data = RecordingData(store, key=KEY)
        zero = algorithm.local(params, LocalContext(data=data, recorder=data))
        answer = NodeOutput(node_id=1, dataset_id=1, status="ok", payload=zero)
        agreed = algorithm.aggregate(params, 0, {}, [answer]).state  # type: ignore[union-attr]
        # other nodes' times: every whole day up to past the last follow-up
        times = {s: sorted(set(t) | set(range(0, 2800, 7))) for s, t in agreed["times"].items()}
        ties = {s: sorted(rng.choice(len(t), 30, replace=False).tolist()) for s, t in times.items()}
        rounds = [zero]
        prints.append(data.fingerprints)
        for final in (False, True):
            state = agreed | {
                "times": times,
                "ties": ties,
                "beta": [0.05] * len(agreed["columns"]),
                "final": final,
            }
            data = RecordingData(store, key=KEY)
            rounds.append(
                algorithm.local(
                    params, LocalContext(data=data, recorder=data, round=1, state=state)
                )
            )
            prints.append(data.fingerprints)
        got.append(rounds)
        rng = np.random.default_rng(3)
    # the frame path's row sets: ``select`` of the columns, complete cases, the level cells
    store = TableStore.open(path, person_column="pid", excluded_persons=lambda: frozenset())
    framed = RecordingData(store, key=KEY)
    columns = ["time", "cens", "age", "tsize", "tgrade", *([strata] if strata else [])]
    frame = framed.select(columns, parse_filter(raw["where"])).dropna()  # type: ignore[arg-type]
    for column in ["tgrade", *([strata] if strata else [])]:
        framed.cells(frame[column])
    assert prints == [framed.fingerprints] * 6
    (zero_a, *rest_a), (zero_b, *rest_b) = got
    assert zero_a["coarsened"] and zero_a["times"] == zero_b["times"]
    assert zero_a["events"] == zero_b["events"] and zero_a["levels"] == zero_b["levels"]
    for column, moments in zero_a["moments"].items():
        assert moments == pytest.approx(zero_b["moments"][column], rel=1e-13)
    for a, b in zip(rest_a, rest_b, strict=True):
        assert set(a) == set(b) and a["rows"] == b["rows"]
        assert np.allclose(a["xsum"], b["xsum"], rtol=1e-12)
        for key in ("at_risk", "events", "s0", "s1", "s2", "t0", "t1", "t2", "u1", "u2"):
            for level, series in a.get(key, {}).items():
                other = b[key][level]
                assert series.shape == other.shape and series.dtype == other.dtype
                assert np.allclose(series, other, rtol=1e-12, atol=0), (key, level)
        # a risk set is 0 or at least k (none after the node's boundary, the last agreed
        # time is past every follow-up), and no event is named after the node's last one
        for level, counts in a["at_risk"].items():
            assert ((counts == 0) | (counts >= 5)).all() and counts[-1] == 0
            beyond = np.asarray(times[level]) > max(zero_a["times"][level])
            assert beyond.any() and (a["events"][level][beyond] == 0).all()
    assert "u1" in rest_a[1] and "u1" not in rest_a[0]
    # and both equal the risk-set rule's definition, computed here with numpy on the frame
    # path's rows: each unit's tail moved to its k-th largest duration, then plain sums
    final = rest_a[1]
    units = level_names(frame[strata]) if strata else np.full(len(frame), "all", dtype=object)
    x_all = design(params, frame.reset_index(drop=True), state)
    w_all = np.exp(x_all @ np.asarray(state["beta"]))
    for column, moments in zero_a["moments"].items():
        assert moments["sum"] == pytest.approx(math.fsum(frame[column]), rel=1e-14)
    assert np.allclose(final["xsum"], x_all[frame["cens"].to_numpy() == 1].sum(axis=0))
    for level in sorted(set(units)):
        mine = units == level
        d = frame["time"].to_numpy(float)[mine]
        died = frame["cens"].to_numpy()[mine] == 1
        moved = np.minimum(d, np.sort(d)[len(d) - 5])
        x, w = x_all[mine], w_all[mine]
        grid = np.asarray(times[level])
        risk = moved[None, :] >= grid[:, None]  # (times, rows)
        at = died[None, :] & (moved[None, :] == grid[:, None])
        assert zero_a["times"][level] == sorted(set(moved[died].tolist()))
        assert np.array_equal(final["at_risk"][level], risk.sum(axis=1))
        assert np.array_equal(final["events"][level], at.sum(axis=1))
        assert np.allclose(final["s0"][level], risk @ w, rtol=1e-12)
        assert np.allclose(final["s1"][level], risk @ (w[:, None] * x), rtol=1e-12)
        assert np.allclose(final["t0"][level], (at @ w)[ties[level]], rtol=1e-12, atol=1e-300)
        assert np.allclose(final["u2"][level], risk @ x**2, rtol=1e-12)


@pytest.mark.parametrize(("name", "group"), [("km", "tgrade"), ("km", None), ("logrank", "horTh")])
def test_event_tables_over_batches_equal_one_batch(
    path: Path, name: str, group: str | None
) -> None:
    """``km`` and ``logrank`` read ``select_batches`` too: over 29-row batches their round 0
    (coarsened event times) and round 1 (risk sets, events, boundaries on a grid with
    other nodes' times) equal one batch's, and the row sets and group cells recorded are
    the frame path's."""
    raw: dict[str, object] = {"duration": "time", "event": "cens", "where": WHERE}
    if group:
        raw["group"] = group
    algorithm = get_algorithm(name)
    params = algorithm.parse_params(raw)
    got, prints = [], []
    for rows in (2048 * 8, 29):
        store = batched(path, rows)
        data = RecordingData(store, key=KEY)
        zero = algorithm.local(params, LocalContext(data=data, recorder=data))
        own = sorted({t for times in zero["times"].values() for t in times})
        state = {"times": sorted(set(own) | set(range(0, 2800, 11)))}
        data_one = RecordingData(store, key=KEY)
        ctx = LocalContext(data=data_one, recorder=data_one, round=1, state=state)
        got.append((zero, algorithm.local(params, ctx)))
        prints.append((data.fingerprints, data_one.fingerprints))
    store = TableStore.open(path, person_column="pid", excluded_persons=lambda: frozenset())
    framed = RecordingData(store, key=KEY)
    columns = ["time", "cens", *([group] if group else [])]
    frame = framed.select(columns, parse_filter(WHERE)).dropna()
    if group:
        framed.cells(frame[group])
    assert prints == [(framed.fingerprints, framed.fingerprints)] * 2
    (zero_a, one_a), (zero_b, one_b) = got
    assert zero_a == zero_b
    assert one_a["boundary"] == one_b["boundary"] and one_a["unit_rows"] == one_b["unit_rows"]
    for key in ("at_risk", "events"):
        for level, series in one_a[key].items():
            assert series.dtype == np.int64 and np.array_equal(series, one_b[key][level])
    for counts in one_a["at_risk"].values():  # the risk-set rule: 0 or at least k
        assert ((counts == 0) | (counts >= 5)).all() and counts[-1] == 0
    # the rule's definition with numpy on the frame path's rows: tails moved, then counts
    units = level_names(frame[group]) if group else np.full(len(frame), "all", dtype=object)
    grid = np.asarray(state["times"], dtype=float)
    for level in sorted(set(units)):
        mine = units == level
        d = frame["time"].to_numpy(float)[mine]
        died = frame["cens"].to_numpy()[mine] == 1
        moved = np.minimum(d, np.sort(d)[len(d) - 5])
        assert zero_a["times"][level] == sorted(set(moved[died].tolist()))
        assert np.array_equal(one_a["at_risk"][level], (moved[None, :] >= grid[:, None]).sum(1))
        at = died[None, :] & (moved[None, :] == grid[:, None])
        assert np.array_equal(one_a["events"][level], at.sum(axis=1))
        assert one_a["unit_rows"][level] == len(d)


@pytest.mark.parametrize(
    "levels",
    [{}, {"row_levels": ["I", "II"]}, {"row_levels": ["II", "III"], "col_levels": ["yes"]}],
)
def test_crosstab_over_batches_equals_the_frame_path(
    path: Path, levels: dict[str, list[str]]
) -> None:
    """``crosstab`` reads ``select_batches``: over three batches its table is pandas' on the
    rows the frame path selected, and the row sets and cells recorded (the pairs inside the
    table) are the ones the frame path recorded with its levels known up front."""
    algorithm = get_algorithm("crosstab")
    params = algorithm.parse_params({"row": "tgrade", "col": "horTh", "where": WHERE, **levels})
    store = TableStore.open(path, person_column="pid", excluded_persons=lambda: frozenset())
    framed = RecordingData(store, key=KEY)
    frame = framed.select(["tgrade", "horTh"], parse_filter(WHERE)).dropna()
    pairs = frame.groupby(["tgrade", "horTh"], observed=True).size()
    rows = levels.get("row_levels") or sorted({r for r, _ in pairs.index})
    cols = levels.get("col_levels") or sorted({c for r, c in pairs.index if r in rows})
    inside = frame["tgrade"].isin(rows) & frame["horTh"].isin(cols)
    triples = zip(frame.tgrade, frame.horTh, inside, strict=True)
    labels = [(r, c) if keep else None for r, c, keep in triples]
    framed.cells(pd.Series(labels, index=frame.index, dtype=object))
    in_thirds(store)
    data = RecordingData(store, key=KEY)
    out = algorithm.local(params, LocalContext(data=data, recorder=data))
    assert (out["row_levels"], out["col_levels"]) == (rows, cols)
    assert out["table"] == [[int(pairs.get((r, c), 0)) for c in cols] for r in rows]
    assert data.fingerprints == framed.fingerprints and len(data.fingerprints) == 2


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("grouped_summary", {"by": "tgrade", "columns": ["age", "tsize"]}),
        ("ttest", {"column": "tsize", "group": "horTh"}),
        ("ttest", {"column": "age", "group": "tgrade", "groups": ["III", "I"]}),
    ],
)
def test_grouped_moments_over_batches_equal_the_frame_path(
    path: Path, name: str, raw: dict[str, object]
) -> None:
    """``grouped_summary`` and ``ttest`` read ``select_batches``: over three batches their
    counts and moments are numpy's on the frame path's rows (one batch: the same ``fsum``
    formulas), the dominance figures of each released sum and m2 are ``magnitude`` of the
    values (the two largest squared deviations from the four extreme values), and the row
    sets and group cells recorded are the frame path's."""
    algorithm = get_algorithm(name)
    params = algorithm.parse_params({**raw, "where": WHERE})
    by = str(raw.get("by") or raw["group"])
    columns = list(raw.get("columns") or [raw["column"]])
    wanted = raw.get("groups")
    store = TableStore.open(path, person_column="pid", excluded_persons=lambda: frozenset())
    framed = RecordingData(store, key=KEY)
    frame = framed.select(
        [*columns, by] if name == "ttest" else [by, *columns], parse_filter(WHERE)
    )
    frame = frame.dropna() if name == "ttest" else frame[frame[by].notna()]
    if wanted:
        frame = frame[frame[by].isin(wanted)]
    framed.cells(frame[by].astype(str))
    in_thirds(store)
    data = RecordingData(store, key=KEY)
    out = algorithm.local(params, LocalContext(data=data, recorder=data, min_rows=1))
    assert data.fingerprints == framed.fingerprints
    groups = list(wanted) if wanted else sorted(frame[by].astype(str).unique())
    assert out["groups"] == groups and out["rows"] == len(frame)
    for i, level in enumerate(groups):
        for j, column in enumerate(columns):
            values = frame.loc[frame[by].astype(str) == level, column].dropna().to_numpy(float)
            n = out["n"][i][j] if name == "grouped_summary" else out["n"][i]
            stats = out["stats"][i][j] if name == "grouped_summary" else out["stats"][i]
            label = f"{level}.{column}" if name == "grouped_summary" else level
            assert n == len(values) and n > 0
            mean = math.fsum(values) / n
            assert stats["sum"] == pytest.approx(math.fsum(values), rel=1e-14)
            assert stats["m2"] == pytest.approx(math.fsum((values - mean) ** 2), rel=1e-12)
            for key, expected in (
                ("sum", magnitude(values)),
                ("m2", magnitude((values - values.mean()) ** 2)),
            ):
                got = data.magnitudes_seen[f"{label}.{key}"]
                assert got.rows == expected.rows
                for part in ("total", "top1", "top2"):
                    assert getattr(got, part) == pytest.approx(getattr(expected, part), rel=1e-12)


@pytest.mark.parametrize("pairwise", [False, True])
def test_covariance_over_batches_equals_the_frame_path(path: Path, pairwise: bool) -> None:
    """``covariance`` reads ``select_batches`` twice (sums, then deviations from each pair's
    means): over three batches its sums are ``fsum``'s on the frame path's rows, the five
    dominance figures per pair are ``magnitude`` of the terms, and the row sets recorded
    (once, though read twice) are the frame path's."""
    columns = ["age", "tsize", "pnodes"]
    algorithm = get_algorithm("covariance")
    params = algorithm.parse_params({"columns": columns, "pairwise": pairwise, "where": WHERE})
    store = TableStore.open(path, person_column="pid", excluded_persons=lambda: frozenset())
    framed = RecordingData(store, key=KEY)
    frame = framed.select(columns, parse_filter(WHERE))
    if not pairwise:
        frame = frame.dropna()
    in_thirds(store)
    data = RecordingData(store, key=KEY)
    out = algorithm.local(params, LocalContext(data=data, recorder=data))
    assert data.fingerprints == framed.fingerprints and out["rows"] == len(frame)
    index = 0
    for a in range(len(columns)):
        for b in range(a, len(columns)):
            both = frame[[columns[a], columns[b]]].dropna().to_numpy(float)
            x, y = both[:, 0], both[:, 1]
            dx, dy = x - math.fsum(x) / len(x), y - math.fsum(y) / len(y)
            assert out["n"][index] == len(x)
            got = out["pairs"][index]
            assert got["sum_a"] == pytest.approx(math.fsum(x), rel=1e-14)
            assert got["cross"] == pytest.approx(math.fsum(dx * dy), rel=1e-12)
            assert got["m2_b"] == pytest.approx(math.fsum(dy * dy), rel=1e-12)
            for name, terms in (("a.sum", x), ("a.m2", dx * dx), ("cross", dx * dy)):
                seen = data.magnitudes_seen[f"{a}-{b}.{name}"]
                expected = magnitude(terms)
                assert seen.rows == expected.rows
                assert seen.top1 == pytest.approx(expected.top1, rel=1e-12)
                assert seen.total == pytest.approx(expected.total, rel=1e-12)
            index += 1
