"""Models and data for the validation tests: real data, real exporters (skl2onnx, torch)."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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
