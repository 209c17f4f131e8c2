"""What an algorithm declares for a node in ``dp`` mode, and how its result says so.

A node whose policy says ``mode = "dp"`` (``medfed.node.config.Policy``) answers only
algorithms with a noisy variant. Such an algorithm, given a :class:`LocalContext` whose
``dp`` is a :class:`DPSettings`:

* computes its aggregates over values clamped to public bounds (:meth:`DPSettings.bound`:
  the researcher's ``bounds`` parameter, else the node policy's bound for the column);
* declares, in :meth:`Algorithm.noise <medfed.algorithms.base.Algorithm.noise>`, every key
  of that output: a :class:`Noise` (counts, or sums of clamped values, that get calibrated
  noise) or a :class:`Public` (values fixed by the parameters alone, such as a grid).

The node's ``medfed.node.gate.dp`` adds the noise (OpenDP's Laplace mechanism) and a
``"dp"`` entry with the ε this run spent and the project's ε spent and budget on that
dataset. The aggregate step reads those entries with :func:`privacy_of`; a result model
that mixes in :class:`DPResult` then carries ``privacy`` (``mode = "dp"``, ε per dataset).
A result without ``privacy`` was produced in exact mode: its dump has no such key, so exact
results stay exactly as they were.

Nothing here imports OpenDP; the hub and the SDK use these types without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from medfed.common.errors import BadRequest, PolicyRefused

if TYPE_CHECKING:
    from medfed.algorithms.base import NodeOutput

__all__ = [
    "Bounds",
    "DPDataset",
    "DPResult",
    "DPRule",
    "DPSettings",
    "Noise",
    "Privacy",
    "Public",
    "check_bounds",
    "privacy_of",
]

Bounds = tuple[float, float]


def check_bounds(bounds: Sequence[float], what: str = "bounds") -> Bounds:
    """``(low, high)`` with both finite and ``low < high``; ``ValueError`` otherwise."""
    if len(bounds) != 2:
        raise ValueError(f"{what} must be [low, high]")
    low, high = float(bounds[0]), float(bounds[1])
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ValueError(f"{what} must be finite with low < high, not [{low}, {high}]")
    return low, high


@dataclass(frozen=True)
class Noise:
    """DP declaration: the numbers under ``output[key]`` (for each key) get noise.

    Counts (``bounds`` None): integers, nested in lists and dicts, of which adding or
    removing one row changes at most ``rows`` by one each (L1 sensitivity ``rows``: 1
    for a count or a histogram, the number of columns for per-column counts).
    Sums (``bounds`` given, one key): ``output[key]`` maps names to sums of values each
    clamped to ``bounds[name]``; one row adds one summand to each.
    """

    keys: tuple[str, ...]
    rows: int = 1
    bounds: Mapping[str, Bounds] | None = None

    def __post_init__(self) -> None:
        if not self.keys or self.rows < 1:
            raise ValueError("Noise needs at least one key and rows >= 1")
        if self.bounds is not None and len(self.keys) != 1:
            raise ValueError("Noise on sums names exactly one key")


@dataclass(frozen=True)
class Public:
    """DP declaration: ``output[key]`` depends on the parameters only (a grid, bounds)."""

    key: str


DPRule = Noise | Public


@dataclass(frozen=True)
class DPSettings:
    """A dp-mode node's settings as a local step sees them: the policy's column bounds."""

    bounds: Mapping[str, Bounds] = field(default_factory=dict)

    def bound(self, column: str, given: Mapping[str, Sequence[float]] | None = None) -> Bounds:
        """The researcher's bound for ``column`` if given, else the policy's; else refuse.

        The refusal depends on the parameters and the policy, never on the data.
        """
        if given is not None and column in given:
            try:
                return check_bounds(given[column], f"bounds of '{column}'")
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        if column in self.bounds:
            return self.bounds[column]
        raise PolicyRefused(
            f"dp mode: column '{column}' needs public bounds to clamp to; give "
            f"bounds={{'{column}': [low, high]}} or ask the steward for a policy bound"
        )


class DPDataset(BaseModel):
    """One dataset's share of a dp result: ε this task spent there, and the project's."""

    dataset_id: int
    epsilon: float
    spent: float
    budget: float
    left: float


class Privacy(BaseModel):
    """How a result was produced; present only in dp mode."""

    mode: Literal["dp"] = "dp"
    #: the largest ε this task spent on any one dataset (each dataset's guarantee)
    epsilon: float
    mechanism: str = "laplace"
    datasets: list[DPDataset]


class DPResult(BaseModel):
    """Mixin of results that nodes in dp mode can produce: ``privacy``, or no key at all."""

    privacy: Privacy | None = None

    @model_serializer(mode="wrap")
    def _exact_without_privacy(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("privacy") is None:
            data.pop("privacy", None)
        return data

    @property
    def mode(self) -> Literal["exact", "dp"]:
        return "exact" if self.privacy is None else "dp"

    def privacy_note(self) -> str:
        """One line for text summaries: empty in exact mode."""
        if self.privacy is None:
            return ""
        left = min(d.left for d in self.privacy.datasets)
        return (
            f"\nmode dp: ε {self.privacy.epsilon:g} spent per dataset (Laplace); "
            f"least ε left {left:g}"
        )


def privacy_of(outputs: Sequence[NodeOutput]) -> dict[str, Any] | None:
    """The ``privacy`` entry of a result from the outputs' ``"dp"`` entries; None: exact."""
    datasets: list[DPDataset] = []
    for output in outputs:
        if output.status != "ok" or output.payload is None:
            continue
        entry = output.payload.get("dp")
        if not isinstance(entry, dict):
            continue
        spent, budget = float(entry["spent"]), float(entry["budget"])
        datasets.append(
            DPDataset(
                dataset_id=output.dataset_id,
                epsilon=float(entry["epsilon"]),
                spent=spent,
                budget=budget,
                left=max(budget - spent, 0.0),
            )
        )
    if not datasets:
        return None
    epsilon = max(d.epsilon for d in datasets)
    return Privacy(epsilon=epsilon, datasets=datasets).model_dump()
