"""Access-governance tables of the hub (applications, DAC decisions, entitlements, query budgets).

Imported at the end of ``medfed.hub.db.models`` so that ``Base.metadata`` holds every table.

* ``access_applications``: one REMS application of a project for dataset versions held by
  one organization (its DAC decides), with its state and the DUO mismatches computed at
  submission; ``access_events`` keeps each transition (who, when, comment).
* ``entitlements``: one row per (project x dataset version) granted by an approval, with a
  required end; revocation sets ``revoked_at``.
* ``discovery_queries``: one row per count query a user made (the per-user budget is the
  number of rows in the last window), linked to the task the nodes answered.
* ``query_refusals``: one row per task the hub refused for the project's query budget
  (the budget itself is ``projects.query_budget`` / ``query_window_hours``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Base

__all__ = [
    "AccessApplication",
    "AccessEvent",
    "Base",
    "DiscoveryQuery",
    "Entitlement",
    "QueryRefusal",
]


class AccessApplication(Base):
    __tablename__ = "access_applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    applicant_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(20), default="draft", index=True)
    title: Mapped[str] = mapped_column(String(300), default="")
    purpose: Mapped[str] = mapped_column(Text, default="")
    ethics_reference: Mapped[str] = mapped_column(String(300), default="")
    ethics_file_name: Mapped[str | None] = mapped_column(String(300))
    ethics_file_sha256: Mapped[str | None] = mapped_column(String(64))
    intended_use: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_ids: Mapped[list[Any]] = mapped_column(default=list)
    duration_days: Mapped[int] = mapped_column(Integer)
    mismatches: Mapped[list[Any]] = mapped_column(default=list)
    ends_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class AccessEvent(Base):
    __tablename__ = "access_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("access_applications.id"), index=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    event: Mapped[str] = mapped_column(String(20))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Entitlement(Base):
    __tablename__ = "entitlements"
    __table_args__ = (
        # a project's entitlements on one dataset (every claim and task check): with
        # project_id alone a claim walked every entitlement of the project
        Index("ix_entitlements_project_dataset", "project_id", "dataset_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("access_applications.id"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DiscoveryQuery(Base):
    __tablename__ = "discovery_queries"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    granularity: Mapped[str] = mapped_column(String(10))
    dataset_ids: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class QueryRefusal(Base):
    """A task the hub refused before storing it (``rule``: ``budget``), for the stewards.

    The request itself is kept (project, researcher, algorithm, datasets, parameters with
    the filter) so the steward's query view can list it beside the runs.
    """

    __tablename__ = "query_refusals"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    algorithm: Mapped[str] = mapped_column(String(100))
    dataset_ids: Mapped[list[Any]] = mapped_column(default=list)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rule: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
