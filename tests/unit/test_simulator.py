"""The node simulator answers like nodes: a federated mean over simulated nodes is the pooled one.

Three simulated nodes (real node secrets made through the admin API) register the same
60-row table through the hub app's node API (served over real HTTP), long-poll it, run
``mean``'s real local step through the gate and post outcomes; the task's mean equals
pandas' mean of the table (the pooled data is three copies of it), and ``noop`` tasks
dispatched to single nodes are answered once each.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from hubtools import World, bearer, grant_access
from livehub import serve_app
from medfed.testing.simulator import Simulator, default_table


def test_simulated_nodes_answer_a_mean_task_with_the_pooled_mean(world: World) -> None:
    api, admin = world.api, world.admin.headers
    secrets = [
        api.post(
            "/api/nodes", json={"name": f"sim{i}", "organization_id": world.org_a}, headers=admin
        ).json()["secret"]
        for i in range(3)
    ]
    table = default_table()

    async def scenario(sim: Simulator) -> tuple[dict[str, object], list[dict[str, object]]]:
        ids = await sim.register()
        for dataset_id in ids:
            released = await asyncio.to_thread(
                api.post, f"/api/datasets/{dataset_id}/release", headers=admin
            )
            assert released.status_code == 200, released.text
        await asyncio.to_thread(grant_access, api, admin, world.researcher, world.project_id, ids)
        serving = asyncio.create_task(sim.serve())
        try:
            mean = await asyncio.to_thread(_finish, world, "mean", ids, {"columns": ["x"]})
            noops = [
                await asyncio.to_thread(_finish, world, "noop", [dataset_id], {})
                for dataset_id in ids
            ]
            # a task ends when the hub commits its last answer; the node counts that answer
            # once the hub's reply to it arrives, which may be after the researcher's
            deadline = time.monotonic() + 60
            while sum(sim.answered) < 6 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            sim.stop()
            await serving
        return mean, noops

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(world.app.state.settings, "min_nodes", 1)  # single-dataset noop tasks
        with serve_app(world.app) as url:  # real HTTP: the simulator's aiohttp clients
            sim = Simulator(url, secrets, table=table, poll_wait=5.0)
            mean, noops = asyncio.run(scenario(sim))
    assert mean["status"] == "completed", mean
    result = mean["result"]
    assert isinstance(result, dict)
    assert result["columns"]["x"]["mean"] == pytest.approx(table["x"].mean(), rel=1e-12)
    assert all(n["status"] == "completed" for n in noops), noops
    assert sim.answered == [2, 2, 2]
    assert sim.errors == []
    assert sim.polling.is_set()  # every node had its first poll answered


def _finish(
    world: World, algorithm: str, datasets: list[int], params: dict[str, object]
) -> dict[str, object]:
    task = world.create_task(algorithm, datasets=list(datasets), params=params)
    deadline = time.monotonic() + 120  # generous: answered in well under a second
    while True:
        got = world.api.get(
            f"/api/tasks/{task['id']}/wait",
            params={"timeout": 10},
            headers=bearer(world.researcher.token),
        )
        assert got.status_code == 200, got.text
        body: dict[str, object] = got.json()
        if body["status"] != "running" or time.monotonic() > deadline:
            return body
