"""Entitlements end to end: hub and two nodes as real processes on 127.0.0.1.

The federation grants project access the way people do (apply, submit, approve). Runs
reach the nodes with the hub's signed entitlement, which each node verifies before it
touches its data; discovery counts need no entitlement. A revocation takes effect before
a node's next run: a run queued while the node was down is refused once it comes back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfed.common.errors import Forbidden
from medfed.testing.federation import Federation


def _frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.integers(30, 80, n), "size": rng.normal(20, 5, n)})


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root: Path = tmp_path_factory.mktemp("entitlements")
    shares = {"north": {"cohort": _frame(1, 60)}, "south": {"cohort": _frame(2, 45)}}
    with Federation(root, shares) as federation:
        yield federation


def test_entitled_runs_are_verified_and_answered_by_the_nodes(fed: Federation) -> None:
    result = fed.researcher.tasks.run("count", datasets=["cohort"], timeout=60, progress=False)
    assert result.result.n == 105
    entitlements = fed.researcher.access.entitlements(fed.project_id)
    assert len(entitlements) == 2 and {e.status for e in entitlements} == {"active"}


def test_discovery_counts_need_no_entitlement(fed: Federation) -> None:
    answer = fed.researcher.access.count(["age >= 0"], wait=60)
    assert answer.status == "completed"
    assert answer.count == 60 + 40  # each node rounds to 10 (45 → 40: half to even)
    assert sorted(d.node_name for d in answer.datasets) == ["north", "south"]


def test_a_revocation_takes_effect_before_the_nodes_next_run(fed: Federation) -> None:
    south = fed.nodes["south"]
    south.stop()  # the node is away while its run is queued
    task = fed.researcher.tasks.submit("count", datasets=["cohort"])
    south_dataset = next(r.dataset_id for r in task.runs if r.node_name == "south")
    application = next(
        a
        for a in fed.admin.access.list(project_id=fed.project_id)
        if south_dataset in a.dataset_ids
    )
    assert fed.admin.access.revoke(application.id, "consent withdrawn").state == "revoked"
    south.start()
    finished = fed.researcher.tasks.wait(task.id, timeout=60, progress=False)
    assert finished.status == "failed"
    south_run = next(r for r in finished.runs if r.node_name == "south")
    assert south_run.status == "refused" and "revoked" in (south_run.error or "")
    with pytest.raises(Forbidden, match="revoked"):
        fed.researcher.tasks.submit("count", datasets=["cohort"])
