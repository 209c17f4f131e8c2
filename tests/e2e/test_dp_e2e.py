"""Nodes in dp mode through a real hub and three real node processes.

Each hospital holds a third of GBSG2 and a policy of ``mode = "dp"`` with ε 5 per run,
a budget of 12 per project and dataset, and a public bound for age. A count and a mean
come back noisy, say so, and report ε spent and left per dataset; the third run would
take the project past 12 at every node and is refused before any data is read. (ε 5
keeps the noise small enough for fixed tolerances of over ten standard deviations: the
mean's noisy sum has scale 3 * 120 / 5 = 72 per node, about 0.26 on the pooled mean.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medfed.sdk.results import TaskFailed
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

POLICY = 'mode = "dp"\ndp = { epsilon_per_run = 5, budget = 12, bounds = { age = [0, 120] } }'


def test_dp_mode_results_say_so_and_the_budget_refuses(tmp_path: Path, gbsg2: pd.DataFrame) -> None:
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    with Federation(tmp_path / "dp", shares, extra_policy=POLICY) as federation:
        client = federation.researcher
        count = client.tasks.run("count", datasets=["gbsg2"], progress=False)
        assert count.mode == "dp" and count.result.privacy is not None
        assert count.result.privacy.epsilon == 5
        datasets = count.result.privacy.datasets
        assert len({d.dataset_id for d in datasets}) == 3
        assert [(d.spent, d.left) for d in datasets] == [(5, pytest.approx(7))] * 3
        assert abs(count.result.n - len(gbsg2)) < 10  # scale 0.2 per node
        assert "mode dp" in count.summary()

        mean = client.tasks.run("mean", datasets=["gbsg2"], columns=["age"], progress=False)
        assert mean.mode == "dp"
        assert mean.result.columns["age"].mean == pytest.approx(gbsg2.age.mean(), abs=3.0)
        assert [d.left for d in mean.result.privacy.datasets] == [pytest.approx(2)] * 3

        with pytest.raises(TaskFailed, match=r"dp budget: project \d+ has spent ε 10 of 12"):
            client.tasks.run("count", datasets=["gbsg2"], progress=False)
        # what has no noisy variant is refused, naming the mode
        with pytest.raises(TaskFailed, match="has no noisy variant"):
            client.tasks.run(
                "crosstab", datasets=["gbsg2"], row="tgrade", col="horTh", progress=False
            )
