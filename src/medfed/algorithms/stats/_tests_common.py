"""Small pieces the descriptives and tests share: text tables, pooling, the min-rows rule.

Nothing here runs on its own or sends anything: :func:`text_table` lays out ``summary()``
tables, :func:`number` formats one figure, :func:`require_min_rows` is the local-step check
behind the ``min_rows`` policy (a test on fewer rows than the node's ``min_rows`` is
refused with :class:`~medfed.common.errors.Refused`), :func:`pool_moments` pools
per-node ``(n, sum, m2)`` triples exactly (Chan, Golub and LeVeque). :func:`float_key`,
:func:`float_from_key` and :func:`simplest_between` serve the quantile search: floats as
integers in the same order, and the shortest decimal in an interval.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal

from medfed.algorithms.base import LocalContext
from medfed.algorithms.stats._text import number, text_table
from medfed.common.errors import Refused

__all__ = [
    "float_from_key",
    "float_key",
    "number",
    "pool_moments",
    "require_min_rows",
    "simplest_between",
    "text_table",
]


def require_min_rows(algorithm: str, rows: int, ctx: LocalContext) -> None:
    """Refuse a test on ``0 < rows < min_rows`` rows at this node (the ``min_rows`` rule)."""
    if 0 < rows < ctx.min_rows:
        raise Refused(
            f"gate: min_rows: {algorithm} needs at least {ctx.min_rows} rows at a node; "
            "this node has fewer"
        )


def pool_moments(parts: Sequence[tuple[int, float, float]]) -> tuple[int, float, float]:
    """Pooled ``(n, mean, M2)`` of per-node ``(n, sum, m2)`` (m2 about the node's own mean).

    ``M2 = Σ m2_i + Σ n_i (mean_i - mean)²``; sums use :func:`math.fsum`. With no rows the
    mean is NaN.
    """
    used = [(n, s, m2) for n, s, m2 in parts if n > 0]
    total = sum(n for n, _, _ in used)
    if total == 0:
        return 0, math.nan, math.nan
    mean = math.fsum(s for _, s, _ in used) / total
    m2 = math.fsum(m2 + n * (s / n - mean) ** 2 for n, s, m2 in used)
    return total, mean, m2


def float_key(x: float) -> int:
    """Integers in the order of floats (``-0.0`` and ``0.0`` share 0)."""
    bits: int = struct.unpack(">q", struct.pack(">d", x))[0]
    return bits if bits >= 0 else -(bits & 0x7FFF_FFFF_FFFF_FFFF)


def float_from_key(key: int) -> float:
    """The float whose :func:`float_key` is ``key``."""
    bits = key if key >= 0 else (-key) | (1 << 63)
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


def simplest_between(a: float, b: float) -> float:
    """The number in ``[a, b]`` with the fewest significant decimal digits."""
    if a <= 0.0 <= b:
        return 0.0
    if b < 0.0:
        return -simplest_between(-b, -a)
    low, high = Decimal(a), Decimal(b)
    for digits in range(1, 18):
        step = Decimal(1).scaleb(high.adjusted() - digits + 1)
        candidate = low.quantize(step, rounding=ROUND_CEILING)
        if candidate <= high and a <= float(candidate) <= b:
            return float(candidate)
    return a
