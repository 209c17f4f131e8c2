"""``fl.train``: federated training of an approved plan, as rounds of ordinary runs.

Learning uses the same machinery as statistics: each phase below is one task round with
one run per participating dataset, leased, heart-beaten and logged like any other; the
hub's aggregate step (:meth:`FedTrain.aggregate_in`) moves the training from phase to
phase through ``task.state``. Weights never travel in JSON: the state and outputs carry
blob hashes (``medfed.hub.services.learning.blobs``), sample counts and metrics.

Phases (``state["phase"]``)::

    prepare ─► train ─► train ─► … ─► evaluate ─► finished
                 (or, with secure aggregation, per training round:)
               advertise ─► share ─► masked ─► unmask ─►

* ``prepare`` (round 0): every node checks that its steward approved the training's
  envelope (:mod:`.envelope`: the plan's hash and every setting that changes what leaves)
  and its own training policy, splits off its held-out rows (:mod:`.holdout`) and passes
  both row sets through its row-set memory, and checks that it holds enough rows —
  nothing is trained; a refusal ends the training before any plan code ran anywhere.
* ``train``: the sampled nodes train from the global weights and upload their update;
  the hub combines them (``strategies``), saves the new global weights (a checkpoint: the
  blob plus ``task.state``, committed with the round) and starts the next round.
* ``advertise``/``share``/``masked``/``unmask``: secure aggregation
  (:mod:`.secagg`); the hub stores only masked updates and learns only their sum.
* ``evaluate``: every node evaluates the final model on its held-out rows: the plan
  predicts, the node computes the metrics from its own labels (:mod:`.metrics`).

The hub checks the project's privacy budget before each training round and stops the
training (``stopped``) instead of running a round that would exceed it. A round
proceeds when every run ended, or — with ``quorum < 1`` — once that fraction answered,
or when ``round_timeout_s`` passed; fewer answers than the quorum fail the training with
each node's reason. What leaves a node is described in ``docs/algorithms/learning.md``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medfed.algorithms.base import (
    Algorithm,
    Finished,
    HubContext,
    LocalContext,
    MinRows,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.learning import hub_steps, node_steps
from medfed.algorithms.learning.holdout import HoldoutRule
from medfed.algorithms.learning.metrics import MetricSet
from medfed.algorithms.learning.strategies import MEAN_BASED
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["DPParams", "DPSGDParams", "FedTrain", "SecAggParams", "TrainParams", "TrainResult"]

_HEX64 = r"^[0-9a-f]{64}$"


class DPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip: float = Field(gt=0, description="L2 norm each node's update is clipped to")
    noise_multiplier: float = Field(gt=0, description="noise std / clip on the sum")
    delta: float = Field(default=1e-5, gt=0, lt=1)
    mode: Literal["distributed", "central"] = "distributed"


class DPSGDParams(BaseModel):
    """DP-SGD inside each node (Opacus): example-level privacy of each node's steps."""

    model_config = ConfigDict(extra="forbid")

    noise_multiplier: float = Field(gt=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)


class SecAggParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(default=0.6, gt=0.5, le=1, description="fraction of participants")
    clip: float = Field(default=1e6, gt=0, description="per-coordinate range of n_k·update")
    bits: Literal[32, 64] = 64


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200, description="model name in the registry")
    plan: str = Field(pattern=_HEX64, description="SHA-256 of the approved plan")
    initial_weights: str = Field(pattern=_HEX64, description="blob of the starting weights")
    columns: list[str] = Field(min_length=1)
    label: str = Field(default="label", description="the outcome column (in columns)")
    holdout: HoldoutRule = Field(
        default_factory=HoldoutRule, description="rows each node holds out for its metrics"
    )
    metrics: MetricSet = Field(default="binary", description="the node-computed metric set")
    min_nodes: int = Field(default=1, ge=1, description="fewest nodes whose updates combine")
    min_rows_per_update: int = Field(default=1, ge=1, description="fewest rows in an update")
    rounds: int = Field(default=10, ge=1, le=1000)
    local_epochs: int = Field(default=1, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=0.1, gt=0)
    strategy: Literal["fedavg", "fedprox", "fedadam", "fedyogi", "fedmedian", "trimmed_mean"] = (
        "fedavg"
    )
    mu: float = Field(default=0.01, ge=0, description="FedProx proximal weight")
    server_lr: float = Field(default=1.0, gt=0)
    eta: float = Field(default=0.1, gt=0, description="FedAdam/FedYogi server step")
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0)
    trim_fraction: float = Field(default=0.2, ge=0, lt=0.5)
    fraction: float = Field(default=1.0, gt=0, le=1, description="nodes sampled per round")
    quorum: float = Field(default=1.0, gt=0, le=1, description="fraction that must answer")
    round_timeout_s: float | None = Field(default=None, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    plan_args: dict[str, Any] = Field(default_factory=dict)
    dp: DPParams | None = None
    dp_sgd: DPSGDParams | None = None
    secagg: SecAggParams | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        if self.label not in self.columns:
            raise ValueError(f"the label column {self.label!r} must be one of columns")
        if self.secagg is not None and self.strategy not in MEAN_BASED:
            raise ValueError(f"secure aggregation only gives the sum; {self.strategy} needs each")
        if self.dp is not None and self.strategy not in MEAN_BASED:
            raise ValueError(
                f"differential privacy needs a mean-based strategy, not {self.strategy}"
            )
        return self


class RoundRecord(BaseModel):
    round: int
    updates: int
    samples: int | None = None
    global_metrics: dict[str, float] = Field(default_factory=dict)
    local_metrics: dict[str, float] = Field(default_factory=dict)
    node_seconds: float | None = None
    epsilon: float | None = None
    dp_sgd_epsilon: float | None = None


class TrainResult(BaseModel):
    model: str
    plan: str
    strategy: str
    rounds: int
    metrics: dict[str, float] = Field(default_factory=dict)
    #: pooled calibration bins of the final model: [rows, mean prediction, observed rate]
    calibration: list[list[float]] | None = None
    history: list[RoundRecord] = Field(default_factory=list)
    stopped: str | None = None
    privacy: dict[str, Any] | None = None
    secure_aggregation: bool = False

    def summary(self) -> str:
        lines = [f"fl.train: {self.rounds} round(s), {self.strategy}, model {self.model[:12]}…"]
        for record in self.history:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in record.global_metrics.items())
            lines.append(f"  round {record.round}: {record.updates} update(s); global {shown}")
        if self.metrics:
            lines.append("  final: " + ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items()))
        if self.stopped:
            lines.append(f"  stopped: {self.stopped}")
        return "\n".join(lines)

    def plot(self, path: str) -> None:
        """Save the loss/accuracy (every metric) per round as a PNG."""
        from medfed.algorithms.learning.charts import plot_history

        history = [record.model_dump() for record in self.history]
        plot_history(history, path, f"fl.train ({self.strategy}), {self.rounds} round(s)")


class FedTrain(Algorithm[TrainParams]):
    name = "fl.train"
    summary = "Federated training of an approved PyTorch plan (FedAvg, FedProx, FedAdam, …)"
    Params = TrainParams
    Result = TrainResult
    max_rounds = 10_000
    uses_hub_context = True

    def validate(self, params: TrainParams, schemas: Sequence[DatasetSchema]) -> None:
        for schema in schemas:
            known = {c.name for c in schema.columns}
            missing = [c for c in params.columns if c not in known]
            if missing:
                raise BadRequest(f"fl.train: column {missing[0]!r} is not in every dataset")
        if params.secagg is not None and len(schemas) < 2:
            raise BadRequest("fl.train: secure aggregation needs at least 2 datasets")

    def disclosure(self, params: TrainParams) -> list[Rule]:
        return [MinRows("n")]

    def quorum(self, params: TrainParams, n: int) -> int | None:
        """``ceil(quorum·n)``; secure aggregation waits for every run (its threshold rules)."""
        if params.secagg is not None:
            return None
        return max(1, math.ceil(params.quorum * n - 1e-9))

    def round_timeout(self, params: TrainParams) -> float | None:
        return params.round_timeout_s

    def participants(
        self, params: TrainParams, round: int, state: dict[str, Any], dataset_ids: Sequence[int]
    ) -> list[int]:
        chosen = state.get("participants")
        return list(dataset_ids) if chosen is None else [i for i in dataset_ids if i in chosen]

    def local(self, params: TrainParams, ctx: LocalContext) -> dict[str, Any]:
        return node_steps.run_phase(params, ctx)

    def aggregate(
        self,
        params: TrainParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        raise BadRequest("fl.train aggregates only at a hub (it needs the hub's blob store)")

    def aggregate_in(
        self,
        params: TrainParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
        hub: HubContext,
    ) -> Finished | NextRound:
        return hub_steps.advance(params, state, outputs, hub)


def sample(params: TrainParams, train_round: int, dataset_ids: Sequence[int]) -> list[int]:
    """The datasets sampled for a training round (seeded: the same on every hub restart)."""
    ids = sorted(dataset_ids)
    k = max(1, math.ceil(params.fraction * len(ids)))
    if k >= len(ids):
        return ids
    return sorted(random.Random(f"{params.seed}:{train_round}").sample(ids, k))
