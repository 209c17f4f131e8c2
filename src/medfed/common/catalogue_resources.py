"""API schemas of the catalogue (lifecycle, metadata, search, pids, Zenodo), shared with the SDK.

Kept apart from the tables like ``medfed.common.resources``: ``DatasetRecord`` is what the
catalogue shows of one dataset version, ``CatalogueResults`` one faceted search,
``PidRecord`` what ``/pid/{id}`` answers in JSON (a tombstone when invalidated).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfed.common.resources import DatasetPublic

AccessRights = Literal["PUBLIC", "RESTRICTED", "NON_PUBLIC"]
AccessCondition = Literal["DOWNLOAD", "IN_SITU_PROCESSING", "REMOTE_PROCESSING"]
LifecycleState = Literal["draft", "released", "published", "invalidated"]
Word = Field(min_length=1, max_length=100)
EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")

__all__ = [
    "AccessCondition",
    "AccessRights",
    "Aggregates",
    "CatalogueResults",
    "DatasetMetadataUpdate",
    "DatasetRecord",
    "FacetCount",
    "LifecycleState",
    "PidRecord",
    "TransitionRequest",
    "ZenodoDepositionPublic",
    "ZenodoSettingsPublic",
    "ZenodoSettingsUpdate",
]


class DatasetMetadataUpdate(BaseModel):
    """DCAT-AP / HealthDCAT-AP metadata of a draft version; fields left out stay as they are.

    ``contact`` is the dataset's contact point (``dcat:contactPoint``): a name with an e-mail
    address or a web address; ``license`` its licence (``dct:license``), an SPDX id such as
    ``CC-BY-4.0`` or a URL. An unknown field is refused, not ignored.
    """

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=5000)
    keywords: list[str] | None = Field(default=None, max_length=50)
    themes: list[str] | None = Field(default=None, max_length=20)
    access_rights: AccessRights | None = None
    access_conditions: list[AccessCondition] | None = Field(default=None, max_length=3)
    duo_codes: list[str] | None = Field(default=None, max_length=30)
    unique_individuals: int | None = Field(default=None, ge=0)
    records: int | None = Field(default=None, ge=0)
    contact: str | None = Field(default=None, max_length=300)
    license: str | None = Field(default=None, max_length=300)

    @field_validator("contact")
    @classmethod
    def _contact_reachable(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not (EMAIL.search(value) or value.strip().startswith(("https://", "http://"))):
            raise ValueError(
                "must include an e-mail address or be a web address "
                "(e.g. 'Data Office <data@hospital.example>')"
            )
        return value.strip()

    @field_validator("license")
    @classmethod
    def _license_word(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if any(c.isspace() for c in value.strip()):
            raise ValueError("must be an SPDX id (e.g. CC-BY-4.0) or a URL, without spaces")
        return value.strip()


class TransitionRequest(BaseModel):
    reason: str = Field(default="", max_length=2000, description="needed to invalidate")


class Aggregates(BaseModel):
    """MIABIS-like aggregates, as the node sent them (small counts already hidden)."""

    sex: dict[str, Any] | None = None
    age_bands: dict[str, Any] | None = None
    diagnoses: dict[str, Any] | None = None
    modalities: dict[str, Any] | None = None
    body_parts: dict[str, Any] | None = None


class DatasetRecord(DatasetPublic):
    """One dataset version as the catalogue shows it."""

    organization_id: int
    label: str = Field(description="state label shown with the dataset (e.g. on a tombstone)")
    title: str | None = None
    keywords: list[str] = Field(default_factory=list)
    themes: list[str] = Field(default_factory=list)
    access_rights: AccessRights = "NON_PUBLIC"
    access_conditions: list[AccessCondition] = Field(default_factory=list)
    duo_codes: list[str] = Field(default_factory=list)
    unique_individuals: int | None = None
    records: int | None = None
    contact: str | None = None
    license: str | None = None
    aggregates: Aggregates = Field(default_factory=Aggregates)
    invalidation_reason: str | None = None
    created_at: datetime
    released_at: datetime | None = None
    published_at: datetime | None = None
    invalidated_at: datetime | None = None
    reactivated_at: datetime | None = None


class FacetCount(BaseModel):
    value: str
    count: int


class CatalogueResults(BaseModel):
    total: int
    results: list[DatasetRecord]
    facets: dict[str, list[FacetCount]]


class PidRecord(BaseModel):
    pid: str
    dataset_id: int
    name: str
    version: int
    state: LifecycleState
    label: str
    url: str
    tombstone: bool
    invalidation_reason: str | None = None
    invalidated_at: datetime | None = None


class ZenodoSettingsUpdate(BaseModel):
    url: str = Field(default="https://zenodo.org", pattern=r"^https?://[^\s]+$", max_length=300)
    token: str | None = Field(default=None, min_length=1, max_length=300)


class ZenodoSettingsPublic(BaseModel):
    """An organization's Zenodo settings; the token itself is never returned."""

    organization_id: int
    url: str
    token_set: bool


class ZenodoDepositionPublic(BaseModel):
    dataset_id: int
    deposition_id: int | None
    doi: str | None
    status: str
    error: str | None
    created_at: datetime
