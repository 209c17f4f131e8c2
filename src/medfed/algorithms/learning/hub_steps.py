"""The hub side of ``fl.train``: moving a training from phase to phase (see ``fedtrain``).

:func:`advance` gets the round's gated outputs and the task state and returns the next
state (:class:`NextRound`) or the result (:class:`Finished`). Global weights and the
server optimizer's state are written as blobs before the state naming them is committed
with the round — the checkpoint a restarted hub resumes from. Secure aggregation's server
keeps no state of its own: it is rebuilt each phase by replaying the messages kept in
``state["secagg"]`` (adverts, shares, masked-input blob hashes, the unmask request).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load

from medfed.algorithms.base import Finished, HubContext, NextRound, NodeOutput
from medfed.algorithms.learning import tensors
from medfed.algorithms.learning.privacy import (
    DPConfig,
    RoundPrivacy,
    effective_noise_multiplier,
    epsilon,
    planned_round,
    privatize_sum,
    would_exceed,
)
from medfed.algorithms.learning.secagg import SecAggConfig
from medfed.algorithms.learning.secagg_server import SecAggServer
from medfed.algorithms.learning.strategies import ServerOptions, apply_update, combine
from medfed.common.errors import BadRequest, Refused

if TYPE_CHECKING:
    from medfed.algorithms.learning.fedtrain import TrainParams

__all__ = ["advance"]


def _p(output: NodeOutput) -> dict[str, Any]:
    return output.payload or {}


def _ok(outputs: Sequence[NodeOutput]) -> list[NodeOutput]:
    return [o for o in outputs if o.status == "ok" and o.payload]


def advance(
    params: TrainParams, state: dict[str, Any], outputs: Sequence[NodeOutput], hub: HubContext
) -> Finished | NextRound:
    """The next step; ``state["phase_log"]`` gets ``[phase, train_round]`` per task round."""
    step = _advance(params, state, outputs, hub)
    if isinstance(step, NextRound):
        log = list(state.get("phase_log") or [["prepare", 0]])
        log.append([step.state.get("phase"), int(step.state.get("train_round", 0))])
        step.state["phase_log"] = log
    return step


def _advance(
    params: TrainParams, state: dict[str, Any], outputs: Sequence[NodeOutput], hub: HubContext
) -> Finished | NextRound:
    phase = str(state.get("phase", "prepare"))
    if phase == "prepare":
        if hub.privacy_left is not None and params.dp is None:
            raise Refused(
                f"project {hub.project_id} has a privacy budget; the training must set dp"
            )
        fresh: dict[str, Any] = {
            "train_round": 0,
            "history": [],
            "phase_log": state.get("phase_log"),
        }
        return _start_round(params, fresh, hub)
    if phase == "train":
        ok = _ok(outputs)
        if not ok:
            raise BadRequest(f"round {state.get('train_round')}: no node sent an update")
        updates = [tensors.decode(hub.blobs.read(str(_p(o)["update"]))) for o in ok]
        weights = [1.0 if params.dp else float(_p(o)["n"]) for o in ok]
        if params.dp is not None:
            total = np.sum([tensors.flatten(u) for u in updates], axis=0)
            delta = _dp_mean(params, total, len(ok), updates[0])
        else:
            delta = combine(params.strategy, updates, weights, _options(params))
        return _apply(params, state, hub, delta, ok, len(ok))
    if phase in ("advertise", "share", "masked", "unmask"):
        return _secagg(params, state, outputs, hub, phase)
    if phase == "evaluate":
        ok = _ok(outputs)
        metrics = tensors.mean_metrics(
            (_p(o).get("global_metrics"), _p(o).get("n_eval")) for o in ok
        )
        result = {
            "model": state["weights"] if state.get("weights") else params.initial_weights,
            "plan": params.plan,
            "strategy": params.strategy,
            "rounds": int(state.get("train_round", 0)),
            "metrics": metrics,
            "calibration": _calibration(ok),
            "history": state.get("history", []),
            "stopped": state.get("stopped"),
            "privacy": state.get("privacy"),
            "secure_aggregation": params.secagg is not None,
        }
        return Finished(result)
    raise BadRequest(f"fl.train: unknown phase {phase!r}")


def _calibration(outputs: Sequence[NodeOutput]) -> list[list[float]] | None:
    """Nodes' calibration bins pooled: per bin, rows, mean prediction, observed rate.

    Only when every node that sent metrics sent bins (a node withholds its bins whole
    when one holds fewer than its threshold); pooled by the nodes' bin centres.
    """
    tables = [_p(o).get("calibration") for o in outputs if _p(o).get("global_metrics")]
    if not tables or any(not isinstance(t, list) for t in tables):
        return None
    pooled: dict[int, list[float]] = {}
    for table in (t for t in tables if isinstance(t, list)):
        for n, mean_p, observed in table:
            key = min(int(float(mean_p) * 10), 9)
            row = pooled.setdefault(key, [0.0, 0.0, 0.0])
            row[0] += n
            row[1] += n * mean_p
            row[2] += n * observed
    return [[n, sp / n, so / n] for _, (n, sp, so) in sorted(pooled.items())]


def _options(params: TrainParams) -> ServerOptions:
    return ServerOptions(
        server_lr=params.server_lr,
        eta=params.eta,
        beta1=params.beta1,
        beta2=params.beta2,
        tau=params.tau,
        trim_fraction=params.trim_fraction,
    )


def _dp(params: TrainParams) -> DPConfig:
    assert params.dp is not None
    return DPConfig(params.dp.noise_multiplier, params.dp.clip, params.dp.mode)


def _dp_mean(
    params: TrainParams, total: npt.NDArray[Any], count: int, template: tensors.Arrays
) -> tensors.Arrays:
    noisy = privatize_sum(total, _dp(params))  # central mode adds noise here; else a copy
    return tensors.unflatten(noisy / count, template)


def _start_round(params: TrainParams, state: dict[str, Any], hub: HubContext) -> NextRound:
    """The next training round — unless it would exceed the privacy budget."""
    from medfed.algorithms.learning.fedtrain import sample

    k = int(state["train_round"])
    chosen = sample(params, k, hub.dataset_ids)
    n = len(chosen)
    # the fewest answers the round may close with: the secagg threshold, else the quorum
    n_min = (
        _secagg_threshold(params, n)
        if params.secagg is not None
        else max(1, math.ceil(params.quorum * n - 1e-9))
    )
    if params.dp is not None:
        privacy = state.get("privacy") or {}
        history = [RoundPrivacy.from_dict(r) for r in privacy.get("history", [])]
        delta = hub.privacy_delta or params.dp.delta
        # checked before the round at its worst case: in distributed mode fewer answers
        # mean less noise in the sum (the real round is recorded after it ran)
        step = planned_round(_dp(params), n_expected=n, n_min=n_min, sample_rate=params.fraction)
        if hub.privacy_left is not None and would_exceed(hub.privacy_left, delta, history, step):
            spent = epsilon([*history, step], delta)
            state["stopped"] = (
                f"privacy budget: round {k + 1} would bring this training's ε to {spent:.3g} "
                f"(δ={delta:g}); the project has {hub.privacy_left:.3g} left"
            )
            return _evaluate(state, hub)
    state["participants"] = chosen
    if params.secagg is None:
        state["phase"] = "train"
        return NextRound(state)
    if len(chosen) < 2:
        raise BadRequest("secure aggregation needs at least 2 sampled nodes per round")
    config = _secagg_config(params, state, hub, k, chosen)
    state["secagg"] = {"config": config.to_dict()}
    prepared = _prepared(state, config)
    if prepared is None:
        state["phase"] = "advertise"
        return NextRound(state)
    # keys advertised and shared during the previous round's masked and unmask phases
    state["secagg"].update(prepared)
    server = _server(state, hub)
    sharers = sorted(int(m["client"]) for m in prepared["shares"])
    state["secagg"]["inboxes"] = {str(c): server.inbox(c) for c in sharers}
    state["participants"] = sharers
    state["phase"] = "masked"
    _plan_next(params, state, hub, sharers)
    return NextRound(state)


def _secagg_config(
    params: TrainParams, state: dict[str, Any], hub: HubContext, k: int, chosen: list[int]
) -> SecAggConfig:
    assert params.secagg is not None
    return SecAggConfig(
        round_id=f"{hub.task_id}:{k}",
        participants=tuple(chosen),
        threshold=_secagg_threshold(params, len(chosen)),
        size=tensors.size_of(_global(params, state, hub)) + 1,
        clip=params.secagg.clip,
        bits=params.secagg.bits,
    )


def _prepared(state: dict[str, Any], config: SecAggConfig) -> dict[str, Any] | None:
    """The next round's adverts, directory and shares, if every participant sent them.

    Pipelining: while round k masks and unmasks, the nodes sampled for round k+1 advertise
    their fresh keys (with their masked input) and share them (with their unmask answer),
    so round k+1 starts at its masked phase: two task rounds fewer per training round. A
    missing piece (a node dropped, a different sample) falls back to the advertise phase.
    """
    ahead = state.pop("secagg_next", None)
    if not isinstance(ahead, dict) or ahead.get("config") != config.to_dict():
        return None
    shares = ahead.get("shares")
    if not shares or {int(m["client"]) for m in shares} != set(config.participants):
        return None
    return {k: ahead[k] for k in ("adverts", "directory", "shares")}


def _plan_next(
    params: TrainParams, state: dict[str, Any], hub: HubContext, sharers: list[int]
) -> None:
    """At round k's share phase: ask round k+1's nodes (all sharing now) to send keys early."""
    k = int(state["train_round"]) + 1
    state.pop("secagg_next", None)
    if k >= params.rounds:
        return
    from medfed.algorithms.learning.fedtrain import sample

    chosen = sample(params, k, hub.dataset_ids)
    if len(chosen) >= 2 and set(chosen) <= set(sharers):
        state["secagg_next"] = {"config": _secagg_config(params, state, hub, k, chosen).to_dict()}


def _secagg_threshold(params: TrainParams, n: int) -> int:
    """Shares needed to unmask: more than half (so a hub cannot rebuild both secrets)."""
    assert params.secagg is not None
    return max(n // 2 + 1, math.ceil(params.secagg.threshold * n))


def _evaluate(state: dict[str, Any], hub: HubContext) -> NextRound:
    state["phase"] = "evaluate"
    state["participants"] = list(hub.dataset_ids)
    state.pop("secagg", None)
    return NextRound(state)


def _global(params: TrainParams, state: dict[str, Any], hub: HubContext) -> tensors.Arrays:
    return tensors.decode(hub.blobs.read(str(state.get("weights") or params.initial_weights)))


def _apply(
    params: TrainParams,
    state: dict[str, Any],
    hub: HubContext,
    delta: tensors.Arrays,
    ok: Sequence[NodeOutput],
    received: int,
) -> NextRound:
    current = _global(params, state, hub)
    opt_sha = state.get("optimizer")
    opt = tensors.decode(hub.blobs.read(str(opt_sha))) if opt_sha else None
    new, new_opt = apply_update(params.strategy, current, delta, opt, _options(params))
    state["weights"] = hub.blobs.write(tensors.encode(new), kind="global")
    state["optimizer"] = (
        hub.blobs.write(tensors.encode(new_opt), kind="optimizer") if new_opt else None
    )
    k = int(state["train_round"])
    record: dict[str, Any] = {
        "round": k,
        "updates": received,
        "samples": sum(int(_p(o).get("n") or 0) for o in ok),
        "global_metrics": tensors.mean_metrics(
            (_p(o).get("global_metrics"), _p(o).get("n_eval")) for o in ok
        ),
        "local_metrics": tensors.mean_metrics(
            (_p(o).get("local_metrics"), _p(o).get("n_eval")) for o in ok
        ),
        "node_seconds": max((float(_p(o).get("seconds") or 0.0) for o in ok), default=None),
    }
    node_eps = [float(_p(o)["dp_sgd_epsilon"]) for o in ok if _p(o).get("dp_sgd_epsilon")]
    if node_eps:
        record["dp_sgd_epsilon"] = max(node_eps)
    if params.dp is not None:
        privacy = state.get("privacy") or {"history": []}
        expected = len(state.get("participants") or [received])
        z = effective_noise_multiplier(_dp(params), n_expected=expected, n_received=received)
        privacy["history"].append(RoundPrivacy(z, params.fraction).to_dict())
        delta_ = hub.privacy_delta or params.dp.delta
        history = [RoundPrivacy.from_dict(r) for r in privacy["history"]]
        privacy.update(epsilon=epsilon(history, delta_), delta=delta_, rounds=len(history))
        state["privacy"] = privacy
        record["epsilon"] = privacy["epsilon"]
    state.setdefault("history", []).append(record)
    state["train_round"] = k + 1
    state.pop("secagg", None)
    if k + 1 >= params.rounds:
        return _evaluate(state, hub)
    return _start_round(params, state, hub)


def _complete(ahead: dict[str, Any], messages: list[Any]) -> bool:
    """Whether every participant of the planned next round sent its early message."""
    wanted = set(SecAggConfig.from_dict(ahead["config"]).participants)
    return {int(m["client"]) for m in messages if isinstance(m, dict)} == wanted


def _server(state: dict[str, Any], hub: HubContext) -> SecAggServer:
    """Rebuild the round's secure-aggregation server from the messages kept in the state."""
    kept = state["secagg"]
    server = SecAggServer(SecAggConfig.from_dict(kept["config"]))
    for message in kept.get("adverts", []):
        server.receive_advert(message)
    if "directory" in kept:
        server.directory()
    for message in kept.get("shares", []):
        server.receive_shares(message)
    for client in sorted(int(c) for c in kept.get("inboxes", {})):
        server.inbox(client)
    for client, sha in kept.get("masked", []):
        server.receive_masked(int(client), load(hub.blobs.read(str(sha)))["masked"])
    if "request" in kept:
        server.unmask_request()
    return server


def _secagg(
    params: TrainParams,
    state: dict[str, Any],
    outputs: Sequence[NodeOutput],
    hub: HubContext,
    phase: str,
) -> Finished | NextRound:
    ok = _ok(outputs)
    kept = state["secagg"]
    server = _server(state, hub)
    if phase == "advertise":
        kept["adverts"] = [_p(o)["advert"] for o in ok]
        for message in kept["adverts"]:
            server.receive_advert(message)
        kept["directory"] = server.directory()
        state["participants"] = sorted(int(c) for c in kept["directory"]["keys"])
        state["phase"] = "share"
        return NextRound(state)
    if phase == "share":
        kept["shares"] = [_p(o)["shares"] for o in ok]
        for message in kept["shares"]:
            server.receive_shares(message)
        sharers = sorted(int(m["client"]) for m in kept["shares"])
        kept["inboxes"] = {str(c): server.inbox(c) for c in sharers}
        state["participants"] = sharers
        state["phase"] = "masked"
        _plan_next(params, state, hub, sharers)
        return NextRound(state)
    ahead = state.get("secagg_next")
    if phase == "masked":
        kept["masked"] = [[o.dataset_id, _p(o)["masked"]] for o in ok]
        for client, sha in kept["masked"]:
            server.receive_masked(int(client), load(hub.blobs.read(str(sha)))["masked"])
        kept["request"] = server.unmask_request()
        kept["outputs"] = [
            {k: v for k, v in (o.payload or {}).items() if k not in ("masked", "next_advert")}
            for o in ok
        ]
        adverts = [_p(o)["next_advert"] for o in ok if _p(o).get("next_advert")]
        if isinstance(ahead, dict) and _complete(ahead, adverts):
            early = SecAggServer(SecAggConfig.from_dict(ahead["config"]))
            for message in adverts:
                early.receive_advert(message)
            ahead.update(adverts=adverts, directory=early.directory())
        else:
            state.pop("secagg_next", None)
        state["phase"] = "unmask"
        return NextRound(state)
    for o in ok:
        server.receive_reveal(_p(o)["reveal"])
    shares = [_p(o)["next_shares"] for o in ok if _p(o).get("next_shares")]
    if isinstance(ahead, dict) and "directory" in ahead and _complete(ahead, shares):
        ahead["shares"] = shares
    else:
        state.pop("secagg_next", None)
    total = server.aggregate()
    weight = float(total[-1])
    if weight <= 0:
        raise BadRequest("secure aggregation: the summed weights are not positive")
    template = _global(params, state, hub)
    if params.dp is not None:
        delta = _dp_mean(params, total[:-1], len(server.survivors), template)
    else:
        delta = tensors.unflatten(total[:-1] / weight, template)
    fake = [NodeOutput(node_id=0, dataset_id=0, status="ok", payload=p) for p in kept["outputs"]]
    return _apply(params, state, hub, delta, fake, len(server.survivors))
