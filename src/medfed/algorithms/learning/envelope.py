"""The envelope of a training: the plan plus every setting that changes what leaves a node.

A node's steward approves envelopes, not bare plans. :func:`training_envelope` builds the
envelope of an ``fl.train`` request as one node sees it::

    {"kind": "fl.train", "plan": <plan hash>, "dataset": <this node's dataset>,
     "features": [...], "label": "label", "holdout": {"fraction", "seed"},
     "batch_size", "max_epochs", "max_rounds", "lr", "strategy", "mu", "seed",
     "fraction", "min_nodes", "min_rows_per_update", "initial_weights": <blob hash>,
     "metrics": "binary" | "regression", "plan_args": {...},
     "dp": {...} | null, "dp_sgd": {...} | null, "secagg": {...} | null}

Its identity is :func:`envelope_hash`: SHA-256 of the canonical JSON (sorted keys, no
spaces, UTF-8). Every field must match an approval exactly, except the two bounds:
an approval of ``max_rounds = 10`` also covers a request for 5 rounds, and so for epochs
(:func:`covers`). The steward may raise the bounds when approving.

:func:`policy_refusal` checks an envelope against the node's training policy (DP
required, ε per round and in total, secure aggregation, minimum nodes) before any
approval is looked up: a policy refusal needs no steward.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfed.algorithms.learning.fedtrain import TrainParams

__all__ = [
    "BOUNDS",
    "covers",
    "envelope_hash",
    "envelope_json",
    "round_epsilon",
    "training_envelope",
]

#: fields approved as maxima (a request at or under the approved value is covered)
BOUNDS = ("max_rounds", "max_epochs")


def training_envelope(params: TrainParams, dataset: str) -> dict[str, Any]:
    """The envelope of ``params`` at the node holding ``dataset``."""
    features = [c for c in params.columns if c != params.label]
    return {
        "kind": "fl.train",
        "plan": params.plan,
        "dataset": dataset,
        "features": features,
        "label": params.label,
        "holdout": params.holdout.model_dump(),
        "batch_size": params.batch_size,
        "max_epochs": params.local_epochs,
        "max_rounds": params.rounds,
        "lr": params.lr,
        "strategy": params.strategy,
        "mu": params.mu if params.strategy == "fedprox" else 0.0,
        "seed": params.seed,
        "fraction": params.fraction,
        "min_nodes": params.min_nodes,
        "min_rows_per_update": params.min_rows_per_update,
        "initial_weights": params.initial_weights,
        "metrics": params.metrics,
        "plan_args": params.plan_args,
        "dp": params.dp.model_dump() if params.dp else None,
        "dp_sgd": params.dp_sgd.model_dump() if params.dp_sgd else None,
        "secagg": params.secagg.model_dump() if params.secagg else None,
    }


def envelope_json(envelope: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 (what the hash is taken of)."""
    return json.dumps(
        envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def envelope_hash(envelope: dict[str, Any]) -> str:
    return hashlib.sha256(envelope_json(envelope)).hexdigest()


def covers(approved: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether an approved envelope covers a request: equal fields, bounds not exceeded."""
    if set(approved) != set(request):
        return False
    for key, value in request.items():
        if key in BOUNDS:
            if not isinstance(value, int) or value > int(approved[key]):
                return False
        elif envelope_json({"v": approved[key]}) != envelope_json({"v": value}):
            return False
    return True


def round_epsilon(envelope: dict[str, Any], rounds: int) -> float | None:
    """ε of ``rounds`` rounds of the envelope's user-level DP (None without DP)."""
    dp = envelope.get("dp")
    if not isinstance(dp, dict):
        return None
    from medfed.algorithms.learning.privacy import RoundPrivacy, epsilon

    step = RoundPrivacy(float(dp["noise_multiplier"]), float(envelope["fraction"]))
    return epsilon([step] * rounds, float(dp["delta"]))
