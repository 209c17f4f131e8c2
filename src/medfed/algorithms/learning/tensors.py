"""Weights as bytes and vectors: safetensors (numpy) encoding, flattening, metric means.

``encode``/``decode`` turn ``{name: float32 array}`` into safetensors bytes and back (the
wire and storage format of every weights/update blob; no pickle anywhere). ``flatten``
orders tensors by name and concatenates them into one float64 vector (what clipping, DP
noise and secure aggregation work on); ``unflatten`` is its inverse given a template.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load, save

__all__ = ["decode", "encode", "flatten", "mean_metrics", "size_of", "unflatten"]

Arrays = dict[str, npt.NDArray[np.float32]]


def encode(arrays: Mapping[str, npt.NDArray[Any]]) -> bytes:
    return save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()})


def decode(data: bytes) -> Arrays:
    return {k: np.asarray(v, dtype=np.float32) for k, v in load(data).items()}


def size_of(arrays: Mapping[str, npt.NDArray[Any]]) -> int:
    return int(sum(int(np.prod(v.shape)) for v in arrays.values()))


def flatten(arrays: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float64]:
    if not arrays:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(arrays[k], dtype=np.float64).ravel() for k in sorted(arrays)])


def unflatten(vector: npt.NDArray[Any], template: Mapping[str, npt.NDArray[Any]]) -> Arrays:
    out: Arrays = {}
    offset = 0
    for key in sorted(template):
        shape = template[key].shape
        count = int(np.prod(shape))
        out[key] = np.asarray(vector[offset : offset + count], dtype=np.float32).reshape(shape)
        offset += count
    if offset != len(vector):
        raise ValueError(f"vector of {len(vector)} values for a model of {offset}")
    return out


def mean_metrics(items: Iterable[tuple[Mapping[str, Any] | None, int | None]]) -> dict[str, float]:
    """Means of metrics over nodes weighted by their held-out counts (missing ones skipped)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for metrics, n in items:
        if not metrics or not n:
            continue
        for key, value in metrics.items():
            if isinstance(value, int | float) and np.isfinite(value):
                sums[key] = sums.get(key, 0.0) + float(value) * n
                counts[key] = counts.get(key, 0.0) + n
    return {k: sums[k] / counts[k] for k in sorted(sums)}
