"""Validation tables of the hub: ONNX models in the registry, and validation studies.

Imported at the end of ``medfed.hub.db.models`` so that ``Base.metadata`` holds every table.

* ``fl_onnx_models``: the model registry's ONNX entries (beside ``fl_models``, the
  trainings' weights): the file is a blob of the hub's blob store (``fl_blobs``, by
  SHA-256); the row keeps what the upload check read and the uploader declared
  (:class:`medfed.algorithms.validation.model_check.ModelDescriptor`: input, features,
  output, positive column, opsets), the project and organization it belongs to and, for a
  model exported from one of medfed's own trainings, that registry entry
  (``derived_from``): its training rows are then left out at every node.
* ``validation_studies``: a model, an outcome, a test population (datasets and filter),
  thresholds, subgroups and a mode (``private``: one organization's own patients, only
  its members see the results; ``shared``: across sites that each consent). ``task_id``
  is the ``validation`` task that computes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Base

__all__ = ["Base", "OnnxModel", "ValidationStudy"]


class OnnxModel(Base):
    __tablename__ = "fl_onnx_models"
    __table_args__ = (UniqueConstraint("project_id", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    descriptor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    derived_from: Mapped[int | None] = mapped_column(ForeignKey("fl_models.id"))
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ValidationStudy(Base):
    __tablename__ = "validation_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(20))
    model_id: Mapped[int] = mapped_column(ForeignKey("fl_onnx_models.id"))
    definition: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_ids: Mapped[list[Any]] = mapped_column(default=list)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
