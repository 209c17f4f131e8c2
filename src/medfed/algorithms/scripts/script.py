"""``script.run``: a researcher's analysis script, approved by each node, run in its sandbox.

The task's parameters are the script's source (its identity is the SHA-256 of the
normalized text, as a training plan's: :func:`~medfed.algorithms.learning.plan.plan_hash`),
the columns it reads and the outputs it declares (name → kind: ``table``, ``regression``,
``figure``, ``value``). Together with the node's dataset they make the script's
*envelope*, which the node's steward approves (:func:`script_envelope`); a change to any
part needs a new approval.

One round. The node agent does not call :meth:`ScriptRun.local`: it hands the run to its
script executor (:mod:`medfed.node.executors.scripts`), which checks the approval, runs the
script in the sandbox on the requested columns only, checks each output
(:mod:`medfed.node.outputcheck`) and answers with, per output, ``released`` (with its
data), ``refused`` (with the rule's name) or ``missing`` — or keeps the run in its airlock
until the steward released or refused what the rules could not classify. The aggregate
step lists each node's outputs; nothing is pooled (a script's outputs are per node).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medfed.algorithms.base import Algorithm, Finished, LocalContext, NextRound, NodeOutput
from medfed.algorithms.learning.plan import plan_hash
from medfed.common.errors import BadRequest, Refused
from medfed.common.schemas import DatasetSchema

__all__ = ["ScriptOutput", "ScriptParams", "ScriptResult", "ScriptRun", "script_envelope"]

Kind = Literal["table", "regression", "figure", "value"]
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ScriptParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200, description="a label for people")
    source: str = Field(min_length=1, max_length=200_000, description="the script (Python)")
    script: str = Field(
        default="", description="SHA-256 of the normalized source (filled in when empty)"
    )
    columns: list[str] = Field(min_length=1, max_length=500)
    outputs: dict[str, Kind] = Field(min_length=1, max_length=50)
    timeout_s: float = Field(default=300.0, gt=0, le=3600, description="wall-clock limit")

    @field_validator("outputs")
    @classmethod
    def _names(cls, outputs: dict[str, Kind]) -> dict[str, Kind]:
        for name in outputs:
            if not _NAME.match(name):
                raise ValueError(f"output name {name!r} must be 1-64 letters, digits, _ . -")
        return outputs

    @model_validator(mode="after")
    def _hash(self) -> ScriptParams:
        actual = plan_hash(self.source)
        if self.script and self.script != actual:
            raise ValueError(f"script hash {self.script[:12]}… is not the source's {actual[:12]}…")
        self.script = actual
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("columns must not repeat")
        return self


def script_envelope(params: ScriptParams, dataset: str) -> dict[str, Any]:
    """What a node's steward approves: the script, the dataset, its columns and outputs.

    The script's hash is under ``plan``, as a training's plan: one approval store
    (:class:`medfed.node.plans.PlanApprovals`) and one CLI serve both."""
    return {
        "kind": "script.run",
        "plan": params.script,
        "dataset": dataset,
        "columns": sorted(params.columns),
        "outputs": dict(sorted(params.outputs.items())),
    }


class ScriptOutput(BaseModel):
    kind: Kind
    status: Literal["released", "refused", "missing"]
    #: the rule that refused it, or ``steward``; never a cell or value
    rule: str | None = None
    #: who decided: the automatic rules or the node's steward (airlock)
    by: Literal["rules", "steward"] = "rules"
    data: Any = None


class NodeScriptResult(BaseModel):
    node_id: int
    dataset_id: int
    status: Literal["ok", "suppressed"]
    outputs: dict[str, ScriptOutput] = Field(default_factory=dict)


class ScriptResult(BaseModel):
    script: str
    nodes: list[NodeScriptResult]

    def summary(self) -> str:
        lines = [f"script.run {self.script[:12]}…: {len(self.nodes)} node(s)"]
        for node in self.nodes:
            for name, out in sorted(node.outputs.items()):
                why = f" ({out.rule})" if out.rule else ""
                lines.append(f"  dataset {node.dataset_id}: {name} [{out.kind}] {out.status}{why}")
        return "\n".join(lines)


class ScriptRun(Algorithm[ScriptParams]):
    name = "script.run"
    summary = "A researcher's analysis script, approved by each node, run in its sandbox"
    Params = ScriptParams
    Result = ScriptResult

    def validate(self, params: ScriptParams, schemas: Sequence[DatasetSchema]) -> None:
        for schema in schemas:
            known = {c.name for c in schema.columns}
            missing = [c for c in params.columns if c not in known]
            if missing:
                raise BadRequest(f"script.run: column {missing[0]!r} is not in every dataset")

    def local(self, params: ScriptParams, ctx: LocalContext) -> dict[str, Any]:
        raise Refused("script.run runs only in a node's script executor (sandbox)")

    def aggregate(
        self, params: ScriptParams, round: int, state: dict[str, Any], outputs: Sequence[NodeOutput]
    ) -> Finished | NextRound:
        nodes = [
            NodeScriptResult(
                node_id=o.node_id,
                dataset_id=o.dataset_id,
                status=o.status,
                outputs=(o.payload or {}).get("outputs", {}),
            )
            for o in outputs
        ]
        return Finished(ScriptResult(script=params.script, nodes=nodes).model_dump(mode="json"))
