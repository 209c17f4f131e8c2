"""A node's survival rows read in one pass, batch by batch: units, boundaries, per-time sums.

``km``, ``logrank`` and ``cox`` run their local steps through this module; it sends
nothing by itself. What each of them sends, and the gate rules, are in their own modules;
the risk-set rule that every one of them applies is in
:mod:`medfed.algorithms.survival.times`.

How it runs: :func:`read_batches` streams the selected columns (``select_batches``: the
node never holds its table), drops incomplete rows, declares the grid cells the step
releases (group, stratum or categorical levels) batch by batch, checks durations and
events, and splits each batch into its units. A :class:`Tally` per unit keeps what the
step needs and nothing row-sized:

- its row count and its ``k`` largest durations, so the unit's boundary ``tau`` (the k-th
  largest duration, ties included) is known once the pass is done;
- in round 0, its distinct event durations and their counts;
- in a round on agreed times ``t_1 < … < t_m``, the rows' contributions (a count, and any
  per-row columns a step adds — Cox's ``w``, ``w x``, ``w x x'``) in the bucket of the
  last agreed time at or before each row's *raw* duration, and the events' contributions
  at their own time.

The risk set at ``t_j`` is then the sum of the buckets after ``j`` (a reverse cumulative
sum over times, not over rows). That equals the coarsened unit's risk set at every
``t_j <= tau`` — a tail row (``duration > tau``) is at risk there whether it was moved or
not — and times after ``tau`` get 0. The tail's events are moved to ``tau`` after the
pass. Memory is a batch plus one row of sums per agreed time. Tested: the counts and sums
equal the rule's definition computed with numpy on the moved rows
(``tests/unit/test_pushdown.py``), and the fits equal lifelines on the data with each
node's tail moved (``tests/unit/test_survival.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from medfed.algorithms.stats.crosstab import level_names, level_order
from medfed.algorithms.survival.times import (
    ALL,
    SurvivalParams,
    read_survival,
    require_min_rows,
)
from medfed.common.errors import BadRequest, Refused

if TYPE_CHECKING:
    from medfed.algorithms.base import LocalContext

__all__ = ["Batch", "OnGrid", "Tally", "checked_units", "read_batches"]

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]
Rows = slice | NDArray[np.intp]


@dataclass(frozen=True)
class Batch:
    """One batch of complete rows (index reset), its durations, events and units."""

    frame: pd.DataFrame
    durations: Floats
    events: Bools
    units: list[tuple[str, Rows]]


def read_batches(
    algorithm: str,
    params: SurvivalParams,
    ctx: LocalContext,
    columns: Sequence[str],
    unit_column: str | None,
    cells: Sequence[str],
) -> Iterator[Batch]:
    """The rows of ``columns`` matching ``where`` with no missing value, batch by batch;
    the levels of ``cells`` declared as grids (the row-set memory), closed at the end."""
    grids = {column: ctx.grid() for column in cells}
    for frame in ctx.data.select_batches(columns, params.filter):
        frame = frame.dropna()
        for column, grid in grids.items():
            grid.add(frame[column])
        frame = frame.reset_index(drop=True)
        durations, events = read_survival(algorithm, frame, params.duration, params.event)
        if unit_column is None:
            units: list[tuple[str, Rows]] = [(ALL, slice(None))]
        else:
            names = level_names(frame[unit_column])
            units = [(str(v), np.flatnonzero(names == v)) for v in pd.unique(names)]
        yield Batch(frame, durations, events, units)
    for grid in grids.values():
        grid.close()


def checked_units(
    algorithm: str,
    tallies: dict[str, Tally],
    rows: int,
    ctx: LocalContext,
    column: str | None,
    what: str,
) -> list[str]:
    """The units' levels in order, after the node's refusals: fewer than ``min_rows`` rows,
    or a unit with fewer than ``min_cell_count`` rows (the level is not named)."""
    require_min_rows(algorithm, rows, ctx.min_rows)
    order = sorted(tallies, key=level_order)
    k = ctx.min_cell_count
    if any(tallies[level].rows < k for level in order):
        raise Refused(
            f"gate: min_cell_count: a {what} level of '{column}' has fewer than {k} rows at "
            "this node, so its event times cannot be shared"
        )
    return order


def _bins(index: NDArray[np.intp], values: Floats, size: int) -> Floats:
    """``(size, C)``: per bucket, the sums of ``values`` (``(C, n)``: one contiguous row
    per column of sums) over the rows in that bucket."""
    out = np.zeros((size, values.shape[0]))
    for c in range(values.shape[0]):
        out[:, c] = np.bincount(index, weights=values[c], minlength=size)
    return out


@dataclass(frozen=True)
class OnGrid:
    """A unit on the agreed times, its tail moved to its boundary: per time the risk set's
    size and sums, the events and their sums, and the unweighted sums when asked for."""

    at_risk: Ints
    events: Ints
    risk: Floats
    tied: Floats
    plain: Floats | None


@dataclass
class Tally:
    """What one pass keeps of a unit: counts, the k largest durations, sums per agreed
    time — never its rows."""

    k: int
    rows: int = 0
    top: Floats = field(default_factory=lambda: np.zeros(0))
    died_at: Floats = field(default_factory=lambda: np.zeros(0))
    died_n: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # per bucket (last agreed time <= raw duration; bucket 0: before the first time)
    risk_n: Ints | None = None
    risk: Floats | None = None
    plain: Floats | None = None
    # per agreed time: the events whose raw duration is that time; and the events whose
    # duration is no agreed time (valid only beyond the boundary: the tail)
    tied_n: Ints | None = None
    tied: Floats | None = None
    off_n: int = 0
    off: Floats | None = None
    off_first: float = math.inf

    def add_rows(self, durations: Floats) -> None:
        self.rows += len(durations)
        top = np.concatenate([self.top, durations])
        if len(top) > self.k:
            top = np.partition(top, len(top) - self.k)[len(top) - self.k :]
        self.top = top

    @property
    def boundary(self) -> float:
        """``tau``: the k-th largest duration, ties included (needs ``rows >= k``)."""
        return float(np.min(self.top))

    @property
    def tail(self) -> int:
        """Rows after the boundary (at most ``k - 1``): moved back to it."""
        return int(np.count_nonzero(self.top > self.boundary))

    def add_events(self, died: Floats) -> None:
        """Round 0: count event durations."""
        times, where = np.unique(np.concatenate([self.died_at, died]), return_inverse=True)
        weights = np.concatenate([self.died_n, np.ones(len(died), dtype=np.int64)])
        self.died_at = times
        self.died_n = np.bincount(where, weights=weights, minlength=len(times)).astype(np.int64)

    def event_times(self) -> tuple[list[float], list[int]]:
        """Round 0: distinct event times after coarsening and the events at each."""
        tau = self.boundary
        keep = self.died_at <= tau
        times = [float(t) for t in self.died_at[keep]]
        counts = [int(c) for c in self.died_n[keep]]
        moved = int(self.died_n[~keep].sum())
        if moved:
            if times and times[-1] == tau:
                counts[-1] += moved
            else:
                times.append(tau)
                counts.append(moved)
        return times, counts

    def add_sums(
        self,
        grid: Floats,
        durations: Floats,
        events: Bools,
        values: Floats,
        plain: Floats | None = None,
    ) -> None:
        """A round on ``grid``: count the rows and add their ``values`` (and ``plain``:
        over risk sets only) per bucket, the events' per time. ``values`` and ``plain``
        hold one row per column of sums and one column per row of data (``(C, n)``)."""
        size = len(grid) + 1
        if self.risk_n is None:
            self.risk_n = np.zeros(size, dtype=np.int64)
            self.risk = np.zeros((size, values.shape[0]))
            self.tied_n = np.zeros(len(grid), dtype=np.int64)
            self.tied = np.zeros((len(grid), values.shape[0]))
            self.off = np.zeros(values.shape[0])
            if plain is not None:
                self.plain = np.zeros((size, plain.shape[0]))
        assert self.risk is not None and self.tied_n is not None
        assert self.tied is not None and self.off is not None
        bucket = np.searchsorted(grid, durations, side="right")
        self.risk_n += np.bincount(bucket, minlength=size)
        self.risk += _bins(bucket, values, size)
        if plain is not None and self.plain is not None:
            self.plain += _bins(bucket, plain, size)
        died = durations[events]
        died_values = values[:, events]
        at = np.minimum(np.searchsorted(grid, died), max(len(grid) - 1, 0))
        found = grid[at] == died if len(grid) else np.zeros(len(died), dtype=bool)
        self.tied_n += np.bincount(at[found], minlength=len(grid))
        self.tied += _bins(at[found], died_values[:, found], len(grid))
        if not found.all():
            self.off_n += int(np.count_nonzero(~found))
            self.off += died_values[:, ~found].sum(axis=1)
            self.off_first = min(self.off_first, float(died[~found].min()))

    def on_grid(self, algorithm: str, grid: Floats) -> OnGrid:
        """The round's per-time series, the tail moved to the boundary; an event at no
        agreed time (before the boundary, or the boundary itself not agreed) is refused."""
        # a unit exists only once a batch reached it, and every batch of a round adds sums
        assert self.risk_n is not None and self.risk is not None and self.tied_n is not None
        assert self.tied is not None and self.off is not None
        tau = self.boundary
        beyond = grid > tau  # after the boundary: empty risk set, no event
        last = int(np.searchsorted(grid, tau))  # the boundary's index, when it is a time
        tied_n, tied = self.tied_n.copy(), self.tied.copy()
        moving = int(tied_n[beyond].sum()) + self.off_n
        if self.off_first <= tau or (moving and not (last < len(grid) and grid[last] == tau)):
            raise BadRequest(
                f"{algorithm}: an event time of this node is missing from the agreed times"
            )
        if moving:
            tied_n[last] += moving
            tied[last] += tied[beyond].sum(axis=0) + self.off
        tied_n[beyond] = 0
        tied[beyond] = 0.0

        def after(buckets: NDArray[np.generic]) -> NDArray[np.generic]:
            # the sum over the buckets after j: the rows whose duration is t_j or later
            tail = np.cumsum(buckets[::-1], axis=0)[::-1][1:]
            tail[beyond] = 0
            return np.ascontiguousarray(tail)

        return OnGrid(
            at_risk=np.asarray(after(self.risk_n), dtype=np.int64),
            events=tied_n,
            risk=np.asarray(after(self.risk), dtype=np.float64),
            tied=tied,
            plain=None if self.plain is None else np.asarray(after(self.plain), dtype=np.float64),
        )
