"""The two-round event table that ``km`` and ``logrank`` share.

What leaves a node, for the rows that match ``where`` and have a duration and an event
(and a group, when one is named); every unit is coarsened first (see
:mod:`medfed.algorithms.survival.times`)::

    round 0  {"rows": R, "at_risk": {},
              "times": {level: [distinct event times of the coarsened unit]}}
    round 1  {"rows": R, "tail_max": k - 1,
              "unit_rows": {level: rows of the unit},
              "at_risk": {level: [#(duration >= t) for t in the global grid]},
              "events": {level: [#events at t for t in the global grid]},
              "boundary": {level: index of the first grid time after the unit's
                           boundary, or null when nothing was coarsened}}

The per-time series of round 1 (``at_risk``, ``events``) are ``int64`` numpy arrays and
travel as binary (:mod:`medfed.common.arrays`); the gate applies its rules to them as to
lists. Round 0 agrees the global grid: the hub sends back the sorted union of every node's event
times (``state["times"]``). ``level`` is the group level (``"all"`` without a group).

Gate: ``MinRows("rows")`` withholds the whole output when ``R < min_cell_count``;
``Cells("at_risk")`` turns any risk-set count under ``min_cell_count`` into ``None``. The
local step itself guarantees that never happens: by the risk-set rule each count is
either 0 or at least ``min_cell_count``, and the event counts are counts within such a
risk set. The node refuses when it has fewer than ``min_rows`` rows, or a group level
with fewer than ``min_cell_count`` rows (the level is not named). Every round the hub
checks that the same datasets answer as in round 0.

How it runs: each round is one pass over the rows in batches
(:mod:`medfed.algorithms.survival.scan`): per unit, its row count, its ``k`` largest
durations and, per agreed time, its rows and events are counted; the risk sets follow
by a reverse cumulative sum over times, the tail's events are moved to the boundary after
the pass. A node never holds its table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from medfed.algorithms.base import (
    Algorithm,
    Cells,
    Finished,
    LocalContext,
    MinRows,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.stats.crosstab import level_order
from medfed.algorithms.survival.scan import Tally, checked_units, read_batches
from medfed.algorithms.survival.times import (
    SurvivalParams,
    check_nodes,
    first_round_datasets,
    merge_grid,
)
from medfed.common.arrays import has_gaps
from medfed.common.errors import BadRequest

__all__ = ["EventTableAlgorithm", "PooledTable", "UnitTail", "pool_tables"]

Ints = NDArray[np.int64]


@dataclass(frozen=True)
class UnitTail:
    """One coarsened node unit: where its boundary lies on the grid, and ``k - 1``."""

    boundary_index: int
    tail_max: int
    events: Ints


@dataclass
class PooledTable:
    """One level's pooled risk sets and events on the global grid."""

    level: str
    times: NDArray[np.float64]
    at_risk: Ints
    events: Ints
    rows: int = 0
    tails: list[UnitTail] = field(default_factory=list)
    #: the largest ``min_cell_count`` of the nodes that answered (interval rule of ``km``)
    k: int = 1


P = TypeVar("P", bound=SurvivalParams)


class EventTableAlgorithm(Algorithm[P]):
    """Local step and round-0 aggregation shared by ``km`` and ``logrank``."""

    max_rounds = 2
    requires_every_dataset = True

    def group_column(self, params: P) -> str | None:
        return None

    def disclosure(self, params: P) -> list[Rule]:
        return [MinRows("rows"), Cells("at_risk")]

    def local(self, params: P, ctx: LocalContext) -> dict[str, Any]:
        group = self.group_column(params)
        columns = [params.duration, params.event] + ([group] if group else [])
        k = ctx.min_cell_count
        grid = np.asarray(ctx.state.get("times", []), dtype=np.float64)
        tallies: dict[str, Tally] = {}
        rows = 0
        # each group's table is released: its rows are a cell (row-set memory)
        cells = [group] if group else []
        for batch in read_batches(self.name, params, ctx, columns, group, cells):
            rows += len(batch.frame)
            for level, chosen in batch.units:
                tally = tallies.setdefault(level, Tally(k))
                d, e = batch.durations[chosen], batch.events[chosen]
                tally.add_rows(d)
                if ctx.round == 0:
                    tally.add_events(d[e])
                else:
                    tally.add_sums(grid, d, e, np.zeros((0, len(d))))  # counts only
        order = checked_units(self.name, tallies, rows, ctx, group, "group")
        if ctx.round == 0:
            times = {level: tallies[level].event_times()[0] for level in order}
            return {"rows": rows, "at_risk": {}, "times": times}
        out: dict[str, Any] = {
            "rows": rows,
            "tail_max": k - 1,
            "unit_rows": {},
            "at_risk": {},
            "events": {},
            "boundary": {},
        }
        for level in order:
            tally = tallies[level]
            got = tally.on_grid(self.name, grid)
            out["unit_rows"][level] = tally.rows
            out["at_risk"][level] = got.at_risk  # int64: binary transport
            out["events"][level] = got.events
            out["boundary"][level] = (
                int(np.searchsorted(grid, tally.boundary, side="right")) if tally.tail else None
            )
        return out

    def aggregate(
        self, params: P, round: int, state: dict[str, Any], outputs: Sequence[NodeOutput]
    ) -> Finished | NextRound:
        if round == 0:
            payloads = [o.payload for o in outputs if o.status == "ok" and o.payload]
            if not payloads:
                raise BadRequest(f"{self.name}: no node gave an unsuppressed answer")
            grid = merge_grid([t for p in payloads for t in p["times"].values()])
            return NextRound({"times": grid, "datasets": first_round_datasets(outputs)})
        payloads = check_nodes(self.name, state, outputs)
        suppressed = len(outputs) - len(payloads)
        tables = pool_tables(payloads, np.asarray(state["times"], dtype=np.float64))
        result = self.finish(params, tables, suppressed)
        return Finished(self.Result.model_validate(result).model_dump())

    def finish(self, params: P, tables: dict[str, PooledTable], suppressed: int) -> dict[str, Any]:
        """The result from the pooled tables (each subclass)."""
        raise NotImplementedError


def pool_tables(
    payloads: Sequence[dict[str, Any]], grid: NDArray[np.float64]
) -> dict[str, PooledTable]:
    """Sum the node units of each level; keep each coarsened unit's tail description."""
    tables: dict[str, PooledTable] = {}
    zeros = np.zeros(len(grid), dtype=np.int64)
    for payload in payloads:
        for level, at_risk in payload["at_risk"].items():
            if has_gaps(at_risk):
                raise BadRequest(
                    "a node's gate suppressed a risk-set count; its risk-set rule failed"
                )
            table = tables.setdefault(level, PooledTable(level, grid, zeros.copy(), zeros.copy()))
            events = np.asarray(payload["events"][level], dtype=np.int64)
            table.at_risk += np.asarray(at_risk, dtype=np.int64)
            table.events += events
            table.rows += int(payload["unit_rows"][level])
            table.k = max(table.k, int(payload["tail_max"]) + 1)
            boundary = payload["boundary"][level]
            if boundary is not None:
                table.tails.append(UnitTail(int(boundary), int(payload["tail_max"]), events))
    return dict(sorted(tables.items(), key=lambda item: level_order(item[0])))
