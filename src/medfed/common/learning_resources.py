"""API schemas of federated learning (plans, trainings, rounds, models, privacy budgets).

Shared by the hub's routes and the SDK, kept apart from the tables like
``medfed.common.resources``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BlobStored",
    "ModelPublic",
    "PlanCreate",
    "PlanPublic",
    "PlanSource",
    "PrivacyBudgetPublic",
    "PrivacyBudgetSet",
    "RoundTiming",
    "TrainingCreate",
    "TrainingProgress",
]


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PlanCreate(BaseModel):
    name: str = Field(default="plan", min_length=1, max_length=200)
    source: str = Field(min_length=1)


class PlanPublic(_Public):
    hash: str
    name: str
    submitted_by: int
    created_at: datetime


class PlanSource(PlanPublic):
    source: str


class BlobStored(BaseModel):
    sha256: str
    size: int


class TrainingCreate(BaseModel):
    project_id: int
    datasets: list[int | str] = Field(min_length=1)
    params: dict[str, Any]


class RoundTiming(BaseModel):
    """One task round of a training: its phase, when it started and ended, its runs."""

    round: int
    phase: str | None = None
    train_round: int | None = None
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None
    runs: int
    done: int
    node_seconds: list[float] = Field(default_factory=list)


class TrainingProgress(BaseModel):
    task_id: int
    status: str
    phase: str | None
    train_round: int
    rounds: int
    history: list[dict[str, Any]] = Field(default_factory=list)
    timings: list[RoundTiming] = Field(default_factory=list)
    privacy: dict[str, Any] | None = None
    error: str | None = None


class ModelPublic(_Public):
    id: int
    project_id: int
    name: str
    version: int
    task_id: int
    plan_hash: str
    dataset_ids: list[int]
    metrics: dict[str, float]
    blob_sha256: str
    created_at: datetime


class PrivacyBudgetSet(BaseModel):
    epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)


class PrivacyBudgetPublic(BaseModel):
    project_id: int
    epsilon: float
    delta: float
    spent: float
