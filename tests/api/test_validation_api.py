"""Validation studies through the real hub app (TestClient), nodes' steps in process.

The world (``hubtools``): Org A with researcher rita and node-a, Org B with researcher
otto and node-b; each node holds ``cohort`` (age, grade, size). Here each node's rows are
half of GBSG2 (age, tumour grade, tumour size); the model is a scikit-learn logistic
regression of grade III on age and size, exported by skl2onnx and uploaded by rita.
The tests act as the nodes: claim each run, run the real local step with an in-process
scorer, pass the real gate and post the answer, round after round.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2
from sklearn.metrics import brier_score_loss

from hubtools import SQLITE_ONLY, Person, World, done
from medfed.algorithms.base import LocalContext
from medfed.algorithms.registry import get_algorithm
from medfed.algorithms.validation.scoring import Consent, InProcessScorer
from medfed.node.gate import GatePolicy, apply_gate
from medfed.node.stores.tables import TableStore
from validationtools import pooled_scores, sklearn_onnx

pytestmark = SQLITE_ONLY

FEATURES = ["age", "size"]


def _frames() -> dict[str, pd.DataFrame]:
    g = load_gbsg2()
    frame = pd.DataFrame({"age": g.age, "grade": g.tgrade.astype(str), "size": g.tsize * 1.0})
    return {"node-a": frame[frame.index % 2 == 0], "node-b": frame[frame.index % 2 == 1]}


FRAMES = _frames()
MODEL = sklearn_onnx(
    pd.concat(FRAMES.values()).assign(y=lambda f: (f.grade == "III").astype(int)), FEATURES, "y"
)
SHA = hashlib.sha256(MODEL).hexdigest()


def _upload(world: World, data: bytes = MODEL, person: Person | None = None) -> Any:
    who = person or world.researcher
    digest = hashlib.sha256(data).hexdigest()
    stored = world.api.put(
        "/api/blobs",
        content=data,
        headers={
            **who.headers,
            "X-Content-SHA256": digest,
            "Content-Type": "application/octet-stream",
        },
    )
    assert stored.status_code == 200, stored.text
    body = {
        "project_id": world.project_id,
        "name": "grade model",
        "sha256": digest,
        "features": FEATURES,
        "output": {"name": "probabilities", "positive_index": 1},
    }
    return world.api.post("/api/validation/models", json=body, headers=who.headers)


def _study(world: World, model_id: int, mode: str, datasets: list[int]) -> Any:
    body = {
        "project_id": world.project_id,
        "name": f"{mode} study",
        "mode": mode,
        "model_id": model_id,
        "datasets": datasets,
        "outcome": {"column": "grade", "positive": "III"},
        "thresholds": [0.3],
        "subgroups": [{"name": "age", "column": "age", "bands": [50]}],
    }
    return world.api.post("/api/validation/studies", json=body, headers=world.researcher.headers)


def _serve(world: World, consents: dict[str, dict[int, Consent]] | None = None) -> None:
    """Act as the nodes until neither has a run left."""
    alg = get_algorithm("validation")
    nodes = {"node-a": world.node_a, "node-b": world.node_b}
    for _ in range(200):
        progressed = False
        for name, node in nodes.items():
            run = world.claim(node)
            if run is None:
                continue
            progressed = True
            # the node fetches the model for its own run, as the agent does
            got = world.api.get(
                f"/api/node/validation/models/{SHA}",
                params={"run_id": run["run_id"]},
                headers=node.headers,
            )
            assert got.status_code == 200 and got.content == MODEL
            if run["round"] > 0:  # the pooled results do not travel to the nodes
                assert set(run["state"]) == {"glm", "stats_blob"}
                kept = world.api.get(
                    f"/api/node/blobs/{run['state']['stats_blob']}", headers=node.headers
                )
                assert kept.status_code == 403
            params = alg.parse_params(run["params"])
            scorer = InProcessScorer({SHA: got.content}, (consents or {}).get(name, {}))
            ctx = LocalContext(
                data=TableStore(FRAMES[name].reset_index(drop=True)),
                round=run["round"],
                state=run["state"],
                services=scorer,
            )
            try:
                gated = apply_gate(alg.local(params, ctx), alg.disclosure(params), GatePolicy(5))
                body = done(run, gated.payload or {})
                body["output_status"] = gated.status
                if gated.status != "ok":
                    body["output"] = None
            except Exception:  # a refusal from the data: withheld, as the agent answers
                body = {
                    "lease_id": run["lease_id"],
                    "status": "done",
                    "output_status": "suppressed",
                }
            answer = world.post_outcome(node, run["run_id"], body)
            assert answer.status_code in (200, 204), answer.text
        if not progressed:
            return
    raise AssertionError("the study did not finish")


def test_model_registered_and_bad_models_refused(world: World) -> None:
    created = _upload(world)
    assert created.status_code == 201, created.text
    model = created.json()
    assert (model["sha256"], model["features"], model["classes"]) == (SHA, FEATURES, 2)
    again = _upload(world)
    assert again.status_code == 422 and "already registered" in again.json()["detail"]
    before = world.count("fl_onnx_models")
    garbage = _upload(world, b"\x08\x07 not a model " * 20)
    assert garbage.status_code == 422 and "not an ONNX model" in garbage.json()["detail"]
    world.app.state.settings.max_model_bytes = 64
    large = _upload(world, MODEL + b"")
    assert large.status_code == 422 and "larger than this hub's limit" in large.json()["detail"]
    assert world.count("fl_onnx_models") == before


def test_mismatched_inputs_are_refused_before_anything_runs(world: World) -> None:
    model_id = _upload(world).json()["id"]
    runs_before = world.count("runs")
    body = {
        "project_id": world.project_id,
        "name": "wrong columns",
        "mode": "shared",
        "model_id": model_id,
        "datasets": [world.node_a.dataset_id, world.node_b.dataset_id],
        "outcome": {"column": "stage", "positive": "III"},
    }
    wrong = world.api.post("/api/validation/studies", json=body, headers=world.researcher.headers)
    assert wrong.status_code == 422 and "has no column 'stage'" in wrong.json()["detail"]
    assert world.count("runs") == runs_before
    assert world.count("validation_studies") == 0


@pytest.mark.hub(min_nodes=1)
def test_private_study_is_invisible_to_other_organizations(world: World) -> None:
    model_id = _upload(world).json()["id"]
    elsewhere = _study(world, model_id, "private", [world.node_b.dataset_id])
    assert elsewhere.status_code == 403 and "another organization" in elsewhere.json()["detail"]
    created = _study(world, model_id, "private", [world.node_a.dataset_id])
    assert created.status_code == 201, created.text
    study = created.json()
    _serve(world)
    mine = world.api.get(f"/api/validation/studies/{study['id']}", headers=world.researcher.headers)
    assert mine.status_code == 200 and mine.json()["status"] == "completed", mine.text
    result = mine.json()["result"]
    rows = FRAMES["node-a"]
    s = pooled_scores(
        MODEL,
        {
            "sha256": SHA,
            "features": FEATURES,
            "input": "input",
            "output": {"name": "probabilities", "positive_index": 1},
        },
        rows,
    )
    y = (rows.grade == "III").to_numpy(int)
    assert result["overall"]["brier"] == pytest.approx(brier_score_loss(y, s), abs=1e-9)
    # otto (Org B) is not a member: the study does not exist for him ...
    path = f"/api/validation/studies/{study['id']}"
    assert world.api.get(path, headers=world.outsider.headers).status_code == 404
    # ... nor once rita adds him to the project: a private study stays in its organization
    added = world.api.post(
        f"/api/projects/{world.project_id}/members",
        json={"user_id": world.outsider.id},
        headers=world.researcher.headers,
    )
    assert added.status_code == 200, added.text
    assert world.api.get(path, headers=world.outsider.headers).status_code == 404
    listed = world.api.get(
        f"/api/projects/{world.project_id}/validation/studies", headers=world.outsider.headers
    )
    assert listed.status_code == 200 and listed.json() == []
    # a node fetches the model only for a run of its own
    other = world.api.get(
        f"/api/node/validation/models/{SHA}", params={"run_id": 1}, headers=world.node_b.headers
    )
    assert other.status_code == 404


def test_shared_study_pools_consenting_sites_only(world: World) -> None:
    model_id = _upload(world).json()["id"]
    created = _study(world, model_id, "shared", [world.node_a.dataset_id, world.node_b.dataset_id])
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    consents = {
        "node-a": {study_id: Consent(take_part=True, share_site=False)},
        "node-b": {study_id: Consent(take_part=True, share_site=True)},
    }
    _serve(world, consents)
    got = world.api.get(f"/api/validation/studies/{study_id}", headers=world.researcher.headers)
    body = got.json()
    assert body["status"] == "completed", body
    result = body["result"]
    pooled = pd.concat(FRAMES.values(), ignore_index=True)
    assert result["overall"]["n"] == len(pooled)
    sites = {s["dataset_id"]: s for s in result["sites"]}
    assert sites[world.node_a.dataset_id]["summary"] is None  # node-a keeps its own results
    assert sites[world.node_b.dataset_id]["summary"]["n"] == len(FRAMES["node-b"])
    assert {r["site"] for r in body["runs"]} == {"node-a/cohort", "node-b/cohort"}


def test_withheld_consent_contributes_nothing(world: World) -> None:
    model_id = _upload(world).json()["id"]
    created = _study(world, model_id, "shared", [world.node_a.dataset_id, world.node_b.dataset_id])
    study_id = created.json()["id"]
    _serve(world, {"node-a": {study_id: Consent(take_part=True)}})  # node-b: no consent
    body = world.api.get(
        f"/api/validation/studies/{study_id}", headers=world.researcher.headers
    ).json()
    # (the test hub's min_nodes is 1) node-b answered without any value: not counted
    assert body["status"] == "completed", body
    result = body["result"]
    assert result["contributing"] == [world.node_a.dataset_id]
    assert result["overall"]["n"] == len(FRAMES["node-a"])
    sites = {s["dataset_id"]: s for s in result["sites"]}
    assert sites[world.node_b.dataset_id]["status"] == "withheld"
    assert sites[world.node_b.dataset_id]["summary"] is None
