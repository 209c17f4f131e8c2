"""The node side of ``fl.train``: one function per phase, run by the node agent.

The agent passes :class:`LearningServices` in ``LocalContext.services``; through it a step
gets the plan's source *only after* the hash of the received text matched an approval
(``approved_source``), fetches and uploads blobs, and runs the plan in the plan process.
Everything here runs in the agent (trusted node code): the plan's update is clipped and
noised (DP) and masked (secure aggregation) here, after the plan process exited its job,
so plan code never touches what is sent.

What each phase sends (all pass the gate's ``MinRows("n")``: a node with fewer training
samples than its ``min_cell_count`` sends nothing at all):

* prepare: ``{"ready": 1, "n"}`` (``n`` = rows rounded to the node's threshold);
* train: ``{"update": blob hash, "n", "n_eval", "global_metrics", "local_metrics",
  "seconds", "device"}`` — metrics only when ``n_eval`` ≥ the threshold;
* advertise/share/unmask: the secure-aggregation message and ``n``;
* masked: ``{"masked": blob hash, …}`` as train, the blob being the masked vector;
* evaluate: ``{"n", "n_eval", "global_metrics"}``.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd
from safetensors.numpy import load_file, save

from medfed.algorithms.base import LocalContext
from medfed.algorithms.learning import tensors
from medfed.algorithms.learning.holdout import split
from medfed.algorithms.learning.metrics import check_predictions, compute_metrics
from medfed.algorithms.learning.privacy import DPConfig, privatize_update
from medfed.algorithms.learning.secagg import SecAggClient, SecAggConfig
from medfed.common.errors import BadRequest, Conflict, PolicyRefused, Refused

if TYPE_CHECKING:
    from medfed.algorithms.learning.fedtrain import TrainParams

__all__ = ["LearningServices", "run_phase", "split_rows"]

IntArray = npt.NDArray[np.int64]


@runtime_checkable
class LearningServices(Protocol):
    """What the node agent offers a training step (``medfed.node.executors.services``)."""

    task_id: int
    dataset_id: int
    memory: dict[str, Any]

    def approved_source(self, params: TrainParams) -> str:
        """The plan's source once the training's envelope is approved; refused otherwise."""
        ...

    def release_rows(self, train_ids: IntArray, holdout_ids: IntArray) -> None:
        """Pass the training's row sets through the row-set memory; :class:`Refused` if not."""
        ...

    def record_run(self, phase: str) -> None:
        """Note in the approval's history that this run went ahead."""
        ...

    def fetch_blob(self, sha256: str, dest: Path) -> None: ...

    def upload(self, data: bytes) -> str: ...

    def run_plan(self, job_dir: Path, timeout: float | None = None) -> None:
        """Run the job; a plan still running after ``timeout`` seconds is killed."""
        ...

    def warm_up(self) -> None:
        """Start the plan process ahead of the first job (no plan code runs)."""
        ...

    def job_dir(self) -> AbstractContextManager[Path]: ...


def _services(ctx: LocalContext) -> LearningServices:
    if not isinstance(ctx.services, LearningServices):
        raise Refused("fl.train: this node runs no training plans (no plan executor)")
    return ctx.services


def _rounded(n: int, threshold: int) -> int:
    """Counts leave rounded to the threshold; under it the raw count makes the gate suppress."""
    return n if n < threshold else int(round(n / threshold) * threshold)


def split_rows(
    params: TrainParams, ctx: LocalContext, services: LearningServices
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The node's training and held-out rows (medfed's split), released as row sets."""
    frame = ctx.data.select(params.columns)
    train_ids, holdout_ids = split(frame.index.to_numpy(), params.holdout)
    labels = pd.Series(0, index=frame.index, dtype="int64")
    labels.loc[holdout_ids] = 1
    ctx.cells(labels)  # the node's log fingerprints both row sets
    services.release_rows(train_ids, holdout_ids)  # before any plan code runs
    train, held = frame.loc[train_ids], frame.loc[holdout_ids]
    need = max(ctx.min_rows, params.min_rows_per_update)
    if len(train) < need:
        raise Refused(f"fl.train: fewer training rows here than the {need} needed")
    return train, held


def run_phase(params: TrainParams, ctx: LocalContext) -> dict[str, Any]:
    services = _services(ctx)
    state = ctx.state
    phase = str(state.get("phase", "prepare"))
    if int(state.get("train_round", 0)) > params.rounds:
        raise PolicyRefused(f"fl.train: round beyond the training's {params.rounds} rounds")
    if phase == "prepare":
        services.approved_source(params)
        train, held = split_rows(params, ctx, services)
        services.warm_up()
        return {"ready": 1, "n": _rounded(len(train) + len(held), ctx.min_cell_count)}
    if phase in ("train", "masked"):
        participants = state.get("participants") or []
        if participants and len(participants) < params.min_nodes:
            raise PolicyRefused(
                f"fl.train: {len(participants)} node(s) in the round, the envelope's "
                f"min_nodes is {params.min_nodes}"
            )
        return _train_phase(params, ctx, services, phase)
    if phase == "evaluate":
        result, _, held = _run_plan(params, ctx, services, epochs=0, phase=phase)
        metrics = _metrics(params, result, held, ctx)
        calibration = (metrics.pop("calibration", None) or {}).get("global")
        return {
            "n": _rounded(result["n_train"], ctx.min_cell_count),
            **metrics,
            "calibration": calibration,
        }
    return _secagg_phase(ctx, services, phase)


def _metrics(
    params: TrainParams,
    result: dict[str, Any],
    held: dict[str, Any],
    ctx: LocalContext,
    local: bool = False,
) -> dict[str, Any]:
    """Node-computed metrics of the predictions on the held-out rows (each gated)."""
    labels = held["labels"]
    present = ~pd.isna(labels)
    out: dict[str, Any] = {"n_eval": None, "global_metrics": None}
    if local:
        out["local_metrics"] = None
    calibration: dict[str, Any] = {}
    for which in ("global", "local") if local else ("global",):
        predictions = check_predictions(
            held["predictions"].get(which), len(labels), params.metrics
        )[present]
        metrics = compute_metrics(
            predictions, labels[present].astype(np.float64), params.metrics, ctx.min_cell_count
        )
        if metrics is None:  # too few held-out rows: no metrics leave
            return out
        calibration[which] = metrics.pop("calibration", None)
        out[f"{which}_metrics"] = {k: float(v) for k, v in metrics.items()}
    out["n_eval"] = _rounded(int(present.sum()), ctx.min_cell_count)
    out["calibration"] = calibration
    return out


def _run_plan(
    params: TrainParams,
    ctx: LocalContext,
    services: LearningServices,
    *,
    epochs: int,
    phase: str,
) -> tuple[dict[str, Any], tensors.Arrays | None, dict[str, Any]]:
    source = services.approved_source(params)  # checked before it is written anywhere
    train, held_out = split_rows(params, ctx, services)
    weights = str(ctx.state.get("weights") or params.initial_weights)
    with services.job_dir() as job:
        train.to_parquet(job / "train.parquet", index=False)
        # the plan predicts the held-out rows without seeing their labels
        held_out.drop(columns=[params.label]).to_parquet(job / "holdout.parquet", index=False)
        services.fetch_blob(weights, job / "weights.safetensors")
        (job / "job.json").write_text(
            json.dumps(
                {
                    "epochs": epochs,
                    "batch_size": params.batch_size,
                    "lr": params.lr,
                    "mu": params.mu if params.strategy == "fedprox" else 0.0,
                    "seed": params.seed,
                    "round": int(ctx.state.get("train_round", 0)),
                    "device": params.device,
                    "args": params.plan_args,
                    "dp_sgd": params.dp_sgd.model_dump() if params.dp_sgd else None,
                }
            )
        )
        (job / "plan.py").write_text(source)
        services.record_run(phase)
        services.run_plan(job, timeout=params.round_timeout_s)
        result = json.loads((job / "result.json").read_text())
        predictions = load_file(str(job / "predictions.safetensors"))
        update = tensors.decode((job / "update.safetensors").read_bytes()) if epochs else None
    if not isinstance(result, dict):
        raise BadRequest("the plan process wrote no valid result")
    result["n_train"] = len(train)  # the node's count, not the plan's
    held = {"labels": held_out[params.label].to_numpy(), "predictions": predictions}
    return result, update, held


def _private(params: TrainParams, update: tensors.Arrays, n_nodes: int) -> npt.NDArray[np.float64]:
    flat = tensors.flatten(update)
    if params.dp is None:
        return flat
    config = DPConfig(params.dp.noise_multiplier, params.dp.clip, params.dp.mode)
    return privatize_update(flat, config, n_nodes=n_nodes)


def _train_phase(
    params: TrainParams, ctx: LocalContext, services: LearningServices, phase: str
) -> dict[str, Any]:
    result, update, held = _run_plan(params, ctx, services, epochs=params.local_epochs, phase=phase)
    assert update is not None
    n_train = int(result["n_train"])
    n = _rounded(n_train, ctx.min_cell_count)
    if n_train < ctx.min_cell_count:
        return {"n": n_train}  # the gate suppresses the whole output
    participants = ctx.state.get("participants") or [services.dataset_id]
    flat = _private(params, update, len(participants))
    common = {
        "n": n,
        **{
            k: v
            for k, v in _metrics(params, result, held, ctx, local=True).items()
            if k != "calibration"
        },
        "seconds": float(result.get("seconds", 0.0)),
        "device": str(result.get("device", "")),
        "dp_sgd_epsilon": result.get("dp_sgd_epsilon"),
    }
    if phase == "train":
        sent = tensors.encode(tensors.unflatten(flat, update))
        return {"update": services.upload(sent), **common}
    client = _client(ctx, services)
    weight = 1.0 if params.dp is not None else float(n)
    vector = np.concatenate([flat * weight, [weight]])
    inbox = ctx.state["secagg"]["inboxes"].get(str(services.dataset_id))
    if inbox is None:
        raise Conflict("secure aggregation: no shares were addressed to this node")
    masked = client.mask(vector, inbox)
    out = {"masked": services.upload(save({"masked": masked})), **common}
    ahead = ctx.state.get("secagg_next")
    if isinstance(ahead, dict):  # sampled for the next round: advertise its keys now
        config = SecAggConfig.from_dict(ahead["config"])
        if services.dataset_id in config.participants:
            _forget_older(services, keep={_round_id(ctx), config.round_id})
            early = SecAggClient(config, client=services.dataset_id)
            services.memory[config.round_id] = early
            out["next_advert"] = early.advertise()
    return out


def _forget_older(services: LearningServices, keep: set[str]) -> None:
    """Drop the keys of this training's earlier rounds (a node keeps at most two rounds)."""
    for key in [k for k in services.memory if k.split(":")[0] == str(services.task_id)]:
        if key not in keep:
            del services.memory[key]


def _round_id(ctx: LocalContext) -> str:
    return str(ctx.state["secagg"]["config"]["round"])


def _client(ctx: LocalContext, services: LearningServices) -> SecAggClient:
    client = services.memory.get(_round_id(ctx))
    if not isinstance(client, SecAggClient):
        raise Conflict("secure aggregation: this node lost its keys for the round (restarted)")
    return client


def _secagg_phase(ctx: LocalContext, services: LearningServices, phase: str) -> dict[str, Any]:
    secagg = ctx.state.get("secagg")
    if not isinstance(secagg, dict):
        raise BadRequest(f"fl.train: phase {phase!r} without secure aggregation state")
    n = _rounded(ctx.data.count(), ctx.min_cell_count)
    if phase == "advertise":
        config = SecAggConfig.from_dict(secagg["config"])
        client = SecAggClient(config, client=services.dataset_id)
        for key in [k for k in services.memory if k.split(":")[0] == str(services.task_id)]:
            del services.memory[key]  # keys of an older round of this training
        services.memory[config.round_id] = client
        return {"advert": client.advertise(), "n": n}
    if phase == "share":
        return {"shares": _client(ctx, services).share_keys(secagg["directory"]), "n": n}
    if phase == "unmask":
        out: dict[str, Any] = {"reveal": _client(ctx, services).unmask(secagg["request"]), "n": n}
        ahead = ctx.state.get("secagg_next")
        if isinstance(ahead, dict) and "directory" in ahead:  # share next round's keys now
            early = services.memory.get(SecAggConfig.from_dict(ahead["config"]).round_id)
            if isinstance(early, SecAggClient):
                out["next_shares"] = early.share_keys(ahead["directory"])
        return out
    raise BadRequest(f"fl.train: unknown phase {phase!r}")
