"""``count``: how many rows match a filter, over all datasets.

What leaves a node per round (one round): ``{"n": rows matching where}``.
Gate: ``MinRows("n")`` — a node with ``0 < n < min_cell_count`` answers ``suppressed`` and
sends nothing; zero passes. The result is the sum over the nodes that answered, with the
number of suppressed nodes (their rows are not in ``n``).

dp mode (a node whose policy says ``mode = "dp"``): ``n`` leaves with discrete Laplace
noise (L1 sensitivity 1, ``medfed.node.gate.dp``) and no gate rule; the result then
carries ``privacy`` (ε per dataset) and ``n`` is the sum of noisy counts (unbiased, and
possibly negative for a small count).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medfed.algorithms.base import (
    Algorithm,
    Finished,
    LocalContext,
    MinRows,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.dp import DPResult, DPRule, Noise, privacy_of
from medfed.algorithms.stats._common import WhereParams, check_where, gated_payloads
from medfed.common.schemas import DatasetSchema

__all__ = ["Count", "CountParams", "CountResult"]


class CountParams(WhereParams):
    """Only a filter; no filter counts every row."""


class CountResult(DPResult):
    n: int
    suppressed_nodes: int

    def summary(self) -> str:
        note = f" ({self.suppressed_nodes} node(s) suppressed)" if self.suppressed_nodes else ""
        return f"count: {self.n}{note}{self.privacy_note()}"


class Count(Algorithm[CountParams]):
    name = "count"
    summary = "Number of rows matching a filter"
    Params = CountParams
    Result = CountResult

    def validate(self, params: CountParams, schemas: Sequence[DatasetSchema]) -> None:
        check_where(self.name, params, schemas)

    def disclosure(self, params: CountParams) -> list[Rule]:
        return [MinRows("n")]

    def noise(self, params: CountParams, ctx: LocalContext) -> list[DPRule] | None:
        return [Noise(("n",))]

    def local(self, params: CountParams, ctx: LocalContext) -> dict[str, Any]:
        return {"n": ctx.data.count(params.filter)}

    def aggregate(
        self, params: CountParams, round: int, state: dict[str, Any], outputs: Sequence[NodeOutput]
    ) -> Finished | NextRound:
        payloads, suppressed = gated_payloads(outputs)
        n = sum(int(p["n"]) for p in payloads)
        privacy = privacy_of(outputs)
        result = CountResult(n=n, suppressed_nodes=suppressed, privacy=privacy)
        return Finished(result.model_dump())
