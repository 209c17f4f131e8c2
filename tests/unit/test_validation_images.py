"""Image models in ``validation``: real DICOM files through the node's ingest, a real CNN.

Two sites, each the DICOM ingest of copies of pydicom's CT_small.dcm (GE) and MR_small.dcm
(validationtools.dicom_site); the study's datasets are the sites' imaging indexes and the
outcome comes from a labels table joined by the patient pseudonym (labels synthetic: no
real labelled images ship offline; they alternate along each site's score ranks so that
both classes lie on both sides of a threshold). The model is a tiny PyTorch CNN exported
with ``torch.onnx.export``. Every run goes through ``run_locally`` (the real gate). With
12 images per site, k = 2: a threshold splits a site's 12 images into segments of 5 to 7
and each maker holds 6, so the default k = 5 would withhold every threshold and subgroup;
2 still makes every released count a sum of cells of 0 or >= 2, as the gate demands.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import DATA_ROOT

from medfed.algorithms.registry import get_algorithm
from medfed.algorithms.validation.images import ImageSpec, load_images, preprocess
from medfed.algorithms.validation.model_check import OutputSpec, check_model
from medfed.algorithms.validation.params import ModelRef
from medfed.algorithms.validation.scoring import InProcessScorer, ModelFailed, run_onnx
from medfed.common.access_resources import EntitlementStatement, SignedEntitlement
from medfed.common.errors import BadRequest
from medfed.common.resources import RunAssignment
from medfed.ledger.checkpoint import derive_key, public_b64
from medfed.node.agent import NodeAgent
from medfed.node.config import NodeConfig, Policy
from medfed.node.executors.sandbox import bwrap_usable
from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally
from validationtools import check_against_pooled, cnn_onnx, dicom_site, sha

SPEC = {"shape": [1, 32, 32], "window": {"center": 300, "width": 1200}, "mean": [0.5]}
K = 2  # 12 images per site, 6 of each maker: see the module text
CT_SMALL = Path(DATA_ROOT, "test_files", "CT_small.dcm")
MR_SMALL = Path(DATA_ROOT, "test_files", "MR_small.dcm")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The sites, the model, each site's reference scores (onnxruntime on the tensors
    preprocessed here) and the labels: by each site's score rank, alternating."""
    folder = tmp_path_factory.mktemp("imaging")
    indexes = [dicom_site(folder, "siteA", 12), dicom_site(folder, "siteB", 12, first=12)]
    frames = [pd.read_parquet(p) for p in indexes]
    model = cnn_onnx((1, 32, 32))
    ref = ModelRef.model_validate(_ref(model))
    assert ref.image is not None
    scored = []
    for index, frame in zip(indexes, frames, strict=True):
        tensor = load_images(list(frame.path), index.parent, ref.image)
        score = run_onnx(model, ref, tensor, [])
        rank = np.argsort(np.argsort(score))
        scored.append(frame.assign(score=score, label=rank % 2))
    pooled = pd.concat(scored, ignore_index=True)
    labels = pooled[["patient_pseudonym", "label"]]
    return {"indexes": indexes, "frames": frames, "model": model, "labels": labels, "ref": pooled}


def _ref(model: bytes, spec: dict[str, Any] = SPEC) -> dict[str, Any]:
    return {
        "sha256": sha(model),
        "input": "image",
        "output": {"name": "risk", "positive_index": 0},
        "image": spec,
    }


def _params(model: bytes, thresholds: list[float], subgroups: bool) -> dict[str, Any]:
    groups = [
        {"name": "manufacturer", "column": "manufacturer"},
        {"name": "model", "column": "manufacturer_model"},
    ]
    return {
        "model": _ref(model),
        "outcome": {"column": "label", "positive": 1},
        "labels": {"dataset": "labels"},
        "thresholds": thresholds,
        "subgroups": groups if subgroups else [],
    }


def _run(
    world: dict[str, Any],
    indexes: list[Path],
    params: dict[str, Any],
    withheld: list[str] | None = None,
) -> dict[str, Any]:
    stores = [TableStore.open(p) for p in indexes]
    base = InProcessScorer(
        {sha(world["model"]): world["model"]},
        images={i: p.parent for i, p in enumerate(indexes)},
        tables={"labels": TableStore(world["labels"])},
    )
    return run_locally(
        "validation", params, stores, K, services=base.for_dataset, withheld=withheld
    )


def test_preprocessing_matches_torch_and_the_dicom_rescale() -> None:
    import torch

    ct = pydicom.dcmread(CT_SMALL)
    got = preprocess(ct, ImageSpec.model_validate(SPEC))
    hu = ct.pixel_array.astype(np.float64) * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    unit = np.clip((hu - (300 - 600)) / 1200, 0, 1)
    want = torch.nn.functional.interpolate(
        torch.tensor(unit)[None, None], size=(32, 32), mode="bilinear", align_corners=False
    )[0].numpy()
    assert got.shape == (1, 32, 32) and got.dtype == np.float32
    assert np.allclose(got, want - 0.5, atol=1e-6)
    mr = pydicom.dcmread(MR_SMALL)  # same size: no resize; grey repeated to 3 channels
    spec = ImageSpec(shape=[3, 64, 64], mean=[0.5], std=[0.25])
    pixels = mr.pixel_array.astype(np.float64)
    unit = (pixels - pixels.min()) / (pixels.max() - pixels.min())
    assert np.allclose(preprocess(mr, spec), np.stack([(unit - 0.5) / 0.25] * 3), atol=1e-5)


def test_image_model_is_exact_against_pooled_onnxruntime(world: dict[str, Any]) -> None:
    ref = world["ref"]
    y, s = ref.label.to_numpy(), ref.score.to_numpy()
    assert len(y) == 24 and y.sum() == 12 and np.ptp(s) > 0.1
    result = _run(world, world["indexes"], _params(world["model"], [0.7], subgroups=False))
    check_against_pooled(result, y, s)


def test_manufacturer_and_model_subgroups_come_from_the_dicom_index(
    world: dict[str, Any],
) -> None:
    # every score is above 0.5: the one threshold closes an empty segment, so each
    # subgroup level is checked as a whole (k = 2: 6 images of each maker per site)
    result = _run(world, world["indexes"], _params(world["model"], [0.5], subgroups=True))
    ref = world["ref"]
    assert result["overall"]["brier"] == pytest.approx(
        float(np.mean((ref.score - ref.label) ** 2)), abs=1e-9
    )
    for name, column in (("manufacturer", "manufacturer"), ("model", "manufacturer_model")):
        groups = result["subgroups"][name]
        assert groups["sites_withheld"] == 0, name
        expected = ref[column].fillna("(missing)").value_counts().to_dict()
        assert {k: v["n"] for k, v in groups["levels"].items()} == expected
        assert len(expected) == 2  # GE's CT and the MR's maker
        for level, summary in groups["levels"].items():
            rows = ref[ref[column].fillna("(missing)") == level]
            brier = float(np.mean((rows.score - rows.label) ** 2))
            assert summary["brier"] == pytest.approx(brier, abs=1e-9)


def test_declared_shape_must_match_the_graph_input(world: dict[str, Any]) -> None:
    model, out = world["model"], OutputSpec(name="risk", positive_index=0)
    good = check_model(
        model, features=[], output=out, max_bytes=1 << 20, image=ImageSpec.model_validate(SPEC)
    )
    assert good.image is not None and good.image.shape == [1, 32, 32] and good.input == "image"
    for shape in ([1, 64, 64], [3, 32, 32]):
        with pytest.raises(BadRequest) as wrong:
            check_model(
                model, features=[], output=out, max_bytes=1 << 20, image=ImageSpec(shape=shape)
            )
        assert "has shape [n, 1, 32, 32] but the declared image shape is [N, " in str(
            wrong.value.message
        )
    with pytest.raises(BadRequest, match="declare no feature columns"):
        check_model(
            model, features=["a"], output=out, max_bytes=1 << 20, image=ImageSpec(shape=[1, 32, 32])
        )
    with pytest.raises(ValueError, match="1 or 3 channels"):
        ImageSpec(shape=[2, 32, 32])


def test_a_dataset_that_is_no_imaging_index_is_refused(world: dict[str, Any]) -> None:
    plain = TableStore(world["labels"], name="labels")
    with pytest.raises(BadRequest, match="has no column 'path': an image model validates on"):
        run_locally("validation", _params(world["model"], [0.7], False), [plain], K)


def test_an_unreadable_image_fails_the_run_without_values(
    world: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    site = tmp_path / "site"
    shutil.copytree(world["indexes"][0].parent, site)
    frame = world["frames"][0]
    broken = site / frame.path[4]
    broken.write_bytes(broken.read_bytes()[:600])
    withheld: list[str] = []
    with pytest.raises(BadRequest, match="no site contributed"):
        _run(
            world,
            [site / "index.parquet"],
            _params(world["model"], [0.7], subgroups=False),
            withheld,
        )
    (message,) = withheld  # as the node answers: refused, with this line for the owner
    assert message.startswith("an image of the test population could not be read")
    assert frame.path[4] not in message and frame.patient_pseudonym[4] not in message
    spec = ImageSpec.model_validate(SPEC)
    with pytest.raises(ModelFailed, match="lies outside the imaging index"):
        load_images(["../../etc/passwd"], site, spec)


HUB_KEY = derive_key("hub secret for the image validation test")


def _image_run(params: dict[str, Any]) -> RunAssignment:
    now = datetime.now(UTC)
    statement = EntitlementStatement(
        entitlement_id=1,
        project_id=3,
        dataset_id=11,
        dataset_name="images",
        node_id=7,
        manifest_root=None,
        not_before=(now - timedelta(days=1)).isoformat(),
        not_after=(now + timedelta(days=30)).isoformat(),
        revoked=False,
        issued_at=now.isoformat(),
    )
    signature = base64.b64encode(HUB_KEY.sign(statement.text())).decode()
    return RunAssignment(
        run_id=1,
        task_id=1,
        project_id=3,
        round=0,
        algorithm="validation",
        algorithm_version=get_algorithm("validation").version,
        params=params,
        state={},
        dataset_id=11,
        dataset_name="images",
        lease_id="x",
        lease_expires_at=now + timedelta(seconds=60),
        attempt=1,
        entitlement=SignedEntitlement(statement=statement, signature=signature),
        task_nodes=2,
    )


@pytest.mark.skipif(bwrap_usable() is not None, reason="no bubblewrap sandbox here")
def test_a_node_agent_scores_its_imaging_index_in_the_sandbox(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """The agent's own path: its imaging index and labels table, the model in its sandbox."""
    labels = tmp_path / "labels.csv"
    world["labels"].to_csv(labels, index=False)
    config = NodeConfig(
        hub_url="http://127.0.0.1:9",
        secret="mfn_test",
        data_dir=tmp_path / "node",
        hub_key=public_b64(HUB_KEY),
        policy=Policy(min_cell_count=K),
        datasets=[  # type: ignore[list-item]
            {"name": "images", "path": world["indexes"][0]},
            {"name": "labels", "path": labels},
        ],
    )
    agent = NodeAgent(config)
    agent.open_datasets()
    agent.node_id = 7
    model = world["model"]
    models = config.data_dir / "validation" / "models"  # as if fetched from the hub before
    models.mkdir(parents=True)
    (models / f"{sha(model)}.onnx").write_bytes(model)
    outcome = agent.compute(_image_run(_params(model, [0.7], subgroups=False)))
    assert outcome is not None and outcome.status == "done", outcome
    assert outcome.output is not None
    site = world["ref"].iloc[:12]
    assert outcome.output["rows"] == 12
    sse = outcome.output["vsums"]["overall"][""]["sse"]
    assert sse == pytest.approx(float(np.sum((site.score - site.label) ** 2)), abs=1e-9)
