"""Training plans: what a researcher's Python module must define, and how it is identified.

A training plan is one Python source file. Its identity is ``plan_hash(source)``: the
SHA-256 (hex) of its *normalized* source, UTF-8 encoded, where normalizing means exactly

1. line endings ``\\r\\n`` and ``\\r`` become ``\\n``;
2. trailing whitespace (spaces, tabs, form feeds) is stripped from every line;
3. trailing empty lines are dropped and the text ends with exactly one ``\\n``.

So a plan saved on Windows and on Linux has one hash, while any change to its code (a
changed character, a new line between statements) is a new hash that each node's steward
must approve again. Nodes compare the hash of the source they *received* with their
approvals before the source is written to disk or imported.

The module runs only inside the node's plan process (``medfed.node.executors``), never in
the node agent or at the hub. medfed splits each node's rows into training and held-out
rows (:mod:`medfed.algorithms.learning.holdout`, a rule of the approved envelope) before
the plan sees any. The plan must define:

``model(args: dict) -> torch.nn.Module``
    The network. Its ``state_dict()`` is what travels (as safetensors).
``train_set(frame: pandas.DataFrame, args: dict) -> torch.utils.data.Dataset``
    The training dataset from the node's *training* rows of the training's columns.
``loss(model, batch) -> torch.Tensor``
    The training loss of one batch (as yielded by a ``DataLoader`` over ``train_set``,
    already moved to the device).
``predict(model, frame: pandas.DataFrame, args: dict) -> torch.Tensor``
    One prediction per row of ``frame`` — the held-out rows, *without* the label column:
    the probability of class 1 (metric set ``binary``) or the predicted value
    (``regression``). The model is on the training's device (move the inputs to
    ``next(model.parameters()).device``). The node computes the metrics from these
    and its own labels (:mod:`medfed.algorithms.learning.metrics`); a plan returns no
    metrics.

and may define:

``optimizer(parameters, lr: float) -> torch.optim.Optimizer``
    Default: ``torch.optim.SGD(parameters, lr=lr)``.

medfed owns the loop (epochs, batches, shuffling with the training's seed, the FedProx
term, clipping) and the held-out split: a plan says *what* to train, not how rounds run
nor which rows it is judged on.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["REQUIRED", "is_plan_hash", "normalize_source", "plan_hash"]

REQUIRED = ("model", "train_set", "loss", "predict")
_HASH = re.compile(r"^[0-9a-f]{64}$")


def normalize_source(source: str) -> str:
    """The normalized text whose UTF-8 bytes are hashed (see the module docstring)."""
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip(" \t\f\v") for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def plan_hash(source: str) -> str:
    """SHA-256 hex of the normalized source: the plan's identity everywhere."""
    return hashlib.sha256(normalize_source(source).encode("utf-8")).hexdigest()


def is_plan_hash(value: str) -> bool:
    return bool(_HASH.match(value))
