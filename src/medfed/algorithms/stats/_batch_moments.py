"""Moments of one column in one group, added batch by batch, with the dominance figures.

Nothing here runs on its own or sends anything. ``grouped_summary`` and ``ttest`` read
their columns in batches (``select_batches``) and keep one :class:`BatchMoments` per
group and column (``cox`` one per numeric covariate, for its scaling): the row count,
the sum (``math.fsum`` of each batch's ``fsum``), the sum of squared deviations from the
mean (per batch about the batch's mean, combined by Chan, Golub and LeVeque's formula:
one batch gives exactly ``fsum((x - mean)²)``), and what the node's dominance rules need
about the two released sums — never the values:

- ``sum``: the total of ``|x|`` and its two largest terms;
- ``m2``: its total, and its two largest terms ``(x - mean)²``. The mean is known only
  after the last batch, but the two largest squared deviations come from the two
  smallest or the two largest values, so those four are all that is kept.

:meth:`BatchMoments.declare` records both to the node (``ctx.magnitude``) as
``<label>.sum`` and ``<label>.m2``, once the pass is done. :class:`Figures` is the
batch-by-batch form of :func:`medfed.node.gate.dominance.magnitude` for any sum
(``covariance`` keeps five per pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from medfed.node.gate.dominance import Magnitude

if TYPE_CHECKING:
    from medfed.algorithms.base import LocalContext

__all__ = ["BatchMoments", "Figures"]

Floats = NDArray[np.float64]


def _top2(values: Floats) -> tuple[float, float]:
    """The two largest of ``values`` (0 where there are fewer)."""
    if len(values) == 0:
        return 0.0, 0.0
    if len(values) == 1:
        return float(values[0]), 0.0
    second, first = np.partition(values, len(values) - 2)[-2:]
    return float(first), float(second)


@dataclass
class Figures:
    """The dominance figures of one released sum, added batch by batch: the total of the
    terms' absolute values, the two largest, and how many (finite terms only), as
    :func:`medfed.node.gate.dominance.magnitude` gives them for all the terms at once."""

    totals: list[float] = field(default_factory=list)
    rows: int = 0
    top: tuple[float, float] = (0.0, 0.0)

    def add(self, terms: Floats) -> None:
        magnitudes = np.abs(terms[np.isfinite(terms)])
        self.rows += len(magnitudes)
        self.totals.append(float(magnitudes.sum()))
        self.top = _top2(np.asarray([*self.top, *_top2(magnitudes)]))

    def magnitude(self) -> Magnitude:
        return Magnitude(
            total=math.fsum(self.totals), top1=self.top[0], top2=self.top[1], rows=self.rows
        )


@dataclass
class BatchMoments:
    """``n``, ``Σx``, ``Σ(x - mean)²`` and the dominance figures of one column and group."""

    n: int = 0
    sums: list[float] = field(default_factory=list)
    m2: float = 0.0
    figures: Figures = field(default_factory=Figures)  # of the sum: the terms |x|
    ends: Floats = field(default_factory=lambda: np.zeros(0))  # two smallest, two largest

    def add(self, x: Floats) -> None:
        """The next batch's values of the column in the group (no missing value)."""
        if not len(x):
            return
        total = math.fsum(x)
        m2 = math.fsum((x - total / len(x)) ** 2)
        if self.n:
            delta = total / len(x) - math.fsum(self.sums) / self.n
            m2 += delta * delta * self.n * len(x) / (self.n + len(x))
        self.n += len(x)
        self.sums.append(total)
        self.m2 += m2
        self.figures.add(x)
        both = np.concatenate([self.ends, x])
        if len(both) > 4:  # O(n): the two smallest and the two largest
            low = np.partition(both, 1)[:2]
            high = np.partition(both, len(both) - 2)[-2:]
            both = np.concatenate([low, high])
        self.ends = both

    def message(self) -> dict[str, float]:
        """What leaves the node: ``{"sum": Σx, "m2": Σ(x - mean)²}``."""
        return {"sum": math.fsum(self.sums), "m2": self.m2}

    def declare(self, ctx: LocalContext, label: str) -> None:
        """Record the dominance figures of the released sum and m2 (``<label>.sum``,
        ``<label>.m2``)."""
        ctx.magnitude(f"{label}.sum", self.figures.magnitude())
        if not self.n:
            return
        deviations = (self.ends - math.fsum(self.sums) / self.n) ** 2
        deviations = deviations[np.isfinite(deviations)]
        top1, top2 = _top2(deviations)
        rows = self.figures.rows
        ctx.magnitude(f"{label}.m2", Magnitude(total=self.m2, top1=top1, top2=top2, rows=rows))
