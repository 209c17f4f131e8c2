"""Wire schemas of validation studies (hub routes, SDK, CLI share them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medfed.algorithms.validation.images import ImageSpec
from medfed.algorithms.validation.model_check import OutputSpec

__all__ = ["OnnxModelCreate", "OnnxModelPublic", "StudyCreate", "StudyPublic", "StudyRun"]


class OnnxModelCreate(BaseModel):
    """Register a file already in the blob store (``PUT /api/blobs``) as an ONNX model."""

    model_config = ConfigDict(extra="forbid")

    project_id: int
    name: str = Field(min_length=1, max_length=200)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    features: list[str] = Field(default_factory=list, max_length=10_000)
    output: OutputSpec
    image: ImageSpec | None = Field(default=None, description="an image model's input")
    derived_from: int | None = Field(default=None, description="registry model it exports")


class OnnxModelPublic(BaseModel):
    id: int
    project_id: int
    name: str
    sha256: str
    size: int
    input: str
    features: list[str]
    output: OutputSpec
    classes: int
    image: ImageSpec | None = None
    derived_from: int | None
    provenance: dict[str, Any] | None = Field(
        default=None, description="a derived model's origin (recalibration: source model, study)"
    )
    created_at: datetime


class StudyCreate(BaseModel):
    """A validation study: model, datasets, outcome and what to compute."""

    model_config = ConfigDict(extra="forbid")

    project_id: int
    name: str = Field(min_length=1, max_length=200)
    mode: Literal["private", "shared"] = "private"
    model_id: int
    datasets: list[int | str] = Field(min_length=1, max_length=1000)
    outcome: dict[str, Any]
    where: dict[str, Any] | None = None
    thresholds: list[float] = Field(default_factory=lambda: [0.5])
    calibration_bins: int = 10
    grid: int = 1000
    subgroups: list[dict[str, Any]] = Field(default_factory=list)
    labels: dict[str, Any] | None = Field(
        default=None, description="image models: {dataset, key} of the node's labels table"
    )

    def definition(self) -> dict[str, Any]:
        fields = {"outcome", "where", "thresholds", "calibration_bins", "grid", "subgroups"}
        return self.model_dump(include=fields | ({"labels"} if self.labels else set()))


class StudyRun(BaseModel):
    dataset_id: int
    site: str
    status: str
    output_status: str | None = None
    error: str | None = None


class StudyPublic(BaseModel):
    id: int
    project_id: int
    name: str
    mode: Literal["private", "shared"]
    model_id: int
    dataset_ids: list[int]
    task_id: int | None
    status: str
    error: str | None = None
    definition: dict[str, Any]
    result: dict[str, Any] | None = None
    runs: list[StudyRun] = Field(default_factory=list)
    created_at: datetime
