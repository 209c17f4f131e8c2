"""Crashes lose nothing: a killed node's run is handed out again; a killed hub resumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from medfed.common.resources import TaskPublic
from medfed.sdk.client import Client
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

# 6 s leases against 0.4 s heartbeats: a loaded machine never misses fifteen in a row
SHORT_LEASES = {"MEDFED_LEASE_SECONDS": "6", "MEDFED_SWEEP_SECONDS": "0.3"}


def _wait_until(predicate: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _all_claimed(client: Client, task_id: int, nodes: set[str]) -> bool:
    runs = client.tasks.get(task_id).runs
    return {r.node_name for r in runs if r.status.value == "claimed"} >= nodes


def _one_done_run_per_node(task: TaskPublic) -> dict[str, int]:
    done: dict[str, int] = {}
    for run in task.runs:
        assert run.status.value == "done", run
        done[run.node_name] = done.get(run.node_name, 0) + 1
    return done


def _federation(tmp_path: Path, gbsg2: pd.DataFrame) -> Federation:
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    return Federation(tmp_path, shares, hub_env=SHORT_LEASES, heartbeat_seconds=0.4)


def test_a_node_killed_after_claiming_gets_its_run_again_after_the_lease(
    tmp_path: Path, gbsg2: pd.DataFrame
) -> None:
    with _federation(tmp_path, gbsg2) as fed:
        client = fed.researcher
        # each local step takes 8 s, longer than the 6 s lease: heartbeats must keep it
        task = client.tasks.submit("noop", datasets=["gbsg2"], seconds=8)
        _wait_until(lambda: _all_claimed(client, task.id, {"hospital-a"}))
        node = fed.nodes["hospital-a"]
        node.kill()
        node.start()
        final = client.tasks.wait(task.id, timeout=300, progress=False)
        assert final.status.value == "completed", final.error
        assert _one_done_run_per_node(final) == {"hospital-a": 1, "hospital-b": 1, "hospital-c": 1}
        attempts = {r.node_name: r.attempts for r in final.runs}
        assert attempts == {"hospital-a": 2, "hospital-b": 1, "hospital-c": 1}
        assert final.result == {"nodes": 3}


def test_the_hub_killed_mid_task_and_restarted_on_its_database_completes_the_task(
    tmp_path: Path, gbsg2: pd.DataFrame
) -> None:
    with _federation(tmp_path, gbsg2) as fed:
        client = fed.researcher
        # 8 s steps: every node holds its claim at once, even when they claim seconds apart
        task = client.tasks.submit("noop", datasets=["gbsg2"], seconds=8)
        _wait_until(lambda: _all_claimed(client, task.id, set(fed.nodes)))
        fed.hub.kill()
        fed.hub.start()
        final = client.tasks.wait(task.id, timeout=300, progress=False)
        assert final.status.value == "completed", final.error
        assert _one_done_run_per_node(final) == {"hospital-a": 1, "hospital-b": 1, "hospital-c": 1}
        assert final.result == {"nodes": 3}
        # a mean after the restart still works end to end
        mean = client.tasks.run("mean", datasets=["gbsg2"], columns=["age"], progress=False)
        assert mean.result.columns["age"].mean == pytest.approx(gbsg2["age"].mean(), rel=1e-12)
