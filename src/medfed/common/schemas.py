"""Wire schemas shared by hub, node and SDK (pydantic, no DB, no web framework).

Column types are the small set every table store maps its own types to; dataset schemas
travel from node to hub when a node registers a dataset, and from hub to algorithms when
a task is validated.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ColumnType(StrEnum):
    """The type of a column as medfed sees it."""

    integer = "integer"
    float = "float"
    string = "string"
    boolean = "boolean"
    date = "date"

    @property
    def numeric(self) -> bool:
        return self in (ColumnType.integer, ColumnType.float)


class ColumnSchema(BaseModel):
    """One column of a dataset: its name and type."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=200)
    type: ColumnType


class DatasetSchema(BaseModel):
    """What an algorithm may know of a dataset before it runs: where it is and its columns."""

    dataset_id: int
    node_id: int
    name: str
    columns: list[ColumnSchema]

    def column(self, name: str) -> ColumnSchema | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None
