"""Results people read: summary tables and PNG plots of the first statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lifelines.datasets import load_gbsg2

from medfed.algorithms.registry import get_algorithm
from medfed.common.errors import BadRequest
from medfed.node.stores.tables import TableStore
from medfed.sdk.results import TaskResult
from medfed.testing.local import run_locally

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stores() -> list[TableStore]:
    frame = load_gbsg2()
    return [TableStore(part, name=f"s{i}") for i, part in enumerate([frame[:300], frame[300:]])]


def _result(name: str, raw: dict[str, Any], stores: list[TableStore]) -> TaskResult[Any]:
    model = get_algorithm(name).Result.model_validate(run_locally(name, raw, stores))
    return TaskResult(task_id=1, algorithm=name, result=model, nodes=[], rounds=1)


def test_summaries_name_what_they_show(stores: list[TableStore]) -> None:
    summary = _result("summary", {"columns": ["age", "tsize"]}, stores).summary()
    assert "age" in summary and "variance" in summary and "min_bound" in summary
    tab = _result("crosstab", {"row": "tgrade", "col": "horTh"}, stores).summary()
    assert "II" in tab and "yes" in tab
    assert _result("count", {}, stores).summary() == "count: 686"


def test_histogram_plot_is_a_png_and_a_count_has_no_plot(
    stores: list[TableStore], tmp_path: Path
) -> None:
    hist = _result("histogram", {"column": "age", "bins": [20, 40, 50, 90]}, stores)
    hist.plot(str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG
    assert "[40, 50)" in hist.summary()
    with pytest.raises(BadRequest, match="count results have no plot"):
        _result("count", {}, stores).plot(str(tmp_path / "c.png"))
