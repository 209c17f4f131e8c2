"""``fl.train`` at a real hub (TestClient, real database) with nodes played over the API.

The nodes here claim runs, upload update blobs and post outcomes through the node routes
exactly as the agent does; the arithmetic of the updates is chosen so that each expected
global model is known in advance.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from hubtools import NodeInfo, World, bearer
from medfed.algorithms.learning.examples import TABULAR_LOGREG
from medfed.algorithms.learning.tensors import decode, encode
from medfed.hub.db.models_fl import BlobContent
from medfed.hub.services.tasks import close_overdue_rounds

W0 = {"w": np.array([1.0, 2.0, 3.0], dtype=np.float32), "b": np.zeros(1, dtype=np.float32)}


def _upload_initial(world: World, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    response = world.api.put(
        "/api/blobs",
        content=data,
        headers={**world.researcher.headers, "X-Content-SHA256": sha},
    )
    assert response.status_code == 200, response.text
    return sha


def _start(world: World, **params: Any) -> dict[str, Any]:
    plan = world.api.post(
        "/api/plans",
        json={"name": "logreg", "source": TABULAR_LOGREG},
        headers=world.researcher.headers,
    )
    assert plan.status_code == 201, plan.text
    body = {
        "project_id": world.project_id,
        "datasets": ["cohort"],
        "params": {
            "plan": plan.json()["hash"],
            "initial_weights": _upload_initial(world, encode(W0)),
            "columns": ["age", "size"],
            "label": "size",
            **params,
        },
    }
    response = world.api.post("/api/trainings", json=body, headers=world.researcher.headers)
    assert response.status_code == 201, response.text
    return response.json()


def _claim(world: World, node: NodeInfo) -> dict[str, Any]:
    run = world.claim(node)
    assert run is not None
    return run


def _put(
    world: World, node: NodeInfo, run: dict[str, Any], data: bytes, sha: str | None = None
) -> Any:
    return world.api.put(
        f"/api/node/runs/{run['run_id']}/blob",
        content=data,
        headers={
            **node.headers,
            "X-Lease-Id": run["lease_id"],
            "X-Content-SHA256": sha or hashlib.sha256(data).hexdigest(),
        },
    )


def _answer(world: World, node: NodeInfo, run: dict[str, Any], output: dict[str, Any]) -> None:
    body = {"lease_id": run["lease_id"], "status": "done", "output_status": "ok", "output": output}
    response = world.post_outcome(node, run["run_id"], body)
    assert response.status_code == 200, response.text


def _prepare(world: World, *nodes: NodeInfo) -> None:
    for node in nodes:
        run = _claim(world, node)
        assert run["state"] == {} and run["algorithm"] == "fl.train"
        _answer(world, node, run, {"ready": 1, "n": 100})


def _train(world: World, node: NodeInfo, step: float, n: int, accuracy: float) -> None:
    run = _claim(world, node)
    assert run["state"]["phase"] == "train"
    update = {k: np.full_like(v, step) for k, v in W0.items()}
    response = _put(world, node, run, encode(update))
    assert response.status_code == 200, response.text
    output = {
        "update": response.json()["sha256"],
        "n": n,
        "n_eval": 20,
        "global_metrics": {"accuracy": accuracy},
        "local_metrics": {"accuracy": accuracy},
        "seconds": 0.1,
    }
    _answer(world, node, run, output)


def test_fedavg_rounds_weight_updates_by_samples_and_register_the_model(world: World) -> None:
    task = _start(world, rounds=2, strategy="fedavg")
    a, b = world.node_a, world.node_b
    _prepare(world, a, b)
    _train(world, a, 1.0, 100, 0.5)  # round 0: mean (100·1 + 300·3) / 400 = 2.5
    _train(world, b, 3.0, 300, 0.9)
    _train(world, a, -1.0, 100, 0.7)  # round 1: mean (100·-1 + 100·1) / 200 = 0
    _train(world, b, 1.0, 100, 0.7)
    for node in (a, b):  # evaluate phase: the final model on each node's held-out rows
        run = _claim(world, node)
        assert run["state"]["phase"] == "evaluate"
        _answer(world, node, run, {"n": 100, "n_eval": 20, "global_metrics": {"accuracy": 0.8}})
    final = world.task(task["id"])
    assert final["status"] == "completed", final["error"]
    result = final["result"]
    assert result["rounds"] == 2 and result["metrics"] == {"accuracy": 0.8}
    assert [h["global_metrics"]["accuracy"] for h in result["history"]] == [0.7, 0.7]
    assert [h["samples"] for h in result["history"]] == [400, 200]

    models = world.api.get(
        "/api/models", params={"project_id": world.project_id}, headers=world.researcher.headers
    ).json()
    assert [(m["version"], m["task_id"], m["blob_sha256"]) for m in models] == [
        (1, task["id"], result["model"])
    ]
    download = world.api.get(
        f"/api/models/{models[0]['id']}/download", headers=world.researcher.headers
    )
    assert download.status_code == 200
    weights = decode(download.content)
    np.testing.assert_allclose(weights["w"], W0["w"] + 2.5)
    np.testing.assert_allclose(weights["b"], W0["b"] + 2.5)
    outsider = world.api.get(
        f"/api/models/{models[0]['id']}/download", headers=world.outsider.headers
    )
    assert outsider.status_code == 403

    progress = world.api.get(f"/api/trainings/{task['id']}", headers=world.researcher.headers)
    phases = [t["phase"] for t in progress.json()["timings"]]
    assert phases == ["prepare", "train", "train", "evaluate"]


def test_a_round_proceeds_at_quorum_and_the_late_node_gets_the_next_round(world: World) -> None:
    task = _start(world, rounds=2, quorum=0.5)
    a, b = world.node_a, world.node_b
    _prepare(world, a)  # a quorum of 1: the round proceeds, b's prepare run is closed
    late = _claim(world, b)  # node b claims training round 0 and goes silent
    _train(world, a, 2.0, 100, 0.5)
    runs = world.all_runs(task["id"])
    closed = next(r for r in runs if r["run_id"] == late["run_id"])
    assert closed["status"] == "failed" and closed["error"] == "round closed: quorum reached"
    assert _put(world, b, late, encode(W0)).status_code == 409  # its lease is gone
    rejoined = _claim(world, b)  # round 1: b has a run again
    assert rejoined["state"]["phase"] == "train" and rejoined["state"]["train_round"] == 1


@pytest.mark.hub(sweep_seconds=60.0)
def test_too_few_answers_at_the_round_timeout_fail_the_training_with_reasons(
    world: World,
) -> None:
    task = _start(world, rounds=3, round_timeout_s=0.05)
    _prepare(world, world.node_a, world.node_b)
    _train(world, world.node_a, 1.0, 100, 0.5)
    time.sleep(0.1)
    with world.app.state.sessionmaker() as session:
        assert close_overdue_rounds(session, settings=world.app.state.settings) == 1
        session.commit()
    final = world.task(task["id"])
    assert final["status"] == "failed"
    assert "only 1 of 2 runs of round 1 answered; the quorum is 2" in final["error"]
    assert "node-b failed: round closed: timeout 0.05 s" in final["error"]


@pytest.mark.hub(max_blob_bytes=4096)
def test_blob_uploads_are_checked_and_nodes_fetch_weights_only(world: World) -> None:
    task = _start(world, rounds=1)
    _prepare(world, world.node_a, world.node_b)
    run = _claim(world, world.node_a)
    update = encode({k: np.ones_like(v) for k, v in W0.items()})
    wrong = _put(world, world.node_a, run, update, sha="0" * 64)
    assert wrong.status_code == 422 and "hashes to" in wrong.json()["detail"]
    big = _put(world, world.node_a, run, b"x" * 5000)
    assert big.status_code == 413 and "4096 bytes" in big.json()["detail"]  # cut at the edge
    stale = dict(run, lease_id="not-the-lease")
    assert _put(world, world.node_a, stale, update).status_code == 409
    assert _put(world, world.node_b, run, update).status_code == 404  # not b's run
    stored = _put(world, world.node_a, run, update)
    assert stored.status_code == 200
    sha = stored.json()["sha256"]
    # the refused uploads left nothing behind, in either blob store
    assert _stored(world) == {sha, run["params"]["initial_weights"]}
    other = world.api.get(f"/api/node/blobs/{sha}", headers=world.node_b.headers)
    assert other.status_code == 403  # an update is never handed to a node
    initial = world.api.get(
        f"/api/node/blobs/{run['params']['initial_weights']}", headers=world.node_b.headers
    )
    assert initial.status_code == 200 and decode(initial.content)["w"].tolist() == [1, 2, 3]
    assert task["algorithm"] == "fl.train"


def _stored(world: World) -> set[str]:
    """Every blob content the hub's store holds (files, or rows when in the database)."""
    settings = world.app.state.settings
    if settings.blob_backend == "files":
        return {p.name for p in (settings.data_dir / "blobs").rglob("*") if p.is_file()}
    with world.app.state.engine.connect() as conn:
        return set(conn.scalars(sa.select(BlobContent.sha256)))  # NULL: an upload left over


def test_only_admins_and_dac_members_set_a_privacy_budget(world: World) -> None:
    path = f"/api/projects/{world.project_id}/privacy-budget"
    body = {"epsilon": 2.0, "delta": 1e-5}
    assert world.api.put(path, json=body, headers=world.researcher.headers).status_code == 403
    response = world.api.put(path, json=body, headers=bearer(world.admin.token))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "project_id": world.project_id,
        "epsilon": 2.0,
        "delta": 1e-5,
        "spent": 0.0,
    }
    assert world.api.get(path, headers=world.researcher.headers).json()["epsilon"] == 2.0
