"""Dominance rules (ACRO's nk- and p %-rules) on the sums and means a local step releases.

Each test runs a real local step over a real table (lifelines' GBSG2, scikit-learn's
diabetes) through the node's :class:`RecordingData`, then asks :func:`dominated` — what
the agent does after the output rules pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2

from medfed.algorithms.base import LocalContext
from medfed.algorithms.registry import get_algorithm
from medfed.node.gate import RecordingData
from medfed.node.gate.dominance import DominancePolicy, Magnitude, dominated, magnitude
from medfed.node.stores.tables import TableStore

POLICY = DominancePolicy()
KEY = b"k" * 32


def hit(name: str, raw: dict[str, Any], frame: pd.DataFrame) -> str | None:
    """The dominance rule a node would apply to this run, or None."""
    data = RecordingData(TableStore(frame, name="t.csv"), key=KEY)
    algorithm = get_algorithm(name)
    algorithm.local(algorithm.parse_params(raw), LocalContext(data=data, recorder=data))
    return dominated(data.magnitudes_seen, POLICY)


@pytest.fixture(scope="module")
def gbsg2() -> pd.DataFrame:
    return load_gbsg2()


def test_magnitude_keeps_total_and_two_largest_absolute_values_only() -> None:
    m = magnitude(np.array([3.0, -10.0, 1.0, np.nan, 2.0]))
    assert m == Magnitude(total=16.0, top1=10.0, top2=3.0, rows=4)
    assert magnitude(np.array([])) == Magnitude(0.0, 0.0, 0.0, 0)


def test_usual_means_and_summaries_on_real_data_pass(gbsg2: pd.DataFrame) -> None:
    columns = ["age", "tsize", "pnodes", "progrec", "estrec", "time"]
    assert hit("mean", {"columns": columns}, gbsg2) is None
    assert hit("summary", {"columns": columns}, gbsg2) is None
    assert hit("grouped_summary", {"by": "tgrade", "columns": ["age", "tsize"]}, gbsg2) is None
    assert hit("ttest", {"column": "age", "group": "horTh"}, gbsg2) is None
    assert hit("covariance", {"columns": ["age", "tsize", "time"]}, gbsg2) is None


def test_one_outlier_that_dominates_a_mean_withholds_it(gbsg2: pd.DataFrame) -> None:
    # 50 real ages and one planted value ten thousand times larger: n is far above k, but
    # the mean would tell the outlier to within a per cent
    frame = gbsg2.iloc[:50].copy()
    frame.loc[frame.index[0], "tsize"] = 1_000_000
    assert hit("mean", {"columns": ["tsize"]}, frame) == "nk-dominance: tsize.sum"
    assert hit("grouped_summary", {"by": "horTh", "columns": ["tsize"]}, frame) is not None
    assert hit("covariance", {"columns": ["age", "tsize"]}, frame) is not None


def test_two_positives_in_a_binary_column_dominate_its_mean(gbsg2: pd.DataFrame) -> None:
    frame = gbsg2.iloc[:100].copy()
    frame["flag"] = 0
    frame.loc[frame.index[:2], "flag"] = 1
    assert hit("mean", {"columns": ["flag"]}, frame) == "nk-dominance: flag.sum"
    frame.loc[frame.index[:10], "flag"] = 1  # ten positives: no two rows dominate
    assert hit("mean", {"columns": ["flag"]}, frame) is None


def test_an_outlier_in_the_spread_is_caught_by_the_sum_of_squares(gbsg2: pd.DataFrame) -> None:
    # values near 1000 with one at 1400: the sum is not dominated, its variance is
    frame = gbsg2.iloc[:60].copy()
    frame["x"] = 1000.0 + (np.arange(60) % 3)
    frame.loc[frame.index[7], "x"] = 1400.0
    assert hit("mean", {"columns": ["x"]}, frame) is None
    assert hit("variance", {"columns": ["x"]}, frame) == "nk-dominance: x.m2"


def test_p_percent_rule_catches_what_nk_lets_through() -> None:
    # with ACRO's defaults the p % rule (p = 10 %) is implied by (2, 90 %)-dominance; a node
    # that loosens k to 99 % still withholds when the rest is 3 % of the total, 5 % of the
    # largest contribution
    m = Magnitude(total=100.0, top1=60.0, top2=37.0, rows=30)
    assert dominated({"x.sum": m}, POLICY) == "nk-dominance: x.sum"
    loose = DominancePolicy(dominance_k=0.99)
    assert dominated({"x.sum": m}, loose) == "p-percent: x.sum"
    assert dominated({"x.sum": m}, DominancePolicy(dominance_k=0.99, p_percent=0.0)) is None
    assert dominated({"zero.sum": Magnitude(0.0, 0.0, 0.0, 9)}, POLICY) is None


def test_the_values_themselves_are_not_kept(gbsg2: pd.DataFrame) -> None:
    data = RecordingData(TableStore(gbsg2, name="t.csv"), key=KEY)
    algorithm = get_algorithm("summary")
    ctx = LocalContext(data=data, recorder=data)
    algorithm.local(algorithm.parse_params({"columns": ["age"]}), ctx)
    assert set(data.magnitudes_seen) == {"age.sum", "age.m2"}
    assert all(isinstance(m, Magnitude) for m in data.magnitudes_seen.values())
