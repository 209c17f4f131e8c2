"""Differential privacy for federated updates: clipping, Gaussian noise, accounting, budget.

User-level DP-FedAvg (McMahan et al. 2018): every node clips its flattened update to L2
norm ``C`` (``max_norm``), so one node changes the SUM of updates by at most ``C``; Gaussian
noise of standard deviation ``z·C`` on that sum (``z`` = ``noise_multiplier``) makes each
round a Gaussian mechanism, and the rounds compose.

Two modes (:class:`DPConfig`):

* ``"distributed"`` (use it with secure aggregation, where the hub never sees one update):
  each of the ``n`` nodes expected in the round adds ``N(0, (z·C)²/n)`` to its clipped
  update before masking, so the sum carries ``N(0, (z·C)²)``. If only ``r < n`` updates
  arrive, the sum carries ``(z·C)²·r/n``: account the round with
  :func:`effective_noise_multiplier` (``z·sqrt(r/n)``), which the hub knows after unmasking,
  and check the budget BEFORE the round with the fewest updates the round may accept
  (:func:`planned_round`; e.g. the secagg threshold or the quorum), so that dropouts can
  never carry ε past the budget.
  Secure aggregation's fixed-point rounding (at most ``n/(2·scale)`` per coordinate) is
  post-processing of each node's noisy update; the guarantee is that of the continuous
  Gaussian, not a discrete-Gaussian analysis. Choose the secagg clip range as
  ``C + 6·node_std`` so that noise is not saturated.
* ``"central"``: nodes only clip; the hub adds ``N(0, (z·C)²)`` to the unmasked sum
  (:func:`privatize_sum`). The hub must then be trusted with the noiseless sum.

Aggregate with fixed weights (e.g. the plain mean ``sum / n``): weighting by sample counts
multiplies the sensitivity by the largest weight and voids the accounting.

Accounting: :class:`RoundPrivacy` (noise multiplier, sample rate = fraction of nodes
sampled for the round) per round; :func:`epsilon` composes a history with opacus's RDP
accountant (``opacus.accountants.RDPAccountant``, which assumes Poisson sampling; uniform
sampling of a fixed number of nodes is the usual approximation). :class:`PrivacyAccountant`
keeps a history and reports ε after each round; :func:`would_exceed` tells the hub, BEFORE
a round runs, whether it would take ε past the project budget.

Noise comes from a numpy ``Generator`` seeded from the OS (``secrets``) unless one is
given; floating-point Gaussian sampling has known side channels (Mironov 2012) that this
module does not address.

Optional DP-SGD inside a node: :func:`make_private` wraps a model, optimizer and loader with
Opacus's ``PrivacyEngine`` (per-sample clipping and noise); its ``epsilon(delta)`` reports
the node-local (example-level) guarantee.

opacus (and so torch) is imported only when accounting or DP-SGD is used.

API::

    DPConfig(noise_multiplier, max_norm, mode="distributed")
        .node_std(n_nodes) -> float   .hub_std() -> float
    clip_update(update, max_norm) -> NDArray[float64]
    privatize_update(update, config, *, n_nodes, rng=None) -> NDArray[float64]  # node
    privatize_sum(total, config, *, rng=None) -> NDArray[float64]               # hub
    effective_noise_multiplier(config, *, n_expected, n_received) -> float
    planned_round(config, *, n_expected, n_min, sample_rate) -> RoundPrivacy  # worst case
    RoundPrivacy(noise_multiplier, sample_rate)  .to_dict()  .from_dict(d)
    epsilon(history, delta) -> float
    would_exceed(budget_eps, delta, history, next_round_params) -> bool
    PrivacyAccountant(delta, history=()).record(round) -> float  .epsilon -> float
    make_private(model, optimizer, loader, noise_multiplier, max_grad_norm) -> PrivateTraining
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from medfed.common.errors import BadRequest

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

__all__ = [
    "DPConfig",
    "PrivacyAccountant",
    "PrivateTraining",
    "RoundPrivacy",
    "clip_update",
    "effective_noise_multiplier",
    "epsilon",
    "make_private",
    "planned_round",
    "privatize_sum",
    "privatize_update",
    "would_exceed",
]

Mode = Literal["central", "distributed"]


@dataclass(frozen=True)
class DPConfig:
    """Clipping norm ``C``, noise multiplier ``z`` and where the noise is added."""

    noise_multiplier: float
    max_norm: float
    mode: Mode = "distributed"

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0 or not self.max_norm > 0:
            raise BadRequest("DP needs noise_multiplier > 0 and max_norm > 0")
        if self.mode not in ("central", "distributed"):
            raise BadRequest(f"DP mode {self.mode!r} is neither 'central' nor 'distributed'")

    def node_std(self, n_nodes: int) -> float:
        """Noise std each node adds (distributed mode; 0 in central mode)."""
        if n_nodes < 1:
            raise BadRequest("a DP round needs at least one node")
        if self.mode == "central":
            return 0.0
        return float(self.noise_multiplier * self.max_norm / np.sqrt(n_nodes))

    def hub_std(self) -> float:
        """Noise std the hub adds to the sum (central mode; 0 in distributed mode)."""
        return self.noise_multiplier * self.max_norm if self.mode == "central" else 0.0


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(secrets.randbits(128))


def clip_update(update: NDArray[Any], max_norm: float) -> NDArray[np.float64]:
    """The flattened update scaled down to L2 norm ``max_norm`` if it is longer."""
    flat = np.asarray(update, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        raise BadRequest("the update holds values that are not finite")
    norm = float(np.linalg.norm(flat))
    return flat * (max_norm / norm) if norm > max_norm else flat.copy()


def privatize_update(
    update: NDArray[Any],
    config: DPConfig,
    *,
    n_nodes: int,
    rng: np.random.Generator | None = None,
) -> NDArray[np.float64]:
    """Node side: clip, then (distributed mode) add ``N(0, (z·C)²/n_nodes)`` per value."""
    clipped = clip_update(update, config.max_norm)
    std = config.node_std(n_nodes)
    return clipped + _rng(rng).normal(0.0, std, clipped.shape) if std > 0 else clipped


def privatize_sum(
    total: NDArray[Any], config: DPConfig, *, rng: np.random.Generator | None = None
) -> NDArray[np.float64]:
    """Hub side: (central mode) add ``N(0, (z·C)²)`` per value to the sum of clipped updates."""
    flat = np.asarray(total, dtype=np.float64)
    std = config.hub_std()
    return flat + _rng(rng).normal(0.0, std, flat.shape) if std > 0 else flat.copy()


def effective_noise_multiplier(config: DPConfig, *, n_expected: int, n_received: int) -> float:
    """The ``z`` the sum actually carries: ``z·sqrt(r/n)`` in distributed mode, else ``z``."""
    if not 0 < n_received <= n_expected:
        raise BadRequest(f"{n_received} updates received of {n_expected} expected")
    if config.mode == "central":
        return config.noise_multiplier
    return float(config.noise_multiplier * np.sqrt(n_received / n_expected))


def planned_round(
    config: DPConfig, *, n_expected: int, n_min: int, sample_rate: float
) -> RoundPrivacy:
    """The round as the budget check must see it: only ``n_min`` of ``n_expected`` answer."""
    z = effective_noise_multiplier(config, n_expected=n_expected, n_received=n_min)
    return RoundPrivacy(noise_multiplier=z, sample_rate=sample_rate)


@dataclass(frozen=True)
class RoundPrivacy:
    """One round as the accountant sees it."""

    noise_multiplier: float
    sample_rate: float

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0 or not 0 < self.sample_rate <= 1:
            raise BadRequest("a DP round needs noise_multiplier > 0 and 0 < sample_rate <= 1")

    def to_dict(self) -> dict[str, float]:
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundPrivacy:
        try:
            return cls(float(data["noise_multiplier"]), float(data["sample_rate"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"privacy round record is malformed: {exc}") from exc


def _accountant(history: Iterable[RoundPrivacy]) -> Any:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for step in history:
        accountant.step(noise_multiplier=step.noise_multiplier, sample_rate=step.sample_rate)
    return accountant


def epsilon(history: Sequence[RoundPrivacy], delta: float) -> float:
    """ε at ``delta`` after the rounds in ``history`` (0 for no rounds)."""
    if not 0 < delta < 1:
        raise BadRequest(f"delta {delta} must be between 0 and 1")
    if not history:
        return 0.0
    return float(_accountant(history).get_epsilon(delta=delta))


def would_exceed(
    budget_eps: float,
    delta: float,
    history: Sequence[RoundPrivacy],
    next_round_params: RoundPrivacy,
) -> bool:
    """Whether running ``next_round_params`` after ``history`` would take ε past the budget."""
    return epsilon([*history, next_round_params], delta) > budget_eps


@dataclass
class PrivacyAccountant:
    """A training's privacy history; ``record`` a round after it ran to get the new ε."""

    delta: float
    history: list[RoundPrivacy] = field(default_factory=list)

    def record(self, round_privacy: RoundPrivacy) -> float:
        self.history.append(round_privacy)
        return self.epsilon

    @property
    def epsilon(self) -> float:
        return epsilon(self.history, self.delta)

    def would_exceed(self, budget_eps: float, next_round: RoundPrivacy) -> bool:
        return would_exceed(budget_eps, self.delta, self.history, next_round)


@dataclass
class PrivateTraining:
    """What :func:`make_private` returns: use these in place of the originals."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader[Any]
    engine: Any

    def epsilon(self, delta: float) -> float:
        """Example-level ε of the DP-SGD steps taken so far on this node."""
        return float(self.engine.get_epsilon(delta))


def make_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[Any],
    noise_multiplier: float,
    max_grad_norm: float,
) -> PrivateTraining:
    """DP-SGD with Opacus: per-sample gradient clipping and Gaussian noise (RDP accounting)."""
    if not noise_multiplier >= 0 or not max_grad_norm > 0:
        raise BadRequest("DP-SGD needs noise_multiplier >= 0 and max_grad_norm > 0")
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant="rdp")
    private_model, private_optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
    )
    return PrivateTraining(private_model, private_optimizer, private_loader, engine)
