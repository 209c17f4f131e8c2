"""What the generic round machinery hands to ``fl.train`` and keeps after each of its steps.

:func:`hub_context` (called by :func:`medfed.hub.services.tasks.finish_round` for
algorithms with ``uses_hub_context``) gives the aggregate step the blob store and the
project's remaining privacy budget (ε of the project's budget minus what its *other*
trainings spent). :func:`after_step` stores what the step reported, in the same
transaction: this training's privacy spend (``state["privacy"]`` /
``result["privacy"]``) and, when the training finished, its model in the registry.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medfed.algorithms.base import Finished, HubContext, NextRound
from medfed.common.timeutil import utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Task
from medfed.hub.db.models_fl import PrivacyBudget, PrivacySpend
from medfed.hub.services.learning.blobs import HubBlobAccess, store_for
from medfed.hub.services.learning.registry import store_model

__all__ = ["after_step", "hub_context"]


def hub_context(session: Session, *, task: Task, settings: HubSettings) -> HubContext:
    budget = session.get(PrivacyBudget, task.project_id)
    left: float | None = None
    if budget is not None:
        spent = session.scalar(
            select(func.coalesce(func.sum(PrivacySpend.epsilon), 0.0)).where(
                PrivacySpend.project_id == task.project_id, PrivacySpend.task_id != task.id
            )
        )
        left = budget.epsilon - float(spent or 0.0)
    return HubContext(
        task_id=task.id,
        project_id=task.project_id,
        dataset_ids=tuple(int(i) for i in task.dataset_ids),
        blobs=HubBlobAccess(store_for(settings), session, task.id),
        privacy_left=left,
        privacy_delta=budget.delta if budget is not None else None,
    )


def after_step(session: Session, *, task: Task, step: Finished | NextRound) -> None:
    report: dict[str, Any] = step.result if isinstance(step, Finished) else step.state
    privacy = report.get("privacy")
    if isinstance(privacy, dict) and "epsilon" in privacy:
        spend = session.get(PrivacySpend, task.id)
        if spend is None:
            spend = PrivacySpend(task_id=task.id, project_id=task.project_id)
            session.add(spend)
        spend.epsilon = float(privacy["epsilon"])
        spend.delta = float(privacy.get("delta", 0.0))
        spend.rounds = int(privacy.get("rounds", 0))
        spend.updated_at = utcnow()
    if isinstance(step, Finished) and step.result.get("model"):
        store_model(session, task=task, result=step.result)
    session.flush()
