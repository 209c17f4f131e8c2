"""Server-side strategies of ``fl.train`` on numpy arrays (the hub never imports torch).

Every node sends an *update* ``Δ_k = w_k - w`` (its locally trained weights minus the
global weights it started from) and its training-sample count ``n_k``. A round is:

1. combine the updates into one ``Δ``:

   * ``fedavg``/``fedprox``/``fedadam``/``fedyogi``: the mean weighted by ``n_k``
     (FedProx differs only in the node's local loss, the proximal term ``mu``);
   * ``fedmedian``: the coordinate-wise median (unweighted; robust to outliers);
   * ``trimmed_mean``: the coordinate-wise mean after dropping the ``trim_fraction``
     largest and smallest values of each coordinate;

2. apply it: ``w ← w + server_lr·Δ`` for all but the server optimizers. FedAdam and
   FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization") treat ``Δ`` as a
   pseudo-gradient::

       m ← β1·m + (1-β1)·Δ
       v ← β2·v + (1-β2)·Δ²                        (Adam)
       v ← v - (1-β2)·Δ²·sign(v - Δ²)             (Yogi)
       w ← w + η·m / (√v + τ)

   with ``m`` and ``v`` the optimizer state, saved with the global model each round (a
   hub restart continues with them).

With secure aggregation the hub only sees ``Σ n_k·Δ_k`` and ``Σ n_k``, so only the
mean-based strategies apply (the training's parameters are checked for that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "MEAN_BASED",
    "STRATEGIES",
    "Arrays",
    "ServerOptions",
    "apply_update",
    "combine",
]

Arrays = dict[str, npt.NDArray[np.float32]]
Strategy = Literal["fedavg", "fedprox", "fedadam", "fedyogi", "fedmedian", "trimmed_mean"]
STRATEGIES: tuple[str, ...] = (
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedmedian",
    "trimmed_mean",
)
MEAN_BASED = frozenset({"fedavg", "fedprox", "fedadam", "fedyogi"})


class ServerOptions:
    """Server-side hyper-parameters (Flower's defaults for FedAdam/FedYogi)."""

    def __init__(
        self,
        *,
        server_lr: float = 1.0,
        eta: float = 0.1,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        trim_fraction: float = 0.2,
    ) -> None:
        self.server_lr = server_lr
        self.eta = eta
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
        self.trim_fraction = trim_fraction


def _check_same_keys(updates: Sequence[Mapping[str, npt.NDArray[np.float32]]]) -> list[str]:
    keys = sorted(updates[0])
    for update in updates[1:]:
        if sorted(update) != keys:
            raise ValueError("updates name different tensors")
        for key in keys:
            if update[key].shape != updates[0][key].shape:
                raise ValueError(f"tensor {key!r} has different shapes across updates")
    return keys


def combine(
    strategy: str,
    updates: Sequence[Mapping[str, npt.NDArray[np.float32]]],
    weights: Sequence[float],
    options: ServerOptions,
) -> Arrays:
    """One combined update ``Δ`` from the nodes' updates (see the module docstring)."""
    if not updates:
        raise ValueError("no updates to combine")
    keys = _check_same_keys(updates)
    out: Arrays = {}
    if strategy in MEAN_BASED:
        w = np.asarray(weights, dtype=np.float64)
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError("sample weights must be positive")
        w = w / w.sum()
        for key in keys:
            acc = np.zeros(updates[0][key].shape, dtype=np.float64)
            for share, update in zip(w, updates, strict=True):
                acc += share * update[key]
            out[key] = acc.astype(np.float32)
        return out
    for key in keys:
        stacked = np.stack([u[key] for u in updates]).astype(np.float64)
        if strategy == "fedmedian":
            out[key] = np.median(stacked, axis=0).astype(np.float32)
        elif strategy == "trimmed_mean":
            k = int(np.floor(options.trim_fraction * len(updates)))
            ordered = np.sort(stacked, axis=0)
            kept = ordered[k : len(updates) - k] if len(updates) - 2 * k > 0 else ordered
            out[key] = kept.mean(axis=0).astype(np.float32)
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
    return out


def apply_update(
    strategy: str,
    weights: Mapping[str, npt.NDArray[np.float32]],
    delta: Mapping[str, npt.NDArray[np.float32]],
    optimizer_state: Mapping[str, npt.NDArray[np.float32]] | None,
    options: ServerOptions,
) -> tuple[Arrays, Arrays | None]:
    """The new global weights and optimizer state (``m.*``/``v.*`` arrays, or None)."""
    if sorted(weights) != sorted(delta):
        raise ValueError("the update does not match the global model's tensors")
    if strategy not in ("fedadam", "fedyogi"):
        new = {
            k: (weights[k].astype(np.float64) + options.server_lr * delta[k]).astype(np.float32)
            for k in weights
        }
        return new, None
    state = dict(optimizer_state or {})
    new_weights: Arrays = {}
    new_state: Arrays = {}
    for key in weights:
        d = delta[key].astype(np.float64)
        m = state.get(f"m.{key}", np.zeros_like(d)).astype(np.float64)
        v = state.get(f"v.{key}", np.zeros_like(d)).astype(np.float64)
        m = options.beta1 * m + (1 - options.beta1) * d
        d2 = d * d
        if strategy == "fedadam":
            v = options.beta2 * v + (1 - options.beta2) * d2
        else:
            v = v - (1 - options.beta2) * d2 * np.sign(v - d2)
        step = options.eta * m / (np.sqrt(v) + options.tau)
        new_weights[key] = (weights[key].astype(np.float64) + step).astype(np.float32)
        new_state[f"m.{key}"] = m.astype(np.float32)
        new_state[f"v.{key}"] = v.astype(np.float32)
    return new_weights, new_state
