"""Models and data for the validation tests: real data, real exporters (skl2onnx, torch).

Imaging: :func:`dicom_site` ingests copies of pydicom's bundled CT_small.dcm (GE) and
MR_small.dcm (a second manufacturer) with the node's real DICOM ingest; each copy is a
patient of its own with the image's rows rolled by a few pixels (so that images differ).
Their labels are synthetic — no real labelled images ship offline.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from statsmodels.stats.proportion import proportion_confint

from medfed.algorithms.validation.local import logit
from medfed.algorithms.validation.params import ModelRef
from medfed.algorithms.validation.scoring import run_onnx


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def breast_cancer() -> pd.DataFrame:
    data = load_breast_cancer(as_frame=True)
    frame = data.data.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame.assign(y=data.target.to_numpy())


def sklearn_onnx(frame: pd.DataFrame, features: list[str], label: str) -> bytes:
    """A standardized logistic regression fitted on ``frame``, exported by skl2onnx."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    model.fit(frame[features].to_numpy(np.float32), frame[label].to_numpy())
    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, len(features)]))],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onx.SerializeToString())


def torch_onnx(frame: pd.DataFrame, features: list[str], label: str) -> bytes:
    """A small MLP (standardization inside) trained briefly, exported by torch.onnx."""
    import torch

    torch.manual_seed(0)
    x = torch.tensor(frame[features].to_numpy(np.float32))
    y = torch.tensor(frame[label].to_numpy(np.float32)).unsqueeze(1)
    mean, std = x.mean(0), x.std(0) + 1e-6

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.body = torch.nn.Sequential(
                torch.nn.Linear(len(features), 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
            )

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.body((inp - self.mean) / self.std))

    net = Net()
    optim = torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=0.01)
    for _ in range(150):
        optim.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(net(x), y)
        loss.backward()
        optim.step()
    buffer = io.BytesIO()
    torch.onnx.export(
        net,
        (x[:1],),
        buffer,
        input_names=["x"],
        output_names=["risk"],
        dynamic_axes={"x": {0: "n"}, "risk": {0: "n"}},
        dynamo=False,
    )
    return buffer.getvalue()


def identity_onnx(n_features: int = 1, output_dims: int = 1) -> bytes:
    """``score = x[:, 0]`` as ``[N]`` (scores given as a column: on the grid on purpose)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_features])
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])
    index = helper.make_tensor("zero", TensorProto.INT64, [], [0])
    gather = helper.make_node("Gather", ["x", "zero"], ["score"], axis=1)
    graph = helper.make_graph([gather], "identity", [x], [out], initializer=[index])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def reshape_onnx(n_features: int) -> bytes:
    """A model that fails at run time for most row counts (reshape to 7 columns)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_features])
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 7])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 7])
    node = helper.make_node("Reshape", ["x", "shape"], ["score"])
    graph = helper.make_graph([node], "bad", [x], [out], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def model_ref(data: bytes, features: list[str], output: str, positive: int) -> dict[str, Any]:
    onx = onnx.load_model_from_string(data)
    return {
        "sha256": sha(data),
        "features": features,
        "input": onx.graph.input[0].name,
        "output": {"name": output, "positive_index": positive},
    }


def pooled_scores(data: bytes, ref: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    model = ModelRef.model_validate(ref)
    return run_onnx(data, model, frame[model.features].to_numpy(np.float32), [])


def recalibration_reference(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    import statsmodels.api as sm

    fit = sm.GLM(y, sm.add_constant(logit(scores)), family=sm.families.Binomial()).fit(
        tol=1e-12, maxiter=200
    )
    return float(fit.params[0]), float(fit.params[1])


def check_against_pooled(result: dict[str, Any], y: np.ndarray, s: np.ndarray) -> None:
    """The pooled result equals scikit-learn and statsmodels on the pooled (y, score)."""
    tol = 1e-9
    overall = result["overall"]
    assert overall["n"] == len(y) and overall["n_pos"] == int(y.sum())
    checked = 0
    for entry in overall["thresholds"]:
        if entry["nodes_left_out"]:
            continue
        checked += 1
        tn, fp, fn, tp = confusion_matrix(y, (s >= entry["threshold"]).astype(int)).ravel()
        assert (entry["tp"], entry["fp"], entry["fn"], entry["tn"]) == (tp, fp, fn, tn)
        for name, (k, n) in {
            "sensitivity": (tp, tp + fn),
            "specificity": (tn, tn + fp),
            "ppv": (tp, tp + fp),
            "npv": (tn, tn + fn),
        }.items():
            got = entry[name]
            assert got["value"] == pytest.approx(k / n, abs=tol)
            assert got["wilson"] == pytest.approx(
                list(proportion_confint(k, n, method="wilson")), abs=tol
            )
            assert got["clopper_pearson"] == pytest.approx(
                list(proportion_confint(k, n, method="beta")), abs=tol
            )
    assert checked >= 1
    assert overall["brier"] == pytest.approx(brier_score_loss(y, s), abs=tol)
    a, b = recalibration_reference(y, s)
    assert result["calibration_intercept"]["estimate"] == pytest.approx(a, abs=tol)
    assert result["calibration_slope"]["estimate"] == pytest.approx(b, abs=tol)
    auc = overall["auc"]
    true_auc = roc_auc_score(y, s)
    assert auc["lower_bound"] - tol <= true_auc <= auc["upper_bound"] + tol
    assert auc["lower_bound"] <= auc["estimate"] <= auc["upper_bound"]
    bins = overall["calibration"]
    assert sum(b["n"] for b in bins) == len(y)
    assert sum(b["events"] for b in bins) == int(y.sum())


def cnn_onnx(shape: tuple[int, int, int] = (1, 32, 32)) -> bytes:
    """A tiny CNN (strided conv, ReLU, linear over the map, sigmoid) by torch.onnx.export."""
    import torch

    torch.manual_seed(0)
    c, h, w = shape
    net = torch.nn.Sequential(
        torch.nn.Conv2d(c, 4, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * ((h + 1) // 2) * ((w + 1) // 2), 1),
        torch.nn.Sigmoid(),
    )
    with torch.no_grad():  # spread the scores over (0, 1)
        net[3].weight.mul_(6.0)
    buffer = io.BytesIO()
    torch.onnx.export(
        net.eval(),
        (torch.zeros(1, *shape),),
        buffer,
        input_names=["image"],
        output_names=["risk"],
        dynamic_axes={"image": {0: "n"}, "risk": {0: "n"}},
        dynamo=False,
    )
    return buffer.getvalue()


def dicom_site(folder: Path, name: str, images: int, first: int = 0) -> Path:
    """Ingest ``images`` copies of CT_small and MR_small (alternating); the index file.

    Copy ``k`` is patient ``{name}-{k}`` with instance number ``k`` and the pixel rows
    rolled by ``k``.
    """
    import pydicom
    from pydicom.data import DATA_ROOT

    from medfed.node.ingest.dicom.runner import ingest_dicom

    sources = [Path(DATA_ROOT, "test_files", f) for f in ("CT_small.dcm", "MR_small.dcm")]
    src = folder / f"{name}-src"
    src.mkdir(parents=True)
    for k in range(first, first + images):
        ds = pydicom.dcmread(sources[k % 2])
        ds.PatientID, ds.PatientName = f"{name}-{k}", f"Patient^{name}{k}"
        uid = f"1.2.826.0.1.77.{sum(map(ord, name))}.{k}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{uid}.1", f"{uid}.2"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{uid}.3"
        ds.InstanceNumber = k
        ds.PixelData = np.roll(ds.pixel_array, 3 * k, axis=0).tobytes()
        ds.save_as(src / f"img{k:03d}.dcm")
    out = folder / f"{name}-out"
    summary = ingest_dicom(src, out, secret="mfn_node_secret_for_tests", workers=1, progress=False)
    assert summary.ok and summary.done == images, summary.quarantined
    return out / "index.parquet"
