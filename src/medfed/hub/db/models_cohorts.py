"""Cohort tables of the hub: saved, versioned Circe cohort definitions (issue 16).

Imported at the end of ``medfed.hub.db.models`` so that ``Base.metadata`` holds every table.

* ``cohorts``: one row per saved cohort of a project (its name is unique in the project).
* ``cohort_versions``: the cohort's definitions, numbered 1, 2, … A version is immutable:
  the Circe expression as imported (checked by
  :func:`medfed.algorithms.cohorts.circe.parse_definition`) and its ``definition_hash``
  (SHA-256 of the canonical JSON), which tasks, nodes' logs and the ledger name it by.
  Importing a changed definition under the same name adds the next version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Base

__all__ = ["Base", "Cohort", "CohortVersion"]


class Cohort(Base):
    __tablename__ = "cohorts"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(5000), default="")
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CohortVersion(Base):
    __tablename__ = "cohort_versions"
    __table_args__ = (UniqueConstraint("cohort_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cohort_id: Mapped[int] = mapped_column(ForeignKey("cohorts.id"), index=True)
    version: Mapped[int] = mapped_column()
    definition: Mapped[dict[str, Any]] = mapped_column(default=dict)
    definition_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
