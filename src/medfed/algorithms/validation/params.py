"""Parameters of ``validation`` (the node step of a validation study) and their checks.

A study on the hub turns into these parameters: the model (its SHA-256, features, input
and output as the registry checked them), the outcome (a column and its positive value,
or a filter of the filter language: matching rows are positive), the test population
(``where`` over the dataset; cohorts plug in here later as another row source), the
thresholds, calibration bins, the fine grid of the score histograms, subgroups, and —
for a model from medfed's own registry — the training rows to leave out at each node.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medfed.algorithms.learning.holdout import HoldoutRule
from medfed.algorithms.stats._common import WhereParams, check_where
from medfed.algorithms.validation.images import ImageSpec
from medfed.algorithms.validation.model_check import OutputSpec
from medfed.common.errors import BadRequest
from medfed.common.filters import Filter, check_filter, filter_to_json, parse_filter
from medfed.common.schemas import DatasetSchema

__all__ = [
    "IMAGE_COLUMNS",
    "Labels",
    "ModelRef",
    "Outcome",
    "Subgroup",
    "TrainingRows",
    "ValidationParams",
]

_HEX64 = r"^[0-9a-f]{64}$"
MAX_THRESHOLDS = 50
MAX_SUBGROUPS = 10
#: the imaging index's columns an image model's population needs (files with pixels)
IMAGE_COLUMNS = ["path", "rows"]


class ModelRef(BaseModel):
    """The registry's ONNX model as nodes need it (checked again at the node)."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=_HEX64)
    features: list[str] = Field(default_factory=list, max_length=10_000)
    input: str = Field(min_length=1, max_length=200)
    input_type: Literal["float", "double", "float16"] = "float"
    output: OutputSpec
    classes: int = Field(default=2, ge=1)
    image: ImageSpec | None = None

    @model_validator(mode="after")
    def _input(self) -> ModelRef:
        if (self.image is None) == (not self.features):
            raise ValueError("a model takes either feature columns or an image")
        return self


class Outcome(BaseModel):
    """Positive rows: ``column == positive``, or the rows matching ``where``."""

    model_config = ConfigDict(extra="forbid")

    column: str | None = Field(default=None, min_length=1, max_length=200)
    positive: bool | int | float | str | None = None
    where: dict[str, Any] | None = None

    @field_validator("where", mode="before")
    @classmethod
    def _parse_where(cls, raw: Any) -> dict[str, Any] | None:
        f = parse_filter(raw)
        return None if f is None else filter_to_json(f)

    @model_validator(mode="after")
    def _one(self) -> Outcome:
        if (self.column is None) == (self.where is None):
            raise ValueError("give the outcome as a column with its positive value or a filter")
        if self.column is not None and self.positive is None:
            raise ValueError(f"the outcome column {self.column!r} needs its positive value")
        return self

    @property
    def filter(self) -> Filter | None:
        return parse_filter(self.where)


class Subgroup(BaseModel):
    """Results per level of ``column`` (or per band of a numeric column: ``bands``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    column: str = Field(min_length=1, max_length=200)
    bands: list[float] | None = Field(default=None, max_length=20)

    @field_validator("bands")
    @classmethod
    def _increasing(cls, bands: list[float] | None) -> list[float] | None:
        if bands is not None and (not bands or any(b <= a for a, b in pairwise(bands))):
            raise ValueError("bands must be a non-empty increasing list of cut points")
        return bands


class Labels(BaseModel):
    """A table of the node joined to the imaging index (one row per ``key`` value)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=200, description="the node's table dataset")
    key: str = Field(default="patient_pseudonym", min_length=1, max_length=200)


class TrainingRows(BaseModel):
    """A registry model's training split, recomputed at each node to leave its rows out."""

    model_config = ConfigDict(extra="forbid")

    dataset_ids: list[int]
    columns: list[str] = Field(min_length=1)
    holdout: HoldoutRule = Field(default_factory=HoldoutRule)


class ValidationParams(WhereParams):
    """Parameters of ``validation``; see ``docs/validation.md``."""

    study_id: int | None = None
    mode: Literal["private", "shared"] = "private"
    model: ModelRef
    outcome: Outcome
    thresholds: list[float] = Field(default_factory=lambda: [0.5], max_length=MAX_THRESHOLDS)
    calibration_bins: int = Field(default=10, ge=1, le=100)
    grid: int = Field(default=1000, ge=10, le=10_000)
    subgroups: list[Subgroup] = Field(default_factory=list, max_length=MAX_SUBGROUPS)
    exclude_training: TrainingRows | None = None
    labels: Labels | None = None
    max_iter: int = Field(default=100, ge=1, le=1000)
    tol: float = Field(default=1e-8, gt=0.0, le=1e-2)

    @model_validator(mode="after")
    def _consistent(self) -> ValidationParams:
        if self.grid % self.calibration_bins:
            raise ValueError(
                f"grid {self.grid} must be a multiple of calibration_bins {self.calibration_bins}"
            )
        for t in self.thresholds:
            i = round(t * self.grid)
            if not 0 < i < self.grid or abs(t - i / self.grid) > 1e-12:
                raise ValueError(
                    f"threshold {t} must lie strictly inside (0, 1) on the grid of {self.grid}"
                )
        if len({s.name for s in self.subgroups}) != len(self.subgroups):
            raise ValueError("subgroup names must be distinct")
        if self.labels is not None and self.model.image is None:
            raise ValueError("a labels table joins an imaging index: only for image models")
        if self.labels is not None and self.outcome.column is None:
            raise ValueError("with a labels table, give the outcome as a column")
        return self

    @property
    def threshold_index(self) -> list[int]:
        return sorted({round(t * self.grid) for t in self.thresholds})

    @property
    def calibration_index(self) -> list[int]:
        step = self.grid // self.calibration_bins
        return list(range(step, self.grid, step))

    @property
    def columns(self) -> list[str]:
        """Every column the node step reads: features (or the image columns), the labels
        key, outcome, subgroups."""
        out = list(self.model.features) if self.model.image is None else list(IMAGE_COLUMNS)
        if self.labels is not None:
            out.append(self.labels.key)
        if self.outcome.column is not None:
            out.append(self.outcome.column)
        out += [s.column for s in self.subgroups]
        return list(dict.fromkeys(out))


def validate_params(params: ValidationParams, schemas: Sequence[DatasetSchema]) -> None:
    """Every column exists in every dataset; features are numeric; filters fit."""
    check_where("validation", params, schemas)
    for schema in schemas:
        by_name = {c.name: c for c in schema.columns}
        if params.model.image is not None:
            for name in [*IMAGE_COLUMNS, *([params.labels.key] if params.labels else [])]:
                if name not in by_name:
                    raise BadRequest(
                        f"validation: dataset '{schema.name}' has no column '{name}': an "
                        "image model validates on an imaging index (DICOM ingest's index)"
                    )
        for name in params.columns:
            if name not in by_name and params.labels is None:
                raise BadRequest(
                    f"validation: dataset '{schema.name}' has no column '{name}' "
                    "(the model's inputs must match the dataset)"
                )
        for name in params.model.features:
            if by_name[name].type not in ("integer", "float", "boolean"):
                raise BadRequest(
                    f"validation: feature '{name}' of dataset '{schema.name}' is "
                    f"{by_name[name].type}, not numeric"
                )
        f = params.outcome.filter
        if f is not None:
            check_filter(f, schema.columns)
