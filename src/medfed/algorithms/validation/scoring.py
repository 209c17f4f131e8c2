"""How the node step gets scores: the :class:`ValidationServices` a node provides.

On a node the agent's run services are adapted by
:mod:`medfed.node.executors.onnx_services`: the model file is fetched from the hub by its
hash, and scored with onnxruntime inside the sandbox that runs researcher code.
:class:`InProcessScorer` is the same interface for tests and algorithm authors
(``medfed.testing.local.run_locally(..., services=...)``): onnxruntime in this process,
no sandbox, models given as bytes, study consents as a dict, imaging index folders per
dataset and labels tables by name.

Scores are read from the declared output and column and must be finite and within
``[0, 1]``; anything else is a :class:`ModelFailed` whose text carries no input value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from medfed.algorithms.base import LocalData
from medfed.algorithms.validation.params import ModelRef
from medfed.common.errors import PolicyRefused, Refused

__all__ = [
    "Consent",
    "InProcessScorer",
    "ModelFailed",
    "ValidationServices",
    "run_onnx",
    "scores_of",
]

FloatArray = npt.NDArray[np.float64]


class ModelFailed(PolicyRefused):
    """The model could not be run or gave unusable scores (the message names no value).

    A :class:`PolicyRefused`, so the node answers ``refused`` with this text and the
    study's owner reads it (a plain refusal would be withheld without a word).
    """


@dataclass(frozen=True)
class Consent:
    """A site steward's answer to a shared study: take part; show the site's own results."""

    take_part: bool
    share_site: bool = False


@runtime_checkable
class ValidationServices(Protocol):
    """What the node step needs beyond the table."""

    @property
    def dataset_id(self) -> int: ...

    def consent(self, study_id: int | None, model: str) -> Consent | None:
        """The steward's consent to a shared study, or to every shared study of the model
        with SHA-256 ``model`` (None: not given)."""
        ...

    def score(self, model: ModelRef, features: npt.NDArray[np.float32]) -> FloatArray:
        """The positive-class score of each row (float64, within [0, 1]); ``features`` is
        ``[N, F]``, or ``[N, C, H, W]`` for an image model."""
        ...

    def image_root(self) -> Path:
        """The folder the dataset's (an imaging index's) relative file paths start from."""
        ...

    def table(self, name: str) -> LocalData:
        """The node's table dataset ``name`` (an image study's labels)."""
        ...

    def remember(self, key: str, y: npt.NDArray[np.int64], scores: FloatArray) -> None:
        """Keep a run's outcomes and scores at the node for the task's later rounds."""
        ...

    def recall(self, key: str) -> tuple[npt.NDArray[np.int64], FloatArray] | None:
        """What :meth:`remember` kept under ``key`` (None: nothing)."""
        ...


def _dtype(model: ModelRef) -> Any:
    return {"float": np.float32, "double": np.float64, "float16": np.float16}[model.input_type]


def scores_of(model: ModelRef, raw: Any, n: int) -> FloatArray:
    """The declared column of the model's output as float64, checked (no values named)."""
    out = np.asarray(raw)
    if out.ndim == 2:
        if model.output.positive_index >= out.shape[1]:
            raise ModelFailed("the model's output has fewer columns than declared")
        out = out[:, model.output.positive_index]
    if out.ndim != 1 or out.shape[0] != n:
        raise ModelFailed(f"the model's output has shape {np.asarray(raw).shape}, not [{n}, C]")
    scores = out.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ModelFailed("the model gave a score that is not a finite number")
    if (scores < 0).any() or (scores > 1).any():
        raise ModelFailed("the model gave a score outside [0, 1] (declare a probability output)")
    return scores


def run_onnx(
    model_bytes: bytes, model: ModelRef, features: npt.NDArray[Any], providers: list[str]
) -> FloatArray:
    """Score ``features`` with onnxruntime (the caller decides where this runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    session = ort.InferenceSession(model_bytes, sess_options=options, providers=chosen)
    x = np.ascontiguousarray(features, dtype=_dtype(model))
    (raw,) = session.run([model.output.name], {model.input: x})
    return scores_of(model, raw, x.shape[0])


@dataclass
class InProcessScorer:
    """:class:`ValidationServices` in this process (tests): models by SHA-256."""

    models: dict[str, bytes]
    consents: dict[int | str, Consent] = field(default_factory=dict)
    dataset: int = 0
    calls: int = 0
    #: each dataset's imaging index folder (dataset id -> folder)
    images: dict[int, Path] = field(default_factory=dict)
    #: labels tables by name
    tables: dict[str, LocalData] = field(default_factory=dict)
    _cache: dict[str, FloatArray] = field(default_factory=dict)

    _kept: dict[str, tuple[npt.NDArray[np.int64], FloatArray]] = field(default_factory=dict)

    @property
    def dataset_id(self) -> int:
        return self.dataset

    def remember(self, key: str, y: npt.NDArray[np.int64], scores: FloatArray) -> None:
        self._kept[key] = (y, scores)

    def recall(self, key: str) -> tuple[npt.NDArray[np.int64], FloatArray] | None:
        return self._kept.get(key)

    def for_dataset(self, dataset_id: int) -> InProcessScorer:
        """The scorer of another dataset, sharing the models and the kept scores."""
        return InProcessScorer(
            self.models,
            self.consents,
            dataset_id,
            images=self.images,
            tables=self.tables,
            _cache=self._cache,
            _kept=self._kept,
        )

    def image_root(self) -> Path:
        if self.dataset not in self.images:
            raise Refused("validation: this dataset is not an imaging index")
        return self.images[self.dataset]

    def table(self, name: str) -> LocalData:
        if name not in self.tables:
            raise Refused(f"validation: this node has no table dataset '{name}'")
        return self.tables[name]

    def consent(self, study_id: int | None, model: str) -> Consent | None:
        given = None if study_id is None else self.consents.get(study_id)
        return given if given is not None else self.consents.get(f"model:{model}")

    def score(self, model: ModelRef, features: npt.NDArray[np.float32]) -> FloatArray:
        key = model.sha256 + hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest()
        if key not in self._cache:
            self.calls += 1
            data = self.models[model.sha256]
            if hashlib.sha256(data).hexdigest() != model.sha256:
                raise ModelFailed("the model file does not match its hash")
            self._cache[key] = run_onnx(data, model, features, ["CPUExecutionProvider"])
        return self._cache[key]
