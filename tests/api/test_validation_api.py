"""Validation studies through the real hub app (TestClient), nodes' steps in process.

The world (``hubtools``): Org A with researcher rita and node-a, Org B with researcher
otto and node-b; each node holds ``cohort`` (age, grade, size). Here each node's rows are
half of GBSG2 (age, tumour grade, tumour size); the model is a scikit-learn logistic
regression of grade III on age and size, exported by skl2onnx and uploaded by rita.
The tests act as the nodes: claim each run, run the real local step with an in-process
scorer, pass the real gate and post the answer, round after round. Checks that refuse
before anything is stored run on SQLite only; the studies that store tasks, runs and
results run on SQLite and, when ``MEDFED_TEST_DATABASE_URL`` names a server, PostgreSQL.
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
from validationtools import cnn_onnx, pooled_scores, sklearn_onnx

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


def _upload(
    world: World,
    data: bytes = MODEL,
    person: Person | None = None,
    **declared: Any,
) -> Any:
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
        **declared,
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


@SQLITE_ONLY
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


@SQLITE_ONLY
def test_image_model_shape_is_checked_against_the_graph_and_nothing_stored(world: World) -> None:
    cnn = cnn_onnx((1, 32, 32))
    image_model = {"features": [], "output": {"name": "risk", "positive_index": 0}}
    wrong = _upload(world, cnn, image={"shape": [1, 64, 64]}, **image_model)
    assert wrong.status_code == 422
    assert (
        "has shape [n, 1, 32, 32] but the declared image shape is [N, 1, 64, 64]"
        in (wrong.json()["detail"])
    )
    mixed = _upload(world, cnn, image={"shape": [1, 32, 32]})  # with the GBSG2 features
    assert mixed.status_code == 422 and "declare no feature columns" in mixed.json()["detail"]
    assert world.count("fl_onnx_models") == 0
    spec = {"shape": [1, 32, 32], "window": {"center": 40.0, "width": 400.0}}
    created = _upload(world, cnn, image=spec, **image_model)
    assert created.status_code == 201, created.text
    assert created.json()["image"]["shape"] == [1, 32, 32] and created.json()["features"] == []
    # the cohort datasets are tables, not imaging indexes: refused before anything runs
    body = {
        "project_id": world.project_id,
        "name": "images on a table",
        "model_id": created.json()["id"],
        "datasets": [world.node_a.dataset_id],
        "outcome": {"column": "grade", "positive": "III"},
        "labels": {"dataset": "labels"},
    }
    study = world.api.post("/api/validation/studies", json=body, headers=world.researcher.headers)
    assert study.status_code == 422 and "has no column 'path'" in study.json()["detail"]
    assert world.count("validation_studies") == 0 and world.count("runs") == 0


@SQLITE_ONLY
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


def _recalibrate(world: World, study_id: int, person: Person | None = None) -> Any:
    who = person or world.researcher
    path = f"/api/validation/studies/{study_id}/recalibrated-model"
    return world.api.post(path, headers=who.headers)


def test_recalibrated_model_is_calibrated_on_the_study_rows(world: World) -> None:
    import numpy as np
    import onnxruntime as ort
    import statsmodels.api as sm
    from scipy.special import expit

    from medfed.algorithms.validation.local import logit
    from medfed.hub.services.learning.blobs import store_for

    source = _upload(world).json()
    study_id = _study(world, source["id"], "private", [world.node_a.dataset_id]).json()["id"]
    _serve(world)
    study = world.api.get(f"/api/validation/studies/{study_id}", headers=world.researcher.headers)
    fit = study.json()["result"]["recalibration"]
    a, b = fit["intercept"], fit["slope"]
    created = _recalibrate(world, study_id)
    assert created.status_code == 201, created.text
    derived = created.json()
    assert derived["features"] == FEATURES and derived["output"] == {
        "name": "recalibrated",
        "positive_index": 0,
    }
    assert derived["provenance"] == {
        "kind": "recalibration",
        "model": source["id"],
        "study": study_id,
        "mode": "private",
        "intercept": a,
        "slope": b,
        "clip": 1e-7,
    }
    assert _recalibrate(world, study_id).json()["id"] == derived["id"]  # derived once
    # score the study's rows with both models, as a deployment would
    data = store_for(world.app.state.settings).read(derived["sha256"])
    rows = FRAMES["node-a"]
    p = pooled_scores(
        MODEL,
        {"sha256": SHA, "features": FEATURES, "input": "input", "output": source["output"]},
        rows,
    )
    q = ort.InferenceSession(data).run(None, {"input": rows[FEATURES].to_numpy(np.float32)})[0]
    assert q.dtype == np.float32 and q.shape == (len(rows),)
    np.testing.assert_allclose(q, expit(a + b * logit(p)), rtol=0, atol=1e-6)
    # on the same rows the derived model has calibration intercept 0 and slope 1
    y = (rows.grade == "III").to_numpy(int)
    refit = sm.GLM(y, sm.add_constant(logit(q)), family=sm.families.Binomial()).fit(tol=1e-12)
    assert abs(refit.params[0]) < 1e-6 and refit.params[1] == pytest.approx(1.0, rel=1e-6)
    # a private study's model stays in its organization, even for a project member
    assert _recalibrate(world, study_id, world.outsider).status_code == 404
    world.api.post(
        f"/api/projects/{world.project_id}/members",
        json={"user_id": world.outsider.id},
        headers=world.researcher.headers,
    )
    assert _recalibrate(world, study_id, world.outsider).status_code == 404
    path = f"/api/validation/models/{derived['id']}"
    assert world.api.get(path, headers=world.outsider.headers).status_code == 404
    listed = world.api.get(
        f"/api/projects/{world.project_id}/validation/models", headers=world.outsider.headers
    )
    assert [m["id"] for m in listed.json()] == [source["id"]]


@SQLITE_ONLY
def test_recalibrated_model_refused_before_the_study_completes(world: World) -> None:
    model_id = _upload(world).json()["id"]
    study_id = _study(world, model_id, "private", [world.node_a.dataset_id]).json()["id"]
    models, blob_rows = world.count("fl_onnx_models"), world.count("fl_blobs")
    refused = _recalibrate(world, study_id)
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        f"validation study {study_id} is running: a recalibrated model is derived from a "
        "completed study"
    )
    assert _recalibrate(world, 999999).status_code == 404
    assert (world.count("fl_onnx_models"), world.count("fl_blobs")) == (models, blob_rows)
