"""The model registry: one version per finished training, downloadable by entitled members.

When ``fl.train`` finishes, :func:`store_model` (same transaction as the task's result)
adds a row: the training's name, the next version of that name within the project, the
task, plan hash, datasets, final metrics and the blob of the final weights, and writes
``model.store`` to the ledger. A download (:func:`model_for_download`) needs project
membership and an active entitlement for every dataset the model was trained on; it
writes ``model.download``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medfed.common.errors import NotFound
from medfed.hub.db.models import Dataset, Task, User
from medfed.hub.db.models_fl import ModelVersion
from medfed.hub.services.access import entitlements
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.projects import get_project

__all__ = ["get_model", "list_models", "model_for_download", "store_model"]


def store_model(session: Session, *, task: Task, result: dict[str, Any]) -> ModelVersion:
    name = str(task.params.get("name") or f"task-{task.id}")
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(
            ModelVersion.project_id == task.project_id, ModelVersion.name == name
        )
    )
    model = ModelVersion(
        project_id=task.project_id,
        name=name,
        version=(latest or 0) + 1,
        task_id=task.id,
        plan_hash=str(task.params["plan"]),
        dataset_ids=list(task.dataset_ids),
        metrics=dict(result.get("metrics") or {}),
        blob_sha256=str(result["model"]),
    )
    session.add(model)
    session.flush()
    record(
        session,
        action="model.store",
        actor="hub",
        objects={
            "model": model.id,
            "version": model.version,
            "task": task.id,
            "project": task.project_id,
            "datasets": model.dataset_ids,
        },
        hashes={"weights": model.blob_sha256, "plan": model.plan_hash},
    )
    return model


def list_models(session: Session, *, user: User, project_id: int) -> list[ModelVersion]:
    get_project(session, project_id=project_id, user=user)
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.project_id == project_id)
            .order_by(ModelVersion.id)
        )
    )


def get_model(session: Session, *, user: User, model_id: int) -> ModelVersion:
    model = session.get(ModelVersion, model_id)
    if model is None:
        raise NotFound(f"model {model_id} not found")
    get_project(session, project_id=model.project_id, user=user)
    return model


def model_for_download(session: Session, *, user: User, model_id: int) -> ModelVersion:
    model = get_model(session, user=user, model_id=model_id)
    datasets = [d for d in (session.get(Dataset, i) for i in model.dataset_ids) if d is not None]
    entitlements.require_entitled(session, project_id=model.project_id, datasets=datasets)
    record(
        session,
        action="model.download",
        actor=actor_of(user),
        objects={"model": model.id, "project": model.project_id},
        hashes={"weights": model.blob_sha256},
    )
    return model
