"""Law: for any split of the rows, the federated result equals the pooled one (k = 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally

BINS = [-50.0, -10.0, 0.0, 0.5, 10.0, 50.0]

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def split_tables(draw: st.DrawFn) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    n = draw(st.integers(min_value=2, max_value=60))
    frame = pd.DataFrame(
        {
            "x": draw(st.lists(finite, min_size=n, max_size=n)),
            "y": draw(st.lists(st.integers(-100, 100), min_size=n, max_size=n)),
            "g": draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n)),
        }
    )
    shares = draw(st.integers(min_value=1, max_value=6))
    owner = draw(st.lists(st.integers(0, shares - 1), min_size=n, max_size=n))
    parts = [frame[np.asarray(owner) == i].reset_index(drop=True) for i in range(shares)]
    return frame, parts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_tables())
def test_federated_equals_pooled(data: tuple[pd.DataFrame, list[pd.DataFrame]]) -> None:
    frame, parts = data
    stores = [
        TableStore(part.astype(frame.dtypes.to_dict()), name=f"s{i}")
        for i, part in enumerate(parts)
    ]
    where = {"column": "g", "op": "in", "value": ["a", "b"]}
    pooled = frame[frame.g.isin(["a", "b"])]

    count = run_locally("count", {"where": where}, stores, min_cell_count=1)
    assert count["n"] == len(pooled)

    moments = run_locally("variance", {"columns": ["x", "y"]}, stores, min_cell_count=1)
    for column in ("x", "y"):
        stats = moments["columns"][column]
        assert stats["n"] == len(frame)
        np.testing.assert_allclose(stats["mean"], frame[column].mean(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stats["variance"], frame[column].var(), rtol=1e-9, atol=1e-6)

    hist = run_locally(
        "histogram", {"column": "x", "bins": BINS, "where": where}, stores, min_cell_count=1
    )
    assert hist["counts"] == np.histogram(pooled.x, bins=BINS)[0].tolist()
    assert hist["below"] == int((pooled.x < BINS[0]).sum())
    assert hist["above"] == int((pooled.x > BINS[-1]).sum())

    table = run_locally("crosstab", {"row": "g", "col": "y"}, stores, min_cell_count=1)
    expected = pd.crosstab(frame.g, frame.y)
    assert table["row_levels"] == list(expected.index)
    assert table["col_levels"] == [str(v) for v in expected.columns]
    assert table["table"] == expected.to_numpy().tolist()
