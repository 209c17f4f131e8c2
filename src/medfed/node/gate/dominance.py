"""Dominance rules for magnitude statistics: a sum or mean that one or two rows dominate.

How it runs: a local step that releases a sum, a mean or a sum of squares declares the
values it adds up with ``ctx.magnitudes(label, values)``; the node's
:class:`~medfed.node.gate.rowsets.RecordingData` keeps, per label, a :class:`Magnitude`
(the total of the absolute values, the two largest absolute values and how many rows),
never the values. A step that pushes its sums down to DuckDB adds the three aggregates of
:func:`magnitude_sql` to its query and hands :func:`magnitude_of` of their results to
``ctx.magnitude`` instead (the same figures; the values never reach Python). After the
output rules pass, the agent calls :func:`dominated` with the
node's policy; a hit withholds the whole run, uniformly, like every other rule.

The two rules are ACRO's (SACRO's automatic output checking) with its defaults:

* **(n, k)-dominance** (``dominance_n = 2``, ``dominance_k = 0.9``): the ``n`` largest
  contributions make up more than ``k`` of the total.
* **p % rule** (``p_percent = 0.1``): the rest of the total after the two largest
  contributions is less than ``p`` of the largest — the second-largest contributor could
  then estimate the largest to within ``p``.

Why: a mean over 50 rows where one value is 10,000 and the rest are near 1 tells the
researcher that value to within a few per cent, though the threshold rule (50 ≥ k) is
met; a mean of a 0/1 column where two rows are 1 tells that two patients have the trait.
Absolute values are used so that a signed column cannot hide a dominant row behind
cancellation. A total of zero dominates nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DominancePolicy",
    "Magnitude",
    "dominated",
    "magnitude",
    "magnitude_of",
    "magnitude_sql",
]


@dataclass(frozen=True)
class Magnitude:
    """What the node keeps about the values behind one released sum: never the values."""

    total: float
    top1: float
    top2: float
    rows: int


@dataclass(frozen=True)
class DominancePolicy:
    """The node's dominance settings (``[policy]`` in ``node.toml``)."""

    dominance_n: int = 2
    dominance_k: float = 0.9
    p_percent: float = 0.1


def magnitude(values: npt.ArrayLike) -> Magnitude:
    """The total, two largest absolute values and row count of ``values`` (NaN left out)."""
    array = np.abs(np.asarray(values, dtype=np.float64).ravel())
    array = array[np.isfinite(array)]
    if len(array) == 0:
        return Magnitude(total=0.0, top1=0.0, top2=0.0, rows=0)
    # O(n) in numpy: a partition for the two largest, a pairwise sum for the total (its
    # rounding error, ~1e-16 x log2(n) relative, is far inside the rules' 1e-12 tolerance)
    if len(array) > 1:
        top2, top1 = np.partition(array, len(array) - 2)[-2:]
    else:
        top1, top2 = array[0], 0.0
    return Magnitude(total=float(array.sum()), top1=float(top1), top2=float(top2), rows=len(array))


def magnitude_sql(value: str) -> list[str]:
    """Three DuckDB aggregates over the SQL expression ``value`` (per row) that
    :func:`magnitude_of` turns into the :class:`Magnitude` of :func:`magnitude` (NULL and
    non-finite values left out): the total and the two largest of the absolute values, and
    their count."""
    finite = f"CASE WHEN isfinite({value}) THEN abs({value}) END"
    return [f"fsum({finite})", f"max({finite}, 2)", f"count({finite})"]


def magnitude_of(results: Sequence[Any]) -> Magnitude:
    """The :class:`Magnitude` from the three results of :func:`magnitude_sql`."""
    total, tops, rows = results
    top = [float(t) for t in (tops or [])]
    return Magnitude(
        total=float(total or 0.0),
        top1=top[0] if top else 0.0,
        top2=top[1] if len(top) > 1 else 0.0,
        rows=int(rows or 0),
    )


def _rule(m: Magnitude, policy: DominancePolicy) -> str | None:
    if m.total <= 0.0:
        return None
    top = m.top1 if policy.dominance_n == 1 else m.top1 + m.top2
    # a relative tolerance, so a total computed in another order does not flip the rule
    if top > policy.dominance_k * m.total * (1 + 1e-12):
        return "nk-dominance"
    rest = m.total - m.top1 - m.top2
    if rest < policy.p_percent * m.top1 * (1 - 1e-12):
        return "p-percent"
    return None


def dominated(magnitudes: Mapping[str, Magnitude], policy: DominancePolicy) -> str | None:
    """The first rule a declared magnitude breaks, as ``"rule: label"``; None if none."""
    for label, m in magnitudes.items():
        hit = _rule(m, policy)
        if hit is not None:
            return f"{hit}: {label}"
    return None
