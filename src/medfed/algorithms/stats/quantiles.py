"""``quantiles``: exact pooled quantiles of a numeric column by federated bisection on counts.

The definition is numpy's and pandas' default (``linear``, Hyndman-Fan type 7): with ``N``
pooled values sorted as ``x_0 ≤ … ≤ x_{N-1}``, ``h = (N - 1) p``, ``j = ⌊h⌋``, the
quantile is ``x_j + (h - j)(x_{j+1} - x_j)`` computed with numpy's own arithmetic, so an
exact result equals :func:`numpy.quantile` bit for bit (pandas, which calls
``np.percentile(values, 100 p)``, agrees to about one unit in the last place). The hub
finds each needed order statistic ``x_j`` by bisection: for a cut ``c`` the pooled counts
``L(c) = #{x < c}`` and ``U(c) = #{x ≤ c}`` say whether ``x_j < c`` (``L > j``),
``x_j > c`` (``U ≤ j``) or ``x_j = c`` (``L ≤ j < U``). Cuts are the shortest decimals in
equal bands of the current interval (in value and in float order), so data with few
digits is hit in a few rounds, and the search ends, with no ε, on the data value itself
or, at worst, when the interval holds a single float: each round narrows an interval by
at least a factor 8 in float order, so 64-bit floats need at most about 22 rounds (GBSG2
ages take 2, times 3). A search still open after :data:`MAX_ROUNDS` rounds is reported as
bounded. Non-finite values are left out.

What leaves a node, for the non-null finite values of ``column`` in rows matching
``where`` (read batch by batch, so the whole column is never held — except in dp mode,
which bins the values of one frame):

- round 0: ``{"n": n, "bounds": [min_bound, max_bound] | None, "lt": [], "le": []}`` —
  bounds are the extremes rounded outward to one significant digit (as ``summary``).
- round r ≥ 1, for the broadcast cuts ``c_1 < … < c_m``: ``{"n": n, "k": k,
  "lt": [#{x < c}], "le": [#{x ≤ c}], "lt_tail": [..], "le_tail": [..]}``.

Gate: ``MinRows("n")`` (a node with ``0 < n < k`` is suppressed in every round and the
result marked ``incomplete``) and ``Cells("lt")``, ``Cells("le")``. The local step sends
only cumulative counts that are large from both ends: a count ``c`` with ``0 < c < k``
(few values below the cut) or ``0 < n - c < k`` (few at or above it) is sent as ``None``
with a tail code (1 low, 2 high, 3 both) so the hub knows only that it lies in
``[1, k-1]`` or ``[n-k+1, n-1]``. The hub pools counts as intervals; a cut the
intervals cannot place is *ambiguous*. Quantiles in the tails (where some node has fewer
than ``k`` values on one side of every cut near the answer) are therefore not found
exactly: when a round's cuts for an order statistic are all ambiguous, the search stops
and the result gives ``value = None``, ``exact = False`` and ``[lower, upper]``, an
interval of cut points that certainly holds the pooled quantile. Differences of counts
at neighbouring cuts can be small (that is how bisection finds a value); they go to the
hub only, and the researcher sees the quantiles — row values themselves, as a median is.
Nodes see the broadcast cuts, so they learn about where the pooled quantiles lie.

**Shared-value rule** (the privacy rule for what the researcher sees): an order statistic
found exactly is released only when at least ``k`` pooled rows certainly share its value
(``min U(c) - max L(c) >= k``, ``k`` the largest ``min_cell_count`` of the nodes);
otherwise it is an individual's value, and one more round broadcasts the edges of bins
``[a, b)`` around it on decimal grids (steps 1, 2, 5 times 10^e). The narrowest bin that
certainly holds at least ``k`` pooled rows is released instead (``exact = False``,
``coarsened = True``, ``[lower, upper]``: the quantile lies in it, and its width is the
rule's effect). An interpolated quantile uses two order statistics; each obeys the rule,
so two probabilities cannot be combined to solve for the two values. On GBSG2 the
quartiles of age, tsize and pnodes are shared by 20 or more rows and stay exact; those of
the survival time (unique days) are released as bins.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, field_validator

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
from medfed.algorithms.dp import DPResult, DPRule, check_bounds, privacy_of
from medfed.algorithms.plotting import pyplot, save
from medfed.algorithms.stats._common import (
    WhereParams,
    check_where,
    gated_payloads,
    require_column,
)
from medfed.algorithms.stats._dp import quantiles_local, quantiles_noise, quantiles_pool
from medfed.algorithms.stats._tests_common import (
    float_from_key,
    float_key,
    number,
    simplest_between,
    text_table,
)
from medfed.algorithms.stats.moments import outward_round
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["Quantile", "Quantiles", "QuantilesParams", "QuantilesResult"]

MAX_ROUNDS = 40
CUT_BUDGET = 2048  # cuts per round, about; each open order statistic gets 2 m of them


def withheld(count: int, n: int, k: int) -> tuple[int | None, int]:
    """``(count, 0)`` when safe to send, else ``(None, tail)``: 1 few below, 2 few above."""
    tail = (1 if 0 < count < k else 0) + (2 if 0 < n - count < k else 0)
    return (count, 0) if tail == 0 else (None, tail)


def _count_range(count: int | None, tail: int, n: int, k: int) -> tuple[int, int]:
    if count is not None:
        return count, count
    low, high = {1: (1, k - 1), 2: (n - k + 1, n - 1), 3: (1, n - 1)}.get(tail, (0, n))
    return max(low, 0), min(high, n)


def _cuts(lo: float, hi: float, m: int) -> set[float]:
    """About ``2 m`` cuts strictly inside ``(lo, hi)``: short decimals in equal bands."""
    klo, khi = float_key(lo), float_key(hi)
    if khi - klo - 1 <= 2 * m:
        return {float_from_key(k) for k in range(klo + 1, khi)}
    cuts = set()
    span, width = khi - klo, hi - lo
    for i in range(1, m + 1):
        a = float_from_key(klo + (2 * i - 1) * span // (2 * m + 2))
        b = float_from_key(klo + (2 * i + 1) * span // (2 * m + 2))
        cuts.add(simplest_between(a, b))
        if math.isfinite(width):
            a = max(lo, lo + (i - 0.5) * width / (m + 1))
            b = min(hi, lo + (i + 0.5) * width / (m + 1))
            if a <= b:
                cuts.add(simplest_between(a, b))
    return {c for c in cuts if lo < c < hi}


def search_cuts(targets: Sequence[dict[str, Any]]) -> list[float]:
    """The next round's cuts: the union of every open order statistic's cuts, sorted.

    Each open order statistic gets ``m`` cuts in float order and ``m`` in value, with
    ``m`` from 7 to 63 so that a round stays within about :data:`CUT_BUDGET` cuts.
    """
    open_targets = sum(1 for t in targets if t["status"] == "open")
    m = max(7, min(63, CUT_BUDGET // (2 * max(open_targets, 1))))
    cuts: set[float] = set()
    for target in targets:
        if target["status"] == "open":
            cuts |= _cuts(*_ends(target), m)
    return sorted(cuts)


def pooled_ranges(cuts: Sequence[float], payloads: Sequence[dict[str, Any]]) -> np.ndarray:
    """Per cut, the pooled ``[min L, max L, min U, max U]`` over the nodes' (ranged) counts."""
    ranges = np.zeros((len(cuts), 4), dtype=np.int64)
    for p in payloads:
        n, k = int(p["n"]), int(p["k"])
        for col, key in ((0, "lt"), (2, "le")):
            for i, (count, tail) in enumerate(zip(p[key], p[f"{key}_tail"], strict=True)):
                low, high = _count_range(count, int(tail), n, k)
                ranges[i, col] += low
                ranges[i, col + 1] += high
    return ranges


def place(target: dict[str, Any], cuts: Sequence[float], ranges: np.ndarray) -> None:
    """Narrow one order statistic's interval by the pooled count ranges at ``cuts``."""
    rank = int(target["rank"])
    lo, hi = _ends(target)
    first = int(np.searchsorted(cuts, lo, side="right"))
    last = int(np.searchsorted(cuts, hi, side="left"))
    for i in range(first, last):
        cut = cuts[i]
        less_min, less_max, upto_min, upto_max = (int(v) for v in ranges[i])
        if upto_max <= rank:
            lo = cut  # at most ``rank`` values are <= cut: x_rank lies above it
        elif less_min > rank:
            hi = cut  # more than ``rank`` values are < cut: x_rank lies below it
            break
        elif less_max <= rank < upto_min:
            # how many pooled rows certainly hold this value (the shared-value rule)
            target.update(lo=cut, hi=cut, value=cut, status="exact", share=upto_min - less_max)
            return
    if (lo, hi) == _ends(target):
        target["status"] = "bounded"  # every cut inside was ambiguous: stop with the bound
    target.update(lo=_finite(lo), hi=_finite(hi))


def brackets(value: float, low: float | None, high: float | None) -> list[tuple[float, float]]:
    """Bins ``[a, b)`` holding ``value`` on decimal grids (steps 1, 2, 5 times 10^e), finest
    first, up to the width of the data's rounded range (or 10^9 times the value)."""
    scale = abs(value) if value != 0 else 1.0
    top = (high - low) if low is not None and high is not None else scale * 1e9
    top = max(top, scale) * 2
    start = math.floor(math.log10(scale)) - 6
    stop = math.ceil(math.log10(top)) + 1
    out: list[tuple[float, float]] = []
    for e in range(start, stop):
        for mult in (1, 2, 5):
            step = mult * 10.0**e
            digits = max(-e, 0)
            a = round(math.floor(value / step) * step, digits)
            if a > value:
                a = round(a - step, digits)
            b = round(a + step, digits)
            if a <= value < b and math.isfinite(a) and math.isfinite(b):
                out.append((a, b))
    return out


def coarsen_targets(
    targets: Sequence[dict[str, Any]], cuts: Sequence[float], ranges: np.ndarray, k: int
) -> None:
    """Give each target being coarsened its narrowest bin with at least ``k`` pooled rows.

    A bin ``[a, b)`` holds ``L(b) - L(a)`` rows; with counts known only as ranges, it
    certainly holds at least ``min L(b) - max L(a)``. A target no bin covers keeps its
    search interval, widened to the data's range.
    """
    index = {cut: i for i, cut in enumerate(cuts)}
    for target in targets:
        if target["status"] != "coarsen":
            continue
        chosen: tuple[float, float] | None = None
        for a, b in target.pop("brackets"):
            if int(ranges[index[b], 0]) - int(ranges[index[a], 1]) >= k:
                chosen = (a, b)
                break
        lo, hi = chosen if chosen is not None else (target["low"], target["high"])
        target.update(status="coarsened", value=None, lo=lo, hi=hi)


def _ends(target: dict[str, Any]) -> tuple[float, float]:
    """A search interval's ends; ``None`` in the state stands for an infinite end."""
    lo, hi = target["lo"], target["hi"]
    return (-math.inf if lo is None else float(lo)), (math.inf if hi is None else float(hi))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp``: ``a + (b - a) t``, or ``b - (b - a)(1 - t)`` when ``t >= 0.5``."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


class QuantilesParams(WhereParams):
    column: str = Field(min_length=1)
    probs: list[float] = Field(default=[0.25, 0.5, 0.75], min_length=1, max_length=99)
    bounds: list[float] | None = Field(
        default=None, description="dp mode only: the public [low, high] of the quantile grid"
    )

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, bounds: list[float] | None) -> list[float] | None:
        return None if bounds is None else list(check_bounds(bounds))

    @field_validator("probs")
    @classmethod
    def _probs(cls, probs: list[float]) -> list[float]:
        for p in probs:
            if not 0.0 < p < 1.0:
                raise ValueError(f"each prob must lie strictly between 0 and 1, not {p}")
        if len(set(probs)) != len(probs):
            raise ValueError("a prob is listed twice")
        return probs


class Quantile(BaseModel):
    """One pooled quantile: exact, or ``None`` with an interval that holds it.

    ``coarsened``: the exact value is an individual's (fewer than ``k`` pooled rows share
    it), so only a bin of at least ``k`` rows that holds it is released; the quantile
    could be anywhere in ``[lower, upper]`` — that width is the rule's effect.
    """

    prob: float
    value: float | None
    exact: bool
    lower: float | None
    upper: float | None
    coarsened: bool = False


class QuantilesResult(DPResult):
    column: str
    n: int
    quantiles: list[Quantile]
    rounds: int
    incomplete: bool
    suppressed_nodes: int

    def summary(self) -> str:
        rows = [
            (f"{q.prob:g}", number(q.value, 10), "yes" if q.exact else "no",
             number(q.lower, 10), number(q.upper, 10))
            for q in self.quantiles
        ]  # fmt: skip
        title = f"Quantiles of {self.column} (n = {self.n}, {self.rounds} rounds)"
        if self.incomplete:
            title += f" — incomplete: {self.suppressed_nodes} node(s) suppressed"
        table = text_table(title, ["prob", "value", "exact", "lower", "upper"], rows)
        return table + self.privacy_note()

    def plot(self, path: str) -> None:
        plt = pyplot()

        fig, ax = plt.subplots(figsize=(6, 4))
        for q in self.quantiles:
            if q.exact and q.value is not None:
                ax.plot([q.prob], [q.value], "o", color="C0")
            elif q.lower is not None and q.upper is not None:
                ax.vlines(q.prob, q.lower, q.upper, color="C1")
        ax.set_xlabel("probability")
        ax.set_ylabel(self.column)
        ax.set_title(f"Quantiles of {self.column} (n = {self.n})")
        save(fig, path)


def _positions(n: int, p: float) -> tuple[int, int, float]:
    """numpy's ``linear`` method: the two order statistics and the weight between them."""
    virtual = (n - 1) * p
    if virtual >= n - 1:
        return n - 1, n - 1, 0.0
    below = math.floor(virtual)
    return below, below + 1, virtual - below


class Quantiles(Algorithm[QuantilesParams]):
    name = "quantiles"
    summary = "Exact pooled quantiles (numpy/pandas 'linear') by federated bisection"
    Params = QuantilesParams
    Result = QuantilesResult
    max_rounds = MAX_ROUNDS

    def validate(self, params: QuantilesParams, schemas: Sequence[DatasetSchema]) -> None:
        require_column(self.name, schemas, params.column, numeric=True)
        check_where(self.name, params, schemas)

    def disclosure(self, params: QuantilesParams) -> list[Rule]:
        return [MinRows("n"), Cells("lt"), Cells("le")]

    def noise(self, params: QuantilesParams, ctx: LocalContext) -> list[DPRule] | None:
        assert ctx.dp is not None
        return quantiles_noise(ctx.dp, params.column, params.bounds)

    def local(self, params: QuantilesParams, ctx: LocalContext) -> dict[str, Any]:
        if ctx.dp is not None:  # one round: a histogram on the public grid (stats._dp)
            frame = ctx.data.select([params.column], params.filter)
            values = frame[params.column].dropna().to_numpy(dtype=np.float64)
            return quantiles_local(values, ctx.dp, params.column, params.bounds)
        # batch by batch (``select_batches``): the count of finite values, their extremes,
        # and per cut the counts below and at or below it; no frame of the whole column
        cuts = np.asarray(ctx.state["cuts"] if ctx.round else [], dtype=np.float64)
        n, low, high = 0, math.inf, -math.inf
        below = np.zeros(len(cuts), dtype=np.int64)
        at_or_below = np.zeros(len(cuts), dtype=np.int64)
        for frame in ctx.data.select_batches([params.column], params.filter):
            values = frame[params.column].dropna().to_numpy(dtype=np.float64)
            values = np.sort(values[np.isfinite(values)])
            if len(values) == 0:
                continue
            n += len(values)
            low, high = min(low, float(values[0])), max(high, float(values[-1]))
            below += np.searchsorted(values, cuts, side="left")
            at_or_below += np.searchsorted(values, cuts, side="right")
        if ctx.round == 0:
            bounds = None
            if n >= ctx.min_cell_count:
                bounds = [outward_round(low, up=False), outward_round(high, up=True)]
            return {"n": n, "bounds": bounds, "lt": [], "le": []}
        out: dict[str, Any] = {"n": n, "k": ctx.min_cell_count}
        for key, counts in (("lt", below.tolist()), ("le", at_or_below.tolist())):
            sent = [withheld(int(c), n, ctx.min_cell_count) for c in counts]
            out[key] = [count for count, _ in sent]
            out[f"{key}_tail"] = [tail for _, tail in sent]
        return out

    def aggregate(
        self,
        params: QuantilesParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        payloads, suppressed = gated_payloads(outputs)
        privacy = privacy_of(outputs)
        if privacy is not None:  # dp mode: quantiles of the pooled noisy histogram
            n, values = quantiles_pool(payloads, params.probs)
            dp_result = QuantilesResult(
                column=params.column,
                n=n,
                quantiles=[
                    Quantile(prob=p, value=v, exact=False, lower=None, upper=None)
                    for p, v in zip(params.probs, values, strict=True)
                ],
                rounds=1,
                incomplete=suppressed > 0,
                suppressed_nodes=suppressed,
                privacy=privacy,
            )
            return Finished(dp_result.model_dump())
        datasets = sorted(o.dataset_id for o in outputs if o.status == "ok" and o.payload)
        total = sum(int(p["n"]) for p in payloads)
        if round == 0:
            return self._start(params, datasets, total, payloads, suppressed)
        if datasets != state["datasets"] or total != state["n"]:
            raise BadRequest(
                "quantiles: the nodes that answered, or their row counts, changed between "
                "rounds; run the task again"
            )
        # a fresh copy: the hub saves the returned state only when it is a new object
        state = copy.deepcopy(state)
        targets: list[dict[str, Any]] = state["targets"]
        cuts: list[float] = state["cuts"]
        ranges = pooled_ranges(cuts, payloads)
        for target in targets:
            if target["status"] == "open":
                place(target, cuts, ranges)
        if round + 1 >= MAX_ROUNDS:
            for target in targets:
                if target["status"] == "open":
                    target["status"] = "bounded"
        if state.get("phase") == "coarsen":
            coarsen_targets(targets, cuts, ranges, int(state["k"]))
            return Finished(self._result(params, state, round + 1))
        if all(t["status"] != "open" for t in targets):
            k = max(int(p["k"]) for p in payloads)
            if self._start_coarsening(state, k) and round + 1 < MAX_ROUNDS:
                return NextRound(state)
            for target in targets:  # no round left to find a bin: the search interval
                if target["status"] == "coarsen":
                    target.pop("brackets")
                    target.update(status="coarsened", value=None, lo=target["low"])
                    target.update(hi=target["high"])
            return Finished(self._result(params, state, round + 1))
        state["cuts"] = search_cuts(targets)
        return NextRound(state)

    @staticmethod
    def _start_coarsening(state: dict[str, Any], k: int) -> bool:
        """Mark exact values fewer than ``k`` rows share; broadcast their bins' edges."""
        low, high = state.get("range", [None, None])
        cuts: set[float] = set()
        for target in state["targets"]:
            if target["status"] == "exact" and int(target.get("share", 0)) < k:
                bins = brackets(float(target["value"]), low, high)
                target.update(status="coarsen", brackets=bins, low=low, high=high)
                cuts.update(edge for pair in bins for edge in pair)
        if not cuts:
            return False
        state.update(phase="coarsen", k=k, cuts=sorted(cuts))
        return True

    def _start(
        self,
        params: QuantilesParams,
        datasets: list[int],
        total: int,
        payloads: Sequence[dict[str, Any]],
        suppressed: int,
    ) -> Finished | NextRound:
        state: dict[str, Any] = {
            "n": total,
            "datasets": datasets,
            "suppressed": suppressed,
            "targets": [],
        }
        if total == 0:
            return Finished(self._result(params, state, 1))
        # a bound rounded outward past the largest float arrives as None (infinite)
        bounds = [p["bounds"] for p in payloads if p["bounds"] is not None]
        lows = [b[0] for b in bounds]
        highs = [b[1] for b in bounds]
        low = None if None in lows else min(lows)
        high = None if None in highs else max(highs)
        ranks = set()
        for p in params.probs:
            below, above, weight = _positions(total, p)
            ranks.add(below)
            if weight > 0:
                ranks.add(above)
        state["targets"] = [
            {"rank": r, "lo": low, "hi": high, "value": None, "status": "open"}
            for r in sorted(ranks)
        ]
        state["range"] = [low, high]
        state["cuts"] = search_cuts(state["targets"])
        return NextRound(state)

    def _result(
        self, params: QuantilesParams, state: dict[str, Any], rounds: int
    ) -> dict[str, Any]:
        total = int(state["n"])
        found = {t["rank"]: t for t in state["targets"]}
        quantiles = []
        for p in params.probs:
            if total == 0:
                quantiles.append(Quantile(prob=p, value=None, exact=False, lower=None, upper=None))
                continue
            below, above, weight = _positions(total, p)
            first = found[below]
            second = found[above] if weight > 0 else first
            coarsened = "coarsened" in (first["status"], second["status"])
            if first["status"] == "exact" and second["status"] == "exact":
                value = lerp(first["value"], second["value"], weight)
                quantiles.append(
                    Quantile(prob=p, value=value, exact=True, lower=value, upper=value)
                )
                continue
            lower = first["value"] if first["status"] == "exact" else first["lo"]
            upper = second["value"] if second["status"] == "exact" else second["hi"]
            quantiles.append(
                Quantile(
                    prob=p, value=None, exact=False, lower=lower, upper=upper, coarsened=coarsened
                )
            )
        result = QuantilesResult(
            column=params.column,
            n=total,
            quantiles=quantiles,
            rounds=rounds,
            incomplete=int(state["suppressed"]) > 0,
            suppressed_nodes=int(state["suppressed"]),
        )
        return result.model_dump()
