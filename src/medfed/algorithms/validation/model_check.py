"""Checking an uploaded ONNX model without running any of it (hub at upload, node again).

How it runs: :func:`check_model` gets the file's bytes and what the uploader declares
(the feature names, the output and which column of it is the positive class). It

1. refuses a file over ``max_bytes`` before parsing it;
2. parses the protobuf (``onnx.load_model_from_string``: data only, no code is loaded)
   and runs ``onnx.checker.check_model(full_check=True)`` (graph structure, opsets and
   shape inference);
3. refuses tensors kept in external data files, operators outside the standard domains
   (``ai.onnx`` and ``ai.onnx.ml``: no custom ops, no local functions), graphs with more
   than one input;
4. checks that the one input is a float tensor of shape ``[N, F]`` with ``F`` the number
   of declared features — or, for an image model (an
   :class:`~medfed.algorithms.validation.images.ImageSpec`), ``[N, C, H, W]`` equal to
   the declared image shape wherever the graph fixes a size — and that the named output
   is a float tensor ``[N]``, ``[N, 1]`` or ``[N, C]`` with the positive column inside it.

Every refusal is a :class:`~medfed.common.errors.BadRequest` that names the problem; the
result, :class:`ModelDescriptor`, is what the registry stores beside the file's SHA-256.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from medfed.algorithms.validation.images import ImageSpec
from medfed.common.errors import BadRequest

__all__ = ["STANDARD_DOMAINS", "ModelDescriptor", "OutputSpec", "check_model"]

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
_FLOAT_TYPES = {1: "float", 11: "double", 10: "float16"}


class OutputSpec(BaseModel):
    """The model output the score is read from: ``name``, column ``positive_index``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    positive_index: int = Field(default=1, ge=0, le=1000)


class ModelDescriptor(BaseModel):
    """What the registry keeps about a checked ONNX model (beside its bytes)."""

    model_config = ConfigDict(extra="forbid")

    sha256: str
    size: int
    input: str
    input_type: str
    features: list[str]
    output: OutputSpec
    classes: int
    opsets: dict[str, int]
    producer: str = ""
    image: ImageSpec | None = None
    #: a derived model's origin (e.g. a study's recalibration: source model and study)
    provenance: dict[str, Any] | None = None


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:  # pragma: no cover - the validation extra is missing
        raise BadRequest(
            "model validation needs the onnx package (pip install 'medfed[validation]')"
        ) from None
    return onnx


def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    dims: list[int | str] = []
    for dim in shape.dim:
        dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?"))
    return dims


def _external(model: Any) -> bool:
    onnx = _onnx()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                tensors.append(attr.t)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors)


def _subgraph_nodes(graph: Any) -> list[Any]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                nodes.extend(_subgraph_nodes(attr.g))
            for sub in attr.graphs:
                nodes.extend(_subgraph_nodes(sub))
    return nodes


def _check_input(given: Any, features: list[str], image: ImageSpec | None) -> str:
    """The input's float type, once its shape fits the declared features or image."""
    kind = _FLOAT_TYPES.get(given.type.tensor_type.elem_type)
    dims = _dims(given)
    if image is None:
        if kind is None or len(dims) != 2:
            raise BadRequest(f"the model's input '{given.name}' must be a 2-d float tensor [N, F]")
        if isinstance(dims[1], int) and dims[1] != len(features):
            raise BadRequest(
                f"the model's input '{given.name}' takes {dims[1]} features but "
                f"{len(features)} were declared"
            )
        return kind
    declared = "[N, " + ", ".join(str(d) for d in image.shape) + "]"
    graph = "[" + ", ".join(str(d) for d in dims) + "]"
    if kind is None or len(dims) != 4:
        raise BadRequest(
            f"the model's input '{given.name}' is {graph}, not a 4-d float tensor "
            f"{declared} as declared for an image model"
        )
    if any(isinstance(g, int) and g != d for g, d in zip(dims[1:], image.shape, strict=True)):
        raise BadRequest(
            f"the model's input '{given.name}' has shape {graph} but the declared image "
            f"shape is {declared}"
        )
    return kind


def check_model(
    data: bytes,
    *,
    features: list[str],
    output: OutputSpec,
    max_bytes: int,
    image: ImageSpec | None = None,
) -> ModelDescriptor:
    """The descriptor of a model that passes every check (see the module text)."""
    if len(data) > max_bytes:
        raise BadRequest(
            f"the model is {len(data)} bytes, larger than this hub's limit of {max_bytes} bytes"
        )
    if image is not None and features:
        raise BadRequest("an image model takes the image only: declare no feature columns")
    if image is None and (not features or len(set(features)) != len(features)):
        raise BadRequest("declare the model's features: a list of distinct column names")
    onnx = _onnx()
    try:
        model = onnx.load_model_from_string(data)
    except Exception:
        raise BadRequest("the file is not an ONNX model (its protobuf does not parse)") from None
    if _external(model):
        raise BadRequest("the model keeps tensors in external data files; embed them")
    if len(model.functions):
        raise BadRequest("the model defines local functions; only standard operators run")
    domains = {o.domain for o in model.opset_import} | {
        n.domain for n in _subgraph_nodes(model.graph)
    }
    custom = sorted(d for d in domains if d not in STANDARD_DOMAINS)
    if custom:
        raise BadRequest(f"the model uses operators outside the standard domains: {custom}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # names the graph problem; the file holds no patient data
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "invalid"
        raise BadRequest(f"the ONNX graph is malformed: {first}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BadRequest(
            f"the model must have one input (a [N, features] or [N, C, H, W] tensor), "
            f"not {len(inputs)}"
        )
    given = inputs[0]
    kind = _check_input(given, features, image)
    outputs = {o.name: o for o in model.graph.output}
    if output.name not in outputs:
        raise BadRequest(f"the model has no output '{output.name}' (it has: {sorted(outputs)})")
    out = outputs[output.name]
    out_dims = _dims(out)
    if _FLOAT_TYPES.get(out.type.tensor_type.elem_type) is None or len(out_dims) not in (1, 2):
        raise BadRequest(f"the output '{output.name}' must be a float tensor [N] or [N, C]")
    classes = out_dims[1] if len(out_dims) == 2 and isinstance(out_dims[1], int) else 1
    if output.positive_index >= classes:
        raise BadRequest(
            f"the output '{output.name}' has {classes} column(s); column "
            f"{output.positive_index} does not exist"
        )
    return ModelDescriptor(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        input=given.name,
        input_type=kind,
        features=list(features),
        output=output,
        classes=classes,
        opsets={o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        image=image,
    )
