"""Federated-learning tables of the hub (training plans, blobs, model registry, privacy).

Imported at the end of ``medfed.hub.db.models`` so that ``Base.metadata`` holds every table.

* ``fl_plans``: submitted training plans — the SHA-256 of the normalized source, its name,
  the source itself and who submitted it (nodes fetch the source to show their steward).
* ``fl_blobs``: the hub's blobs, content-addressed in its blob store (``blob_contents`` on
  PostgreSQL, ``DATA_DIR/blobs`` on SQLite); the row says what each is (``initial``,
  ``global``, ``update``, ``optimizer``, ``masked``, ``output``, ``ethics``), its size and
  the task/node it belongs to.
  Nodes may fetch ``initial`` and ``global`` blobs, never another node's update.
* ``blob_contents``/``blob_chunks``: the bytes of every blob when the hub keeps them in
  PostgreSQL (``blob_store = "database"``, see ``learning/blob_database.py``): one row per
  content (its SHA-256, set only once the whole content is written) and its 1 MiB chunks.
* ``fl_models``: the model registry — one row per finished training (name and version
  within a project, the task, plan hash, datasets, metrics, the final weights' blob).
* ``fl_privacy_budgets``/``fl_privacy_spend``: a project's (ε, δ) budget and what each
  training of the project has spent so far (updated every round by the accountant).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Base

__all__ = [
    "Base",
    "Blob",
    "BlobChunk",
    "BlobContent",
    "ModelVersion",
    "PrivacyBudget",
    "PrivacySpend",
    "TrainingPlan",
]


class TrainingPlan(Base):
    __tablename__ = "fl_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text)
    submitted_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Blob(Base):
    __tablename__ = "fl_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    #: the user whose upload stored it first (``PUT /api/blobs``; counts against the quota)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


#: 64-bit ids on PostgreSQL (aborted uploads use ids too); SQLite's rowid is 64-bit already
_ID = BigInteger().with_variant(Integer, "sqlite")


class BlobContent(Base):
    """A blob's bytes in the database: ``sha256`` is NULL until the upload is complete."""

    __tablename__ = "blob_contents"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class BlobChunk(Base):
    __tablename__ = "blob_chunks"

    content_id: Mapped[int] = mapped_column(
        _ID, ForeignKey("blob_contents.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ModelVersion(Base):
    __tablename__ = "fl_models"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), unique=True)
    plan_hash: Mapped[str] = mapped_column(String(64))
    dataset_ids: Mapped[list[Any]] = mapped_column(default=list)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    blob_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PrivacyBudget(Base):
    __tablename__ = "fl_privacy_budgets"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    set_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PrivacySpend(Base):
    __tablename__ = "fl_privacy_spend"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    epsilon: Mapped[float] = mapped_column(Float, default=0.0)
    delta: Mapped[float] = mapped_column(Float, default=0.0)
    rounds: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
