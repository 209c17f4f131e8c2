"""The gate's output rules: threshold, whole-grid and tail-cell rules on one local output.

How it runs: the node agent calls :func:`apply_gate` on the dict an algorithm's local step
returned, with that algorithm's rules (:meth:`Algorithm.disclosure`) and the node's
:class:`GatePolicy`. The row-set rules (subset, differencing) run after this, in
:mod:`medfed.node.gate.rowsets`. In order:

1. The output is copied into plain JSON data (dict with string keys, list, str, int,
   float, bool, None). Anything else — a numpy scalar, a DataFrame, a set, a tuple —
   raises ``ValueError``: an algorithm that returns something odd is a bug, and the node
   reports the run as failed instead of sending it. NaN and infinities become ``None``.
   The one exception is a numpy array of ``float64`` or ``int64`` (large aggregates that
   travel as binary, :mod:`medfed.common.arrays`): it is copied, non-finite values become
   NaN (the array form of ``None``), and every rule below applies to it element by element
   exactly as to a list of numbers.
2. :class:`MinRows` rules: when ``output[key] < min_cell_count`` — zero included, so a node
   with no usable rows looks exactly like one with a few — the whole output is withheld:
   :class:`GateResult` has status ``"suppressed"``, no payload, and ``reason`` names the
   rule for the node's own log (it never leaves the node).
3. :class:`Grid` rules: when any count under ``output[key]`` (a number, or nested lists and
   dicts of numbers) is between 1 and ``min_cell_count - 1``, the whole output is withheld
   — which cell was small is never visible. Zero cells pass (DataSHIELD's ``nfilter.tab``).
4. :class:`Cells` rules (monotone tails only: survival risk sets, quantile ranks): every
   count with ``0 < count < min_cell_count`` becomes ``None``. Only for series where the
   position of the small cells follows from the released ones (a decreasing risk set).

A key named by a rule that is missing, or a count that is not a non-negative number, raises
``ValueError`` — the gate never guesses what an algorithm meant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medfed.algorithms.base import Cells, Grid, MinRows, Rule
from medfed.common.arrays import ALLOWED_DTYPES

__all__ = ["GatePolicy", "GateResult", "apply_gate", "plain"]

_MAX_DEPTH = 64


@dataclass(frozen=True)
class GatePolicy:
    """A node's disclosure settings."""

    min_cell_count: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.min_cell_count, bool) or not isinstance(self.min_cell_count, int):
            raise ValueError(f"min_cell_count must be an integer, not {self.min_cell_count!r}")
        if self.min_cell_count < 1:
            raise ValueError(f"min_cell_count must be at least 1, not {self.min_cell_count}")


@dataclass(frozen=True)
class GateResult:
    """What may leave the node: the gated payload, or nothing when suppressed."""

    status: Literal["ok", "suppressed"]
    payload: dict[str, Any] | None
    suppressed_cells: int = 0
    #: why the output was withheld, for the node's own log only
    reason: str | None = None


def plain(value: Any, path: str = "output", depth: int = 0) -> Any:
    """A deep copy of ``value`` as plain JSON data; ``ValueError`` names what is not."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"gate: {path} is nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"gate: {path} has a key {key!r} that is not a string")
            out[key] = plain(item, f"{path}.{key}", depth + 1)
        return out
    if type(value) is list:
        return [plain(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if type(value) is np.ndarray and value.dtype in ALLOWED_DTYPES:
        array = np.array(value, copy=True)
        if array.dtype.kind == "f":
            array[~np.isfinite(array)] = np.nan
        return array
    raise ValueError(
        f"gate: {path} is {type(value).__module__}.{type(value).__qualname__}, "
        "not plain JSON data (dict, list, str, int, float, bool, None)"
    )


def _count(value: Any, path: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"gate: {path} must be a count, not {value!r}")
    if value < 0:
        raise ValueError(f"gate: {path} is a negative count ({value})")
    return value


def _array_counts(value: np.ndarray, path: str) -> np.ndarray:
    """Where an array of counts is positive (NaN: already suppressed); refuses negatives."""
    with np.errstate(invalid="ignore"):
        if bool((value < 0).any()):
            raise ValueError(f"gate: {path} holds a negative count")
        return np.asarray(value > 0)


def _cells(value: Any, k: int, path: str) -> tuple[Any, int]:
    """``value`` with small counts replaced by None, and how many were replaced."""
    if value is None:
        return None, 0
    if isinstance(value, np.ndarray):
        small = _array_counts(value, path)
        small &= value < k
        if not small.any():
            return value, 0
        out = value.astype(np.float64)
        out[small] = np.nan
        return out, int(small.sum())
    if isinstance(value, list):
        items = [_cells(item, k, f"{path}[{i}]") for i, item in enumerate(value)]
        return [item for item, _ in items], sum(n for _, n in items)
    if isinstance(value, dict):
        pairs = {key: _cells(item, k, f"{path}.{key}") for key, item in value.items()}
        return {key: item for key, (item, _) in pairs.items()}, sum(n for _, n in pairs.values())
    count = _count(value, path)
    if 0 < count < k:
        return None, 1
    return value, 0


def _small(value: Any, k: int, path: str) -> bool:
    """Whether any count under ``value`` is between 1 and ``k - 1``."""
    if value is None:
        return False
    if isinstance(value, np.ndarray):
        return bool((_array_counts(value, path) & (value < k)).any())
    if isinstance(value, list):
        return any(_small(item, k, f"{path}[{i}]") for i, item in enumerate(value))
    if isinstance(value, dict):
        return any(_small(item, k, f"{path}.{key}") for key, item in value.items())
    return 0 < _count(value, path) < k


def _field(output: dict[str, Any], key: str, rule: Rule) -> Any:
    if key not in output:
        raise ValueError(f"gate: rule {rule!r} names key '{key}', which the output lacks")
    return output[key]


def apply_gate(output: dict[str, Any], rules: Sequence[Rule], policy: GatePolicy) -> GateResult:
    """Apply ``rules`` to one local output under ``policy`` (see the module docstring)."""
    if type(output) is not dict:
        raise ValueError(f"gate: output must be a dict, not {type(output).__name__}")
    payload: dict[str, Any] = plain(output)
    k = policy.min_cell_count
    for rule in rules:
        if not isinstance(rule, MinRows | Grid | Cells):
            raise ValueError(f"gate: unknown rule {rule!r}")
    for rule in rules:
        if isinstance(rule, MinRows):
            value = _field(payload, rule.key, rule)
            if value is None:
                raise ValueError(f"gate: row count '{rule.key}' is null or not finite")
            if _count(value, f"output.{rule.key}") < k:
                return _withheld(f"threshold: {rule.key} under min_cell_count")
    for rule in rules:
        if isinstance(rule, Grid) and _small(
            _field(payload, rule.key, rule), k, f"output.{rule.key}"
        ):
            return _withheld(f"grid: a cell of {rule.key} under min_cell_count")
    suppressed = 0
    for rule in rules:
        if isinstance(rule, Cells):
            value = _field(payload, rule.key, rule)
            payload[rule.key], n = _cells(value, k, f"output.{rule.key}")
            suppressed += n
    return GateResult(status="ok", payload=payload, suppressed_cells=suppressed)


def _withheld(reason: str) -> GateResult:
    return GateResult(status="suppressed", payload=None, reason=reason)
