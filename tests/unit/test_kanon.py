"""k-anonymity: group sizes, suppression of small groups, refusal, and the law behind it."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medfed.common.errors import BadRequest, Refused
from medfed.node.ingest.tables.kanon import achieved_k, enforce, group_sizes, verify
from medfed.node.ingest.tables.strategy import KAnonymity


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "band": ["0-9"] * 5 + ["10-19"] * 3 + [None] * 2 + ["10-19"],
            "sex": ["F"] * 5 + ["M"] * 3 + ["F"] * 2 + ["F"],
            "value": range(11),
        }
    )


def test_group_sizes_count_nulls_as_a_group() -> None:
    sizes = group_sizes(frame(), ["band", "sex"])
    assert sorted(sizes.tolist()) == [1, 2, 3, 5]
    assert int(sizes.sum()) == 11
    assert achieved_k(frame(), ["band", "sex"]) == 1
    assert achieved_k(frame().iloc[:0], ["band"]) is None
    with pytest.raises(BadRequest, match="not in the table: zip"):
        group_sizes(frame(), ["zip"])


def test_suppress_drops_whole_small_groups() -> None:
    out, report = enforce(frame(), KAnonymity(quasi_identifiers=["band", "sex"], k=3))
    assert out["value"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert report.suppressed_groups == 2 and report.suppressed_rows == 3
    assert report.groups_in == 4 and report.groups_out == 2
    assert report.smallest_group_in == 1 and report.achieved_k == 3


def test_refuse_names_the_rule() -> None:
    check = KAnonymity(quasi_identifiers=["band", "sex"], k=3, on_violation="refuse")
    with pytest.raises(Refused, match=r"2 of 4 groups over \(band, sex\) have fewer than k=3"):
        enforce(frame(), check)
    out, report = enforce(frame().iloc[:8], check)  # already 3-anonymous: nothing to refuse
    assert len(out) == 8 and report.achieved_k == 3


def test_verify_recomputes_from_the_frame() -> None:
    check = KAnonymity(quasi_identifiers=["band", "sex"], k=3)
    assert verify(frame().iloc[:8], check) == 3
    with pytest.raises(Refused, match=r"a group over \(band, sex\) has 1 rows, fewer than k=3"):
        verify(frame(), check)
    with pytest.raises(Refused, match="no rows to release"):
        verify(frame().iloc[:0], check)


def test_k_is_at_least_two() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        KAnonymity(quasi_identifiers=["a"], k=1)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 3)), max_size=60
    ),
    k=st.integers(2, 8),
)
def test_suppression_law(rows: list[tuple[str | None, int]], k: int) -> None:
    """Output = exactly the rows whose input group has >= k rows; every output group >= k."""
    data = pd.DataFrame(rows, columns=["x", "y"], dtype=object)
    data["row"] = range(len(data))
    out, report = enforce(data, KAnonymity(quasi_identifiers=["x", "y"], k=k))
    counts = data.groupby(["x", "y"], dropna=False)["row"].transform("size")
    assert out["row"].tolist() == data.loc[counts >= k, "row"].tolist()
    assert report.suppressed_rows == int((counts < k).sum())
    if len(out):
        assert int(group_sizes(out, ["x", "y"]).min()) >= k
    else:
        assert report.achieved_k is None
