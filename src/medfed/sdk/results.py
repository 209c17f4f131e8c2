"""Typed task results returned by the SDK: the pooled result plus each node's status.

``TaskResult.result`` is the algorithm's own ``Result`` model (for example
``MeanResult``); ``TaskResult.nodes`` says, per node, whether it answered, refused or
failed — never its values; ``contributing_nodes`` and ``withheld_nodes`` count the nodes
whose answer went into the result and those whose gate withheld it (never which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from medfed.common.errors import BadRequest, MedfedError
from medfed.common.resources import NodeRunStatus, TaskPublic

R = TypeVar("R", bound=BaseModel)


class TaskFailed(MedfedError):
    """The task ended as failed; the message is the hub's reason (often a gate rule)."""

    status_code = 409

    def __init__(self, task: TaskPublic) -> None:
        super().__init__(f"task {task.id} ({task.algorithm}) failed: {task.error}")
        self.task = task


class TaskTimeout(MedfedError):
    status_code = 504


@dataclass(frozen=True)
class TaskResult(Generic[R]):
    task_id: int
    algorithm: str
    result: R
    nodes: list[NodeRunStatus]
    rounds: int

    contributing_nodes: int = 0
    withheld_nodes: int = 0

    @property
    def mode(self) -> str:
        """``"dp"`` when a node answered with calibrated noise (``result.privacy`` says
        ε per dataset, spent and left), else ``"exact"``."""
        return "exact" if getattr(self.result, "privacy", None) is None else "dp"

    def summary(self) -> str:
        """The result's text table (statsmodels-like) or, without one, its JSON."""
        summarize = getattr(self.result, "summary", None)
        if callable(summarize):
            return str(summarize())
        return self.result.model_dump_json(indent=2)

    def plot(self, path: str) -> None:
        """Save the result's plot as PNG (Kaplan-Meier curves, forest plots, ...)."""
        draw = getattr(self.result, "plot", None)
        if not callable(draw):
            raise BadRequest(f"{self.algorithm} results have no plot")
        draw(path)

    def node_table(self) -> list[dict[str, Any]]:
        return [{"node": n.node_name, "status": n.status.value} for n in self.nodes]
