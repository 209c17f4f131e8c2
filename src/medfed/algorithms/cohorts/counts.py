"""``cohort_counts``: a saved cohort's gated counts and attrition at each node.

The task names a saved cohort (``params.cohort``; see
:mod:`medfed.algorithms.cohorts.resources`). Each node generates it over its OMOP CDM
(opt-out applied in the store) and the local step reads the attrition from
``ctx.services`` (:class:`CohortCountsSource`, the node's generated cohort): the persons
with a qualifying entry event, the persons left after each inclusion rule in order, and
the persons in the cohort. Reading them records each of those person sets in the node's
row-set memory, so two cohorts whose person sets differ by fewer than ``min_cell_count``
persons cannot both be released (differencing).

What leaves a node (one round): ``{"rules": [names], "base_persons": n, "attrition":
[n, …], "persons": n}`` — each count under ``min_cell_count`` (zero included) as null,
the others rounded to the node's ``count_rounding`` (as discovery counts are). Gate:
``Cells`` on every count (a second guard; the attrition is a shrinking series, so a
null's position tells nothing the released counts do not).

The result lists each node's counts and a total per step where every node released it.
A node whose whole answer was withheld (``suppressed``: a row-set rule, an error of the
data) gets the same entry as one whose every count is under ``min_cell_count``: its
counts are null and nothing marks it, so the result never says which node withheld its
answer (docs/privacy.md, "Uniform answers": the task says only how many nodes
contributed and how many withheld).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from medfed.algorithms.base import (
    Algorithm,
    Cells,
    Finished,
    LocalContext,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = [
    "CohortAttrition",
    "CohortCounts",
    "CohortCountsParams",
    "CohortCountsResult",
    "CohortCountsSource",
    "NodeCounts",
    "gate_count",
]


@dataclass(frozen=True)
class CohortAttrition:
    """Exact counts of one generated cohort (node-only)."""

    rules: list[str]
    base_persons: int
    attrition: list[int]
    persons: int


class CohortCountsSource(Protocol):
    """What the node gives the local step of ``cohort_counts`` as ``ctx.services``."""

    #: the node's ``count_rounding``
    rounding: int

    def attrition(self) -> CohortAttrition:
        """The counts; records the person set behind each in the row-set memory."""
        ...


def gate_count(n: int, *, min_cell_count: int, rounding: int) -> int | None:
    """None under ``min_cell_count`` (zero included), else rounded to ``rounding``."""
    if n < min_cell_count:
        return None
    return int(round(n / rounding) * rounding)


class CohortCountsParams(BaseModel):
    """No parameters of its own: the cohort is the task's ``cohort=``."""

    model_config = ConfigDict(extra="forbid")


class NodeCounts(BaseModel):
    """One node's released counts; null where under ``min_cell_count`` or withheld."""

    node_id: int
    dataset_id: int
    base_persons: int | None = None
    attrition: list[int | None] = Field(default_factory=list)
    persons: int | None = None


class CohortCountsResult(BaseModel):
    rules: list[str]
    nodes: list[NodeCounts]
    #: sums over the nodes; None for a step where a node released no count
    total_base_persons: int | None
    total_attrition: list[int | None]
    total_persons: int | None

    def summary(self) -> str:
        def show(n: int | None) -> str:
            return "<withheld>" if n is None else str(n)

        header = ["node", "dataset", "entry", *self.rules, "cohort"]
        lines = ["\t".join(header)]
        for node in self.nodes:
            steps = node.attrition or [None] * len(self.rules)
            cells = [node.base_persons, *steps, node.persons]
            lines.append("\t".join([str(node.node_id), str(node.dataset_id), *map(show, cells)]))
        total = [self.total_base_persons, *self.total_attrition, self.total_persons]
        lines.append("\t".join(["total", "", *map(show, total)]))
        return "\n".join(lines)


def _total(values: Sequence[int | None]) -> int | None:
    if not values or any(v is None for v in values):
        return None
    return sum(int(v) for v in values if v is not None)


class CohortCounts(Algorithm[CohortCountsParams]):
    name = "cohort_counts"
    summary = "A saved cohort's gated counts and attrition per inclusion rule, per node"
    Params = CohortCountsParams
    Result = CohortCountsResult

    def validate(self, params: CohortCountsParams, schemas: Sequence[DatasetSchema]) -> None:
        """Nothing to check here: the hub refuses the task without a saved cohort."""

    def disclosure(self, params: CohortCountsParams) -> list[Rule]:
        return [Cells("base_persons"), Cells("attrition"), Cells("persons")]

    def local(self, params: CohortCountsParams, ctx: LocalContext) -> dict[str, Any]:
        source = ctx.services
        if source is None or not hasattr(source, "attrition"):
            raise BadRequest("cohort_counts runs only on a saved cohort at an OMOP node")
        counts: CohortAttrition = source.attrition()
        rounding = int(getattr(source, "rounding", 1))

        def gate(n: int) -> int | None:
            return gate_count(n, min_cell_count=ctx.min_cell_count, rounding=rounding)

        return {
            "rules": list(counts.rules),
            "base_persons": gate(counts.base_persons),
            "attrition": [gate(n) for n in counts.attrition],
            "persons": gate(counts.persons),
        }

    def aggregate(
        self,
        params: CohortCountsParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        answers = sorted(outputs, key=lambda o: (o.node_id, o.dataset_id))
        released = [o.payload for o in answers if o.status == "ok" and o.payload is not None]
        rules = next(([str(r) for r in p.get("rules") or []] for p in released), [])
        width = len(rules)
        nodes = [_node_counts(out, width) for out in answers]
        result = CohortCountsResult(
            rules=rules,
            nodes=nodes,
            total_base_persons=_total([n.base_persons for n in nodes]),
            total_attrition=[_total([n.attrition[i] for n in nodes]) for i in range(width)],
            total_persons=_total([n.persons for n in nodes]),
        )
        return Finished(result.model_dump())


def _node_counts(out: NodeOutput, width: int) -> NodeCounts:
    """A node's entry; a withheld answer reads as counts all under ``min_cell_count``."""
    payload = out.payload if out.status == "ok" and out.payload is not None else {}
    steps: list[int | None] = list(payload.get("attrition") or [])
    return NodeCounts(
        node_id=out.node_id,
        dataset_id=out.dataset_id,
        base_persons=payload.get("base_persons"),
        attrition=(steps + [None] * width)[:width],
        persons=payload.get("persons"),
    )
