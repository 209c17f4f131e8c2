"""The local training loop of a plan (PyTorch): medfed's one loop, run inside the plan process.

:func:`train_local` builds the plan's model from the given weights, predicts the
held-out rows with the received (global) model (``plan.predict``; the held-out frame
carries no label column), trains ``epochs`` passes over the training rows (batches
shuffled by a generator seeded from ``seed`` and the round, the plan's optimizer, plus
the FedProx term ``mu/2·‖w - w_global‖²`` when ``mu > 0``), predicts again and returns
the update ``local - global`` per tensor with the counts and both predictions. Metrics
are not computed here: the node agent computes them from the predictions and its labels
(:mod:`medfed.algorithms.learning.metrics`). Tests call the same function on pooled
data for the centralized baseline, so the federated and pooled models share the loop,
seeds and epochs.

Only the plan process and tests import this module (it imports torch); the hub and the
node agent work on numpy arrays.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from medfed.algorithms.learning.plan import REQUIRED

__all__ = ["LocalResult", "TrainConfig", "load_plan", "pick_device", "train_local"]

_counter = itertools.count()


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    mu: float = 0.0
    seed: int = 0
    round: int = 0
    device: str = "auto"
    args: dict[str, Any] = field(default_factory=dict)
    #: DP-SGD inside the node (Opacus): per-sample clipping to this norm and noise
    dp_sgd_noise: float | None = None
    dp_sgd_clip: float = 1.0
    dp_sgd_delta: float = 1e-5


@dataclass
class LocalResult:
    update: dict[str, torch.Tensor]
    n_train: int
    n_eval: int
    #: one prediction per held-out row, by the received model and by the trained one
    global_predictions: torch.Tensor
    local_predictions: torch.Tensor
    device: str
    seconds: float
    #: example-level ε of this node's DP-SGD steps (None without DP-SGD)
    dp_sgd_epsilon: float | None = None


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA when torch sees a GPU, else CPU; ``cpu``/``cuda`` as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_plan(path: Path) -> ModuleType:
    """Import the plan file under a fresh module name (a new plan never sees an old one)."""
    name = f"medfed_plan_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load plan {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    missing = [n for n in REQUIRED if not callable(getattr(module, n, None))]
    if missing:
        raise AttributeError(f"the plan does not define {', '.join(missing)}")
    return module


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, list | tuple):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _predict(
    plan: ModuleType, model: torch.nn.Module, held_out: pd.DataFrame, args: dict[str, Any]
) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = plan.predict(model, held_out, args)
    model.train()
    return torch.as_tensor(out).detach().reshape(-1).double().cpu()


def train_local(
    plan: ModuleType,
    frame: pd.DataFrame,
    held_out: pd.DataFrame,
    weights: dict[str, torch.Tensor],
    config: TrainConfig,
) -> LocalResult:
    """One node's local step on its training rows ``frame`` (see the module docstring)."""
    started = time.perf_counter()
    device = pick_device(config.device)
    torch.manual_seed(config.seed * 1_000_003 + config.round)
    model: torch.nn.Module = plan.model(config.args)
    model.load_state_dict(weights)
    model.to(device)
    train = plan.train_set(frame, config.args)
    global_predictions = _predict(plan, model, held_out, config.args)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    anchor = [p.detach().clone() for p in model.parameters()]
    make_opt = getattr(plan, "optimizer", None)
    params = list(model.parameters())
    opt = make_opt(params, config.lr) if callable(make_opt) else torch.optim.SGD(params, config.lr)
    generator = torch.Generator().manual_seed(config.seed * 7919 + config.round)
    loader: DataLoader[Any] = DataLoader(
        train, batch_size=config.batch_size, shuffle=True, generator=generator
    )
    trained: torch.nn.Module = model
    private = None
    if config.dp_sgd_noise is not None and config.epochs > 0:
        from medfed.algorithms.learning.privacy import make_private

        model.train()  # Opacus checks the mode before wrapping
        private = make_private(model, opt, loader, config.dp_sgd_noise, config.dp_sgd_clip)
        trained, opt, loader = private.model, private.optimizer, private.loader
    trained.train()
    for _ in range(config.epochs):
        for batch in loader:
            batch = _to(batch, device)
            if _empty(batch):  # Poisson sampling (DP-SGD) can draw an empty batch
                continue
            opt.zero_grad()
            loss = plan.loss(trained, batch)
            if config.mu > 0:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                loss = loss + config.mu / 2 * prox
            loss.backward()
            opt.step()
    local_predictions = _predict(plan, model, held_out, config.args)
    update = {
        k: (v.detach().float() - start[k].float()).cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    return LocalResult(
        update=update,
        n_train=len(train),
        n_eval=len(held_out),
        global_predictions=global_predictions,
        local_predictions=local_predictions,
        device=str(device),
        seconds=time.perf_counter() - started,
        dp_sgd_epsilon=private.epsilon(config.dp_sgd_delta) if private is not None else None,
    )


def _empty(batch: Any) -> bool:
    first = batch[0] if isinstance(batch, list | tuple) else batch
    return isinstance(first, torch.Tensor) and first.shape[0] == 0
