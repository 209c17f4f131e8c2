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
the node agent or at the hub. It must define:

``model(args: dict) -> torch.nn.Module``
    The network. Its ``state_dict()`` is what travels (as safetensors).
``datasets(frame: pandas.DataFrame, args: dict) -> (train, held_out)``
    Two ``torch.utils.data.Dataset`` objects from the node's rows of the columns the
    training asks for (``columns``). The held-out one gives the per-node metrics.
``loss(model, batch) -> torch.Tensor``
    The training loss of one batch (as yielded by a ``DataLoader`` over ``train``, already
    moved to the device).

and may define:

``evaluate(model, loader) -> dict[str, float]``
    Metrics over the held-out loader; each value is a mean over its samples (the hub
    averages nodes' metrics weighted by their held-out counts). Default: the mean loss.
``optimizer(parameters, lr: float) -> torch.optim.Optimizer``
    Default: ``torch.optim.SGD(parameters, lr=lr)``.

medfed owns the loop (epochs, batches, shuffling with the training's seed, the FedProx
term, clipping): a plan says *what* to train, not how rounds run.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["REQUIRED", "is_plan_hash", "normalize_source", "plan_hash"]

REQUIRED = ("model", "datasets", "loss")
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
