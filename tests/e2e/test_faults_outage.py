"""Nodes never give up: outages while results are uploaded, kills, a stopped node, deadlines.

Real processes: a hub and three nodes. A database outage (SQLite: this test holds
``BEGIN EXCLUSIVE`` on the hub's file; PostgreSQL, where ``MEDFED_TEST_DATABASE_URL`` names a
server: connections to a per-test database are refused and the hub's are terminated) or a
killed hub meet results on their way; every task ends, no result is doubled or lost, and
every node is alive at the end without being restarted by the test. Waits are on
conditions with generous deadlines, never on the machine's speed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from medfed.common.resources import TaskPublic
from medfed.sdk.client import Client
from medfed.testing.demo import split_gbsg2
from medfed.testing.faults import pg_database, pg_outage, sqlite_outage
from medfed.testing.federation import Federation
from medfed.testing.processes import NodeProcess

pytestmark = pytest.mark.e2e

PG_URL = os.environ.get("MEDFED_TEST_DATABASE_URL")
#: leases long enough that a result held up by the fault is accepted under its first lease
LONG_LEASES = {
    "MEDFED_LEASE_SECONDS": "600",  # a loaded machine may keep the hub down a minute
    "MEDFED_SWEEP_SECONDS": "0.3",
    # short enough that an upload meets a 503 while the test holds the lock (the outage
    # lasts until every node retries), long enough that setup writes on a loaded machine
    # wait out a peer's write instead of failing (0.3 s failed a federation's setup)
    "MEDFED_SQLITE_BUSY_SECONDS": "5",
}


def _wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not reached in time: {what}")


def _claimed(client: Client, task_id: int) -> set[str]:
    runs = client.tasks.get(task_id).runs
    return {r.node_name for r in runs if r.status.value == "claimed"}


def _outbox(node: NodeProcess) -> list[Path]:
    folder = node.folder / "state" / "outbox"
    return sorted(folder.glob("*.json")) if folder.exists() else []


def _log(node: NodeProcess) -> str:
    return (node.folder / "node.log").read_text(errors="replace")


def _assert_whole(final: TaskPublic, nodes: int = 3) -> None:
    """Completed, one done run per node, each accepted under its first lease."""
    assert final.status.value == "completed", final.error
    assert sorted(r.node_name for r in final.runs if r.status.value == "done") == sorted(
        {r.node_name for r in final.runs}
    )
    assert len(final.runs) == nodes
    assert final.result == {"nodes": nodes}


def _alive(fed: Federation) -> None:
    for node in fed.nodes.values():
        assert node.process is not None and node.process.poll() is None, node.name


def _federation(
    root: Path, gbsg2: pd.DataFrame, env: dict[str, str], url: str | None
) -> Federation:
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    return Federation(root, shares, hub_env=env, heartbeat_seconds=0.4, database_url=url)


@pytest.fixture(params=["sqlite", "postgresql"] if PG_URL else ["sqlite"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the hub's folder) or a fresh PostgreSQL database for this test."""
    if request.param == "sqlite":
        yield None
        return
    assert PG_URL is not None
    with pg_database(PG_URL, "medfed_faults_") as url:
        yield url


def test_a_database_outage_during_result_uploads_loses_and_doubles_nothing(
    tmp_path: Path, gbsg2: pd.DataFrame, database: str | None
) -> None:
    with _federation(tmp_path, gbsg2, LONG_LEASES, database) as fed:
        client = fed.researcher
        task = client.tasks.submit("noop", datasets=["gbsg2"], seconds=1.5)
        _wait_until(lambda: _claimed(client, task.id) == set(fed.nodes), what="all claimed")
        outage = pg_outage(database) if database else sqlite_outage(fed.hub.data_dir / "hub.db")
        with outage:
            # every node computed its result, stored it and met the outage posting it
            _wait_until(
                lambda: all(
                    _outbox(n) and "/outcome: the hub is unavailable" in _log(n)
                    for n in fed.nodes.values()
                ),
                what="each node retrying its upload",
            )
        final = client.tasks.wait(task.id, timeout=120, progress=False)
        _assert_whole(final)
        assert {r.attempts for r in final.runs} == {1}  # accepted once, never recomputed
        _wait_until(lambda: not any(_outbox(n) for n in fed.nodes.values()), what="outboxes")
        _alive(fed)
        # the federation works on after the outage
        again = client.tasks.run("noop", datasets=["gbsg2"], progress=False)
        assert again.result.nodes == 3


def test_a_hub_killed_during_uploads_and_a_node_killed_with_its_result_on_disk(
    tmp_path: Path, gbsg2: pd.DataFrame, database: str | None
) -> None:
    with _federation(tmp_path, gbsg2, LONG_LEASES, database) as fed:
        client = fed.researcher
        task = client.tasks.submit("noop", datasets=["gbsg2"], seconds=1.5)
        _wait_until(lambda: _claimed(client, task.id) == set(fed.nodes), what="all claimed")
        fed.hub.kill()
        _wait_until(lambda: all(_outbox(n) for n in fed.nodes.values()), what="results stored")
        node = fed.nodes["hospital-a"]
        node.kill()  # a crash with its result computed and not yet delivered
        assert len(_outbox(node)) == 1
        fed.hub.start()
        node.start()
        final = client.tasks.wait(task.id, timeout=120, progress=False)
        _assert_whole(final)
        assert {r.attempts for r in final.runs} == {1}  # the stored bytes were accepted
        assert "re-sending the result kept on disk" in _log(node)
        _wait_until(lambda: not any(_outbox(n) for n in fed.nodes.values()), what="outboxes")
        _alive(fed)
        # the node's log holds the run once, accepted
        lines = [
            line
            for line in (node.folder / "state" / "runs.jsonl").read_text().splitlines()
            if f'"task_id": {task.id}' in line or f'"task_id":{task.id}' in line
        ]
        assert len(lines) == 1 and '"accepted": true' in lines[0].replace('":true', '": true')


def test_a_node_stopped_past_its_lease_recovers_and_an_unclaimed_run_fails_its_task(
    tmp_path: Path, gbsg2: pd.DataFrame
) -> None:
    env = {
        "MEDFED_LEASE_SECONDS": "6",  # the other nodes' 1 s steps end well inside it
        "MEDFED_SWEEP_SECONDS": "0.3",
        "MEDFED_RUN_DEADLINES": '{"count": 3}',
    }
    with _federation(tmp_path, gbsg2, env, None) as fed:
        client = fed.researcher
        node = fed.nodes["hospital-a"]
        assert node.process is not None
        task = client.tasks.submit("noop", datasets=["gbsg2"], seconds=1.0)
        _wait_until(lambda: "hospital-a" in _claimed(client, task.id), what="a claimed")
        node.process.send_signal(signal.SIGSTOP)
        try:
            _wait_until(
                lambda: any(
                    r.node_name == "hospital-a" and r.status.value == "pending"
                    for r in client.tasks.get(task.id).runs
                ),
                what="the lease expired",
            )
        finally:
            node.process.send_signal(signal.SIGCONT)
        final = client.tasks.wait(task.id, timeout=120, progress=False)
        _assert_whole(final)
        attempts = {r.node_name: r.attempts for r in final.runs}
        assert attempts == {"hospital-a": 2, "hospital-b": 1, "hospital-c": 1}
        _alive(fed)

        # a run no node claims: its deadline fails it, and the task ends with the reason
        fed.nodes["hospital-b"].stop()
        fed.nodes["hospital-c"].stop()
        failed = client.tasks.wait(
            client.tasks.submit("count", datasets=["gbsg2"]).id, timeout=120, progress=False
        )
        assert failed.status.value == "failed"
        assert failed.error is not None
        assert "deadline: no answer within 3 s (never claimed)" in failed.error
        by_node = {r.node_name: r for r in failed.runs}
        assert by_node["hospital-a"].status.value == "done"
        assert by_node["hospital-b"].status.value == "failed"
        assert by_node["hospital-b"].error == "deadline: no answer within 3 s (never claimed)"
        assert node.process.poll() is None
