"""Approving a training's envelope at nodes ahead of time (tests, demos, benchmarks).

:func:`approve_training` builds the envelope a node will see for ``params`` (the same
:func:`~medfed.algorithms.learning.envelope.training_envelope` the node uses) and records
the steward's approval in each node's data dir, as ``medfed node plans approve`` would
after the request arrived. Returns the envelope hash per data dir.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medfed.algorithms.learning.envelope import training_envelope
from medfed.algorithms.learning.fedtrain import TrainParams
from medfed.algorithms.learning.plan import plan_hash
from medfed.node.plans import PlanApprovals

__all__ = ["approve_training"]


def approve_training(
    data_dirs: Iterable[Path],
    source: str,
    *,
    dataset: str,
    params: dict[str, Any],
    name: str = "plan",
) -> list[str]:
    """Approve the envelope of ``params`` (with ``plan`` set from ``source``) at each node."""
    parsed = TrainParams.model_validate({**params, "plan": plan_hash(source)})
    envelope = training_envelope(parsed, dataset)
    return [PlanApprovals(d).approve(envelope, source, name=name) for d in data_dirs]
