"""The ``glm`` parameters, their checks against the datasets, and the design matrix.

Runs in two places. On the hub, :func:`validate_params` checks the parameters against
every dataset's schema before anything is stored, and :func:`agreed_levels` turns the
level counts the nodes sent in round 0 into one sorted level list per categorical column.
On the node, :class:`Design` builds the design matrix of the node's own rows from those
broadcast levels. Nothing here leaves a node; what the local step sends, and the gate
rules, are in :mod:`.local` and :mod:`.irls`.

Coding, as statsmodels' formula interface (patsy) has it:

- A covariate is categorical when it is listed in ``categorical`` or its column is text or
  boolean. Its levels are the values as strings (``level_name``: ``True`` → ``"true"``,
  ``2.0`` → ``"2"``), sorted numerically when every node says the column is numeric and as
  strings otherwise (booleans: ``false`` before ``true``). The first level is the
  reference; the others get a 0/1 column named ``column[T.level]`` (treatment coding).
- Without an intercept, the first categorical covariate is coded with every level
  (``column[level]``), as patsy does for ``y ~ 0 + C(g) + x``.
- Columns come in this order: ``Intercept``, then the covariates in the order given.
- Rows where the outcome, a covariate, the weight or the offset is null are left out
  (complete cases, as the formula interface's ``missing='drop'``).
- ``freq_weights`` names a column of frequency weights (statsmodels' ``freq_weights``):
  each row stands for that many identical observations. The values must be whole numbers
  of at least 0 with no null (the node refuses the run otherwise, see :mod:`.local`); rows
  of weight 0 are left out. The number of observations and the residual degrees of freedom
  come from the sum of the weights; every row-count rule of the gate still counts rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pandas.api import types as ptypes
from pydantic import Field

from medfed.algorithms.glm.families import FamilyName
from medfed.algorithms.stats._common import WhereParams, check_where, require_column
from medfed.algorithms.stats.crosstab import level_name
from medfed.common.errors import BadRequest
from medfed.common.schemas import ColumnType, DatasetSchema

__all__ = [
    "MAX_ITER",
    "MAX_LEVELS",
    "Design",
    "GLMParams",
    "Term",
    "agreed_levels",
    "column_kind",
    "level_codes",
    "level_counts",
    "validate_params",
]

MAX_COVARIATES = 100
MAX_LEVELS = 100
MAX_ITER = 1000

Array = NDArray[np.float64]


class GLMParams(WhereParams):
    """Parameters of ``glm``; see ``docs/algorithms/glm.md``."""

    outcome: str = Field(min_length=1)
    covariates: list[str] = Field(default_factory=list, max_length=MAX_COVARIATES)
    family: FamilyName = "gaussian"
    weights: str | None = Field(default=None, min_length=1)
    freq_weights: str | None = Field(default=None, min_length=1)
    offset: str | None = Field(default=None, min_length=1)
    categorical: list[str] = Field(default_factory=list, max_length=MAX_COVARIATES)
    intercept: bool = True
    max_iter: int = Field(default=100, ge=1, le=MAX_ITER)
    tol: float = Field(default=1e-8, gt=0.0, le=1e-2)

    @property
    def columns(self) -> list[str]:
        """Every column the fit reads, outcome first."""
        extra = [c for c in (self.weights, self.freq_weights, self.offset) if c is not None]
        return [self.outcome, *self.covariates, *extra]


def _check_roles(params: GLMParams) -> None:
    if len(set(params.covariates)) != len(params.covariates):
        raise BadRequest("glm: a covariate is listed twice in covariates")
    if "Intercept" in params.covariates:
        raise BadRequest("glm: 'Intercept' is reserved; rename that column or use intercept")
    if not params.covariates and not params.intercept:
        raise BadRequest("glm: the model has no parameters (no covariates and no intercept)")
    roles = {
        "outcome": params.outcome,
        "weights": params.weights,
        "freq_weights": params.freq_weights,
        "offset": params.offset,
    }
    for role, column in roles.items():
        if column is not None and column in params.covariates:
            raise BadRequest(f"glm: column '{column}' is both the {role} and a covariate")
    named = [c for c in roles.values() if c is not None]
    if len(set(named)) != len(named):
        raise BadRequest("glm: outcome, weights, freq_weights and offset must be different columns")
    for column in params.categorical:
        if column not in params.covariates:
            raise BadRequest(f"glm: categorical column '{column}' is not among the covariates")


def validate_params(params: GLMParams, schemas: Sequence[DatasetSchema]) -> None:
    """Check roles, column names and types against every dataset (runs on the hub)."""
    _check_roles(params)
    require_column("glm", schemas, params.outcome)
    for schema in schemas:
        kind = schema.column(params.outcome)
        assert kind is not None
        ok = kind.type.numeric or (params.family == "binomial" and kind.type == ColumnType.boolean)
        if not ok:
            raise BadRequest(
                f"glm: outcome '{params.outcome}' is {kind.type}, not numeric"
                f"{' or boolean' if params.family == 'binomial' else ''} "
                f"(dataset '{schema.name}')"
            )
    for column in (params.weights, params.freq_weights, params.offset):
        if column is not None:
            require_column("glm", schemas, column, numeric=True)
    for column in params.covariates:
        require_column("glm", schemas, column)
        types = {s.name: s.column(column).type for s in schemas}  # type: ignore[union-attr]
        if column in params.categorical:
            continue
        if any(t == ColumnType.date for t in types.values()):
            raise BadRequest(
                f"glm: covariate '{column}' is a date column; list it in categorical "
                "or derive a number from it"
            )
        numeric = {name: t.numeric for name, t in types.items()}
        if len(set(numeric.values())) > 1:
            listing = ", ".join(f"{name}: {types[name]}" for name in sorted(types))
            raise BadRequest(
                f"glm: covariate '{column}' is numeric in some datasets and not in others "
                f"({listing}); list it in categorical"
            )
    check_where("glm", params, schemas)


def column_kind(series: pd.Series) -> str:
    """``number``, ``boolean`` or ``string``: how a node's column sorts its levels."""
    if ptypes.is_bool_dtype(series.dtype):
        return "boolean"
    if ptypes.is_numeric_dtype(series.dtype):
        return "number"
    return "string"


def level_counts(series: pd.Series) -> dict[str, int]:
    """How many rows have each level (``level_name`` of the value)."""
    codes, uniques = pd.factorize(series)
    counts: dict[str, int] = {}
    for value, count in zip(uniques, np.bincount(codes, minlength=len(uniques)), strict=True):
        name = level_name(value)
        counts[name] = counts.get(name, 0) + int(count)
    return counts


def level_codes(series: pd.Series, levels: Sequence[str]) -> NDArray[np.int64]:
    """Each row's position in ``levels`` (-1 for a level the list lacks)."""
    codes, uniques = pd.factorize(series)
    index = {level: i for i, level in enumerate(levels)}
    lookup = np.asarray([index.get(level_name(v), -1) for v in uniques], dtype=np.int64)
    return lookup[codes] if len(codes) else np.zeros(0, dtype=np.int64)


def agreed_levels(column: str, reported: Sequence[dict[str, Any]], kinds: set[str]) -> list[str]:
    """The union of the levels the nodes reported, sorted; the first is the reference."""
    levels = {str(level) for counts in reported for level in counts}
    if len(levels) > MAX_LEVELS:
        raise BadRequest(
            f"glm: categorical column '{column}' has {len(levels)} levels; at most "
            f"{MAX_LEVELS} are allowed"
        )
    if kinds == {"number"}:
        try:
            return sorted(levels, key=lambda level: (float(level), level))
        except ValueError:
            pass
    return sorted(levels)


@dataclass(frozen=True)
class Term:
    """One column of the design matrix."""

    kind: Literal["intercept", "numeric", "dummy"]
    column: str
    level: str | None = None
    name: str = ""


@dataclass(frozen=True)
class Design:
    """The agreed columns of the design matrix (intercept, numeric, dummy columns)."""

    intercept: bool
    covariates: list[str]
    levels: dict[str, list[str]]

    def terms(self) -> list[Term]:
        out = [Term("intercept", "Intercept", None, "Intercept")] if self.intercept else []
        full = not self.intercept
        for column in self.covariates:
            if column not in self.levels:
                out.append(Term("numeric", column, None, column))
            elif full:
                full = False
                out.extend(Term("dummy", column, v, f"{column}[{v}]") for v in self.levels[column])
            else:
                out.extend(
                    Term("dummy", column, v, f"{column}[T.{v}]") for v in self.levels[column][1:]
                )
        return out

    def names(self) -> list[str]:
        return [term.name for term in self.terms()]

    @property
    def size(self) -> int:
        return len(self.terms())

    def matrix(self, frame: pd.DataFrame) -> Array:
        """The node's design matrix; a level outside the agreed list fails the run."""
        codes: dict[str, NDArray[np.int64]] = {}
        for column, levels in self.levels.items():
            codes[column] = level_codes(frame[column], levels)
            if (codes[column] < 0).any():
                raise BadRequest(
                    f"glm: categorical column '{column}' has a level at this node that the "
                    "levels agreed in round 0 do not list (did the data change?)"
                )
        out = np.empty((len(frame), self.size), dtype=np.float64)
        for j, term in enumerate(self.terms()):
            if term.kind == "intercept":
                out[:, j] = 1.0
            elif term.kind == "numeric":
                out[:, j] = frame[term.column].to_numpy(dtype=np.float64)
            else:
                assert term.level is not None
                position = self.levels[term.column].index(term.level)
                out[:, j] = codes[term.column] == position
        return out
