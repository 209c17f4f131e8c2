"""Wire schemas of saved cohorts (hub API, SDK, CLI) and of a task's cohort reference.

A task names a cohort inside its parameters, next to the algorithm's own ones::

    {"cohort": {"id": 3, "version": 2},          # or {"id": 3} (latest) or {"hash": "…"}
     "features": {"age": true, "outcome": {…}},  # a FeatureSpec; the analysis variables
     "duration": "recurrence_time", …}           # the algorithm's parameters

The hub replaces the reference by the resolved version (:class:`ResolvedCohort`: id,
version, hash and the definition itself) before it stores the task, so every node gets
exactly what was saved and checks the hash again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CohortImport",
    "CohortPublic",
    "CohortRef",
    "CohortVersionPublic",
    "ResolvedCohort",
]

HASH = r"^[0-9a-f]{64}$"


class CohortImport(BaseModel):
    """Import (or re-import) an ATLAS cohort export under a name of the project."""

    project_id: int
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    definition: dict[str, Any] = Field(
        description="the ATLAS export: the Circe expression, or the cohort-definition object "
        "with the expression under 'expression'"
    )


class CohortVersionPublic(BaseModel):
    version: int
    definition_hash: str
    created_at: datetime
    inclusion_rules: list[str] = Field(default_factory=list)
    concept_ids: list[int] = Field(default_factory=list)


class CohortPublic(BaseModel):
    """A saved cohort; ``definition`` is that of ``version`` (the latest unless asked)."""

    id: int
    project_id: int
    name: str
    description: str
    version: int
    definition_hash: str
    definition: dict[str, Any] | None = None
    versions: list[CohortVersionPublic] = Field(default_factory=list)
    created_at: datetime
    #: on import: whether this call added a version (False: the definition was unchanged)
    created: bool | None = None


class CohortRef(BaseModel):
    """How a task names a saved cohort: its id (and version), or a version's hash."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(default=None, ge=1)
    version: int | None = Field(default=None, ge=1)
    hash: str | None = Field(default=None, pattern=HASH)

    @model_validator(mode="after")
    def _one(self) -> CohortRef:
        if (self.id is None) == (self.hash is None):
            raise ValueError("cohort: give its id (and version) or its definition hash")
        if self.version is not None and self.id is None:
            raise ValueError("cohort: a version needs the cohort's id")
        return self


class ResolvedCohort(BaseModel):
    """The cohort as a stored task carries it to the nodes."""

    model_config = ConfigDict(extra="forbid")

    id: int
    version: int
    hash: str = Field(pattern=HASH)
    definition: dict[str, Any]
    #: the cohort's name, for people (the task page); the nodes go by the hash
    name: str | None = None
