"""Law: for any split of the rows over 2-6 nodes, the federated result is the pooled one.

The gate's threshold is 1 here, so nothing is withheld and the law holds exactly:
quantiles equal :func:`numpy.quantile` bit for bit; matrices, grouped summaries and the
two tests equal pandas / scipy on the pooled rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.one_of(
    st.integers(-1000, 1000).map(float),
    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False).map(lambda v: round(v, 2)),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


@st.composite
def split_tables(draw: st.DrawFn, min_rows: int = 6) -> tuple[pd.DataFrame, list[TableStore]]:
    n = draw(st.integers(min_value=min_rows, max_value=50))
    x = draw(st.lists(values, min_size=n, max_size=n))
    y = draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))
    frame = pd.DataFrame(
        {
            "x": np.asarray(x, dtype=float),
            "y": np.asarray([np.nan if v is None else v for v in y], dtype=float),
            "z": np.asarray(draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))),
            "g": draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n)),
            "h": draw(st.lists(st.sampled_from(["u", "v"]), min_size=n, max_size=n)),
        }
    )
    shares = draw(st.integers(min_value=2, max_value=6))
    owner = np.asarray(draw(st.lists(st.integers(0, shares - 1), min_size=n, max_size=n)))
    stores = [
        TableStore(
            frame[owner == i].reset_index(drop=True).astype(frame.dtypes.to_dict()), name=f"s{i}"
        )
        for i in range(shares)
    ]
    return frame, stores


@SETTINGS
@given(split_tables(), st.lists(st.floats(0.001, 0.999), min_size=1, max_size=4, unique=True))
def test_quantiles_equal_numpy(
    data: tuple[pd.DataFrame, list[TableStore]], probs: list[float]
) -> None:
    frame, stores = data
    result = run_locally("quantiles", {"column": "x", "probs": probs}, stores, min_cell_count=1)
    assert all(q["exact"] for q in result["quantiles"])
    assert [q["value"] for q in result["quantiles"]] == np.quantile(frame.x, probs).tolist()
    gappy = run_locally("quantiles", {"column": "y", "probs": probs}, stores, min_cell_count=1)
    present = frame.y.dropna()
    assert gappy["n"] == len(present)
    if len(present):
        assert [q["value"] for q in gappy["quantiles"]] == np.quantile(present, probs).tolist()


@SETTINGS
@given(split_tables(), st.booleans())
def test_matrices_and_grouped_summaries_equal_pandas(
    data: tuple[pd.DataFrame, list[TableStore]], pairwise: bool
) -> None:
    frame, stores = data
    columns = ["x", "y", "z"]
    pooled = frame[columns] if pairwise else frame[columns].dropna()
    params = {"columns": columns, "pairwise": pairwise}
    cov = run_locally("covariance", params, stores, min_cell_count=1)
    corr = run_locally("correlation", params, stores, min_cell_count=1)
    for got, want, atol in ((cov, pooled.cov(), 1e-6), (corr, pooled.corr(), 1e-9)):
        matrix = np.array([[np.nan if v is None else v for v in row] for row in got["matrix"]])
        expected = want.to_numpy()
        if got is corr:  # pandas gives 1 ± ulp on the diagonal, NaN for a constant column
            np.fill_diagonal(expected, np.where(np.isnan(np.diag(expected)), np.nan, 1.0))
        np.testing.assert_allclose(matrix, expected, rtol=1e-9, atol=atol)

    params = {"columns": ["x", "y"], "by": "g"}
    result = run_locally("grouped_summary", params, stores, min_cell_count=1)
    expected = frame.groupby("g")[["x", "y"]].agg(["count", "mean", "var"])
    assert sorted(result["groups"]) == sorted(expected.index)
    for level, row in expected.iterrows():
        for column in ("x", "y"):
            got = result["groups"][str(level)][column]
            assert got["n"] == row[(column, "count")]
            for stat, name in (("mean", "mean"), ("variance", "var")):
                want = row[(column, name)]
                if math.isnan(want):
                    assert got[stat] is None
                else:
                    np.testing.assert_allclose(got[stat], want, rtol=1e-9, atol=1e-6)


@SETTINGS
@given(split_tables(), st.booleans())
def test_ttest_and_chisq_equal_scipy(
    data: tuple[pd.DataFrame, list[TableStore]], correction: bool
) -> None:
    frame, stores = data
    params = {"row": "g", "col": "h", "correction": correction}
    result = run_locally("chisq", params, stores, min_cell_count=1, min_rows=1)
    table = pd.crosstab(frame.g, frame.h)
    chi2 = stats.chi2_contingency(table, correction=correction)
    assert result["observed"] == table.to_numpy().tolist()
    assert result["dof"] == chi2.dof
    np.testing.assert_allclose(result["statistic"], chi2.statistic, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result["pvalue"], chi2.pvalue, rtol=1e-12)
    np.testing.assert_allclose(result["expected"], chi2.expected_freq, rtol=1e-12)

    a, b = frame.x[frame.h == "u"], frame.x[frame.h == "v"]
    assume(len(a) >= 2 and len(b) >= 2 and a.var() > 0 and b.var() > 0)
    params = {"column": "x", "group": "h"}
    result = run_locally("ttest", params, stores, min_cell_count=1, min_rows=1)
    want = stats.ttest_ind(a, b, equal_var=False)
    np.testing.assert_allclose(result["statistic"], want.statistic, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(result["pvalue"], want.pvalue, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result["df"], want.df, rtol=1e-9)
    np.testing.assert_allclose(
        result["confidence_interval"], want.confidence_interval(), rtol=1e-9, atol=1e-6
    )
