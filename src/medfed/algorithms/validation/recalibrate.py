"""The weak recalibration of a validation study as a derived ONNX model (graph surgery only).

How it runs: :func:`recalibrated_onnx` gets the study model's bytes, its declared output
(name and positive column) and the pooled recalibration ``p' = expit(a + b·logit p)``. It
parses the protobuf (data only: nothing runs, no onnxruntime), copies the graph and
appends, in the standard ``ai.onnx`` domain, the nodes

    Gather(positive column) → Cast(double) → Max(eps) → Min(1 - eps)
      → Log(p) - Log(1 - p) → Mul(b) → Add(a) → Sigmoid → Cast(the output's type)

on the declared output. The graph's outputs become that one tensor, ``[N]``, named
``recalibrated`` (suffixed if the name is taken), whose column 0 is the score. The
arithmetic runs in double, exactly as the node computes ``logit`` for the study
(:func:`medfed.algorithms.validation.local.logit`, the same ``eps``), so the derived
model's scores equal ``expit(a + b·logit(p))`` of the source's scores up to the final
cast. The nodes' operators exist with these signatures from opset 8 on; an older model
is refused. The caller checks the result with
:func:`~medfed.algorithms.validation.model_check.check_model`, as any upload.
"""

from __future__ import annotations

import math
from typing import Any

from medfed.algorithms.validation.model_check import OutputSpec
from medfed.common.errors import BadRequest

#: scores are clipped to [EPS, 1 - EPS] before the logit of the recalibration
EPS = 1e-7

__all__ = ["EPS", "RECALIBRATED_OUTPUT", "recalibrated_onnx"]

RECALIBRATED_OUTPUT = "recalibrated"
_PREFIX = "medfed_recalibration_"
_MIN_OPSET = 8


def _names(graph: Any) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def _fresh(taken: set[str], wanted: str) -> str:
    name, k = wanted, 1
    while name in taken:
        k += 1
        name = f"{wanted}_{k}"
    taken.add(name)
    return name


def recalibrated_onnx(
    data: bytes, *, output: OutputSpec, intercept: float, slope: float, eps: float
) -> tuple[bytes, OutputSpec]:
    """The source model with ``expit(a + b·logit(clip(p)))`` on its positive-class score,
    and the output that holds it (column 0)."""
    import onnx
    from onnx import TensorProto, helper

    if not (math.isfinite(intercept) and math.isfinite(slope)):
        raise BadRequest("the study's recalibration is not finite; no model can be derived")
    model = onnx.load_model_from_string(data)
    graph = model.graph
    source = {o.name: o for o in graph.output}.get(output.name)
    if source is None:
        raise BadRequest(f"the study's model has no output '{output.name}'")
    opsets = {o.domain or "ai.onnx": o for o in model.opset_import}
    if "ai.onnx" not in opsets:
        model.opset_import.append(helper.make_opsetid("", 13))
    elif opsets["ai.onnx"].version < _MIN_OPSET:
        raise BadRequest(
            f"the study's model uses ai.onnx opset {opsets['ai.onnx'].version}; a "
            f"recalibrated model needs opset {_MIN_OPSET} or later"
        )
    taken = _names(graph)

    def t(label: str) -> str:
        return _fresh(taken, _PREFIX + label)

    def const(label: str, value: float) -> str:
        name = t(label)
        graph.initializer.append(helper.make_tensor(name, TensorProto.DOUBLE, [], [value]))
        return name

    nodes = []
    score = output.name
    if len(source.type.tensor_type.shape.dim) == 2:
        column = t("column")
        graph.initializer.append(
            helper.make_tensor(column, TensorProto.INT64, [], [output.positive_index])
        )
        score = t("score")
        nodes.append(helper.make_node("Gather", [output.name, column], [score], axis=1))
    p = t("p")
    nodes.append(helper.make_node("Cast", [score], [p], to=TensorProto.DOUBLE))
    low, clipped = t("low"), t("clipped")
    nodes.append(helper.make_node("Max", [p, const("eps", eps)], [low]))
    nodes.append(helper.make_node("Min", [low, const("one_minus_eps", 1.0 - eps)], [clipped]))
    rest, log_p, log_rest, z = t("rest"), t("log_p"), t("log_rest"), t("logit")
    nodes.append(helper.make_node("Sub", [const("one", 1.0), clipped], [rest]))
    nodes.append(helper.make_node("Log", [clipped], [log_p]))
    nodes.append(helper.make_node("Log", [rest], [log_rest]))
    nodes.append(helper.make_node("Sub", [log_p, log_rest], [z]))
    scaled, shifted, q = t("scaled"), t("shifted"), t("q")
    nodes.append(helper.make_node("Mul", [z, const("slope", slope)], [scaled]))
    nodes.append(helper.make_node("Add", [scaled, const("intercept", intercept)], [shifted]))
    nodes.append(helper.make_node("Sigmoid", [shifted], [q]))
    elem_type = source.type.tensor_type.elem_type
    out_name = _fresh(taken, RECALIBRATED_OUTPUT)
    nodes.append(helper.make_node("Cast", [q], [out_name], to=elem_type))
    for i, node in enumerate(nodes):
        node.name = _fresh(taken, f"{_PREFIX}node{i}")
    graph.node.extend(nodes)
    batch = source.type.tensor_type.shape.dim[0]
    dim: str | int = batch.dim_value if batch.HasField("dim_value") else (batch.dim_param or "N")
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(out_name, elem_type, [dim]))
    model.doc_string = (
        f"{model.doc_string}\nrecalibrated by medfed: expit({intercept!r} + {slope!r} * "
        f"logit(clip({output.name}[:, {output.positive_index}], {eps!r})))"
    ).strip()
    return bytes(model.SerializeToString()), OutputSpec(name=out_name, positive_index=0)
