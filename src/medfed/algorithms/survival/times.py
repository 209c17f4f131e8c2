"""Event times at a node: reading them, coarsening the tail, agreeing a global grid.

This module holds no algorithm; ``km``, ``logrank`` and ``cox`` share it. Nothing here
sends anything by itself. The rule it implements, applied by every survival algorithm
before a value leaves a node, is the **risk-set rule**:

    a node shares event-time aggregates only at times where its risk set (the people of
    the unit still under observation, ``duration >= t``) is at least ``min_cell_count``.

A *unit* is the set of a node's rows that one curve or one stratum uses: all rows, or
the rows of one group level (``km``/``logrank``) or stratum (``cox``).

Coarsening (done in the local step's one pass, :mod:`medfed.algorithms.survival.scan`):
with ``k = min_cell_count`` and the unit's durations sorted, let ``tau`` be the k-th
largest duration (ties included, so ``#{duration >= tau} >= k``). The *tail* is every
row with ``duration > tau``; it has at most ``k - 1`` rows, and at any time ``t > tau``
the node's risk set is smaller than ``k``. The node moves every tail row to ``duration =
tau`` and keeps its event flag: a tail event becomes an event at ``tau``, a tail
censoring a censoring at ``tau``. After that, the unit's risk set is ``>= k`` at every
time ``<= tau`` and empty after ``tau``, so every count and sum it sends is over at
least ``k`` people, and no time beyond ``tau`` is named.

What that does to exactness: nothing before ``tau``: risk sets and events at times
``< tau`` are unchanged, so every pooled estimate before the earliest boundary of any unit
is exact. After it, the federated result is *exactly* the pooled analysis of the data in
which each node's tail rows were moved back to their boundary (tested), which differs from
the analysis of the raw data; ``km`` reports a proven bound on that difference. With
``min_cell_count = 1`` nothing moves (``tau`` is the largest duration) and every result is
exact. A unit with fewer than ``k`` rows, or a node with fewer than ``min_rows`` rows,
makes the node refuse (:class:`~medfed.common.errors.Refused`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import Field

from medfed.algorithms.base import NodeOutput
from medfed.algorithms.stats._common import WhereParams, require_column
from medfed.common.errors import BadRequest, Refused
from medfed.common.schemas import ColumnType, DatasetSchema

__all__ = [
    "ALL",
    "SurvivalParams",
    "check_nodes",
    "check_survival_columns",
    "first_round_datasets",
    "merge_grid",
    "read_survival",
    "require_min_rows",
]

ALL = "all"
"""The unit key when there is no group or stratum column."""

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]


class SurvivalParams(WhereParams):
    """``duration`` (numeric, >= 0) and ``event`` (0/1 or boolean: 1 = event observed)."""

    duration: str = Field(min_length=1)
    event: str = Field(min_length=1)


def check_survival_columns(
    algorithm: str, params: SurvivalParams, schemas: Sequence[DatasetSchema]
) -> None:
    """``duration`` numeric and ``event`` numeric or boolean in every dataset."""
    if params.duration == params.event:
        raise BadRequest(f"{algorithm}: duration and event are the same column")
    require_column(algorithm, schemas, params.duration, numeric=True)
    require_column(algorithm, schemas, params.event)
    for schema in schemas:
        column = schema.column(params.event)
        if column is not None and not (column.type.numeric or column.type == ColumnType.boolean):
            raise BadRequest(
                f"{algorithm}: event column '{params.event}' is {column.type}, not 0/1 or "
                f"boolean (dataset '{schema.name}')"
            )


def require_min_rows(algorithm: str, rows: int, min_rows: int) -> None:
    """Refuse when the node has fewer than ``min_rows`` usable rows."""
    if rows < min_rows:
        raise Refused(
            f"gate: min_rows: {algorithm} needs at least {min_rows} rows with duration and "
            "event at each node; this node has fewer"
        )


def read_survival(
    algorithm: str, frame: pd.DataFrame, duration: str, event: str
) -> tuple[Floats, Bools]:
    """Durations and event flags; a negative duration or an event not 0/1 is a BadRequest."""
    durations = frame[duration].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(durations)) or np.any(durations < 0):
        raise BadRequest(f"{algorithm}: duration '{duration}' has negative or infinite values")
    raw = frame[event].to_numpy(dtype=np.float64)
    if not np.all((raw == 0) | (raw == 1)):
        raise BadRequest(f"{algorithm}: event '{event}' must be 0/1 (1 = event observed)")
    return durations, raw == 1


def merge_grid(lists: Sequence[Sequence[float]]) -> list[float]:
    """The sorted union of event times."""
    return sorted({float(t) for times in lists for t in times})


def check_nodes(
    algorithm: str, state: dict[str, Any], outputs: Sequence[NodeOutput]
) -> list[dict[str, Any]]:
    """Payloads of this round; the datasets that answer must be those of round 0."""
    payloads = [o.payload for o in outputs if o.status == "ok" and o.payload is not None]
    answered = sorted(o.dataset_id for o in outputs if o.status == "ok" and o.payload)
    if answered != state.get("datasets"):
        raise BadRequest(
            f"{algorithm}: a node that contributed to round 0 withheld a later round, so "
            "the pooled result cannot be exact"
        )
    return payloads


def first_round_datasets(outputs: Sequence[NodeOutput]) -> list[int]:
    """Dataset ids that gave an unsuppressed answer in round 0 (stored in the state)."""
    return sorted(o.dataset_id for o in outputs if o.status == "ok" and o.payload)
