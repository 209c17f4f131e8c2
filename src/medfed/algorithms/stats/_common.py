"""Pieces the statistics algorithms share: the ``where`` parameter and schema checks.

``WhereParams`` is the base of every statistics algorithm's ``Params``. Its ``where`` field
holds a filter in JSON form; it is parsed (and normalised) when the parameters are parsed,
so a malformed filter fails at :meth:`Algorithm.parse_params` with a
:class:`~medfed.common.errors.BadRequest` that names the problem. The checks against the
datasets' columns run in :meth:`Algorithm.validate` (on the hub) and again when the node
compiles the filter for its own table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from medfed.algorithms.base import NodeOutput
from medfed.common.errors import BadRequest
from medfed.common.filters import Filter, check_filter, filter_to_json, parse_filter
from medfed.common.schemas import ColumnSchema, DatasetSchema

__all__ = ["WhereParams", "check_where", "gated_payloads", "require_column"]


class WhereParams(BaseModel):
    """Parameters with an optional row filter (``where``, JSON form)."""

    model_config = ConfigDict(extra="forbid")

    where: dict[str, Any] | None = None

    @field_validator("where", mode="before")
    @classmethod
    def _parse_where(cls, raw: Any) -> dict[str, Any] | None:
        # BadRequest is not a ValueError, so pydantic lets it through unchanged.
        f = parse_filter(raw)
        return None if f is None else filter_to_json(f)

    @property
    def filter(self) -> Filter | None:
        """The parsed filter (``None`` selects every row)."""
        return parse_filter(self.where)


def check_where(algorithm: str, params: WhereParams, schemas: Sequence[DatasetSchema]) -> None:
    """Check the filter against every dataset's columns."""
    f = params.filter
    if f is None:
        return
    for schema in schemas:
        try:
            check_filter(f, schema.columns)
        except BadRequest as exc:
            raise BadRequest(f"{algorithm}: {exc.message} (dataset '{schema.name}')") from None


def require_column(
    algorithm: str, schemas: Sequence[DatasetSchema], name: str, *, numeric: bool = False
) -> None:
    """``name`` must be a column of every dataset (and numeric when asked)."""
    for schema in schemas:
        column: ColumnSchema | None = schema.column(name)
        if column is None:
            raise BadRequest(f"{algorithm}: unknown column '{name}' in dataset '{schema.name}'")
        if numeric and not column.type.numeric:
            raise BadRequest(
                f"{algorithm}: column '{name}' is {column.type}, not numeric "
                f"(dataset '{schema.name}')"
            )


def gated_payloads(outputs: Sequence[NodeOutput]) -> tuple[list[dict[str, Any]], int]:
    """The payloads of outputs that passed the gate, and how many nodes were suppressed."""
    payloads = [o.payload for o in outputs if o.status == "ok" and o.payload is not None]
    return payloads, len(outputs) - len(payloads)
