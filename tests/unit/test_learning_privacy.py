"""DP for federated updates: clipping, noise of the right size, RDP accounting, the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from torch.utils.data import DataLoader, TensorDataset

from medfed.algorithms.learning.privacy import (
    DPConfig,
    PrivacyAccountant,
    RoundPrivacy,
    clip_update,
    effective_noise_multiplier,
    epsilon,
    make_private,
    planned_round,
    privatize_sum,
    privatize_update,
    would_exceed,
)
from medfed.common.errors import BadRequest


def test_clipping_scales_long_updates_to_the_norm_and_leaves_short_ones() -> None:
    long = np.full((10, 10), 3.0)
    clipped = clip_update(long, 2.5)
    assert clipped.shape == (100,)
    assert np.linalg.norm(clipped) == pytest.approx(2.5, rel=1e-12)
    np.testing.assert_allclose(clipped / np.linalg.norm(clipped), np.full(100, 0.1))
    short = np.array([0.3, -0.4])
    np.testing.assert_array_equal(clip_update(short, 2.5), short)
    with pytest.raises(BadRequest, match="not finite"):
        clip_update(np.array([np.nan]), 1.0)


def test_distributed_noise_per_node_adds_up_to_the_full_noise_on_the_sum() -> None:
    config = DPConfig(noise_multiplier=1.1, max_norm=2.0, mode="distributed")
    rng = np.random.default_rng(7)
    n, size = 4, 200_000
    noisy = [privatize_update(np.zeros(size), config, n_nodes=n, rng=rng) for _ in range(n)]
    assert np.std(noisy[0]) == pytest.approx(1.1 * 2.0 / 2, rel=0.01)
    assert np.std(np.sum(noisy, axis=0)) == pytest.approx(1.1 * 2.0, rel=0.01)
    total = np.ones(size)
    np.testing.assert_array_equal(privatize_sum(total, config, rng=rng), total)


def test_central_noise_is_added_once_by_the_hub() -> None:
    config = DPConfig(noise_multiplier=0.8, max_norm=3.0, mode="central")
    rng = np.random.default_rng(8)
    update = np.full(50, 10.0)
    np.testing.assert_allclose(np.linalg.norm(privatize_update(update, config, n_nodes=5)), 3.0)
    noised = privatize_sum(np.zeros(200_000), config, rng=rng)
    assert np.std(noised) == pytest.approx(0.8 * 3.0, rel=0.01)
    assert abs(np.mean(noised)) < 0.05


def test_missing_nodes_lower_the_effective_noise_multiplier() -> None:
    distributed = DPConfig(noise_multiplier=1.2, max_norm=1.0)
    assert effective_noise_multiplier(distributed, n_expected=5, n_received=5) == 1.2
    assert effective_noise_multiplier(distributed, n_expected=4, n_received=1) == 0.6
    central = DPConfig(noise_multiplier=1.2, max_norm=1.0, mode="central")
    assert effective_noise_multiplier(central, n_expected=4, n_received=1) == 1.2
    # the budget check plans for the fewest answers a round accepts: never an underestimate
    planned = planned_round(distributed, n_expected=4, n_min=1, sample_rate=0.5)
    assert planned == RoundPrivacy(noise_multiplier=0.6, sample_rate=0.5)
    full = RoundPrivacy(noise_multiplier=1.2, sample_rate=0.5)
    assert epsilon([planned], 1e-5) > epsilon([full], 1e-5)


def test_epsilon_grows_with_rounds_and_matches_opacus() -> None:
    delta = 1e-5
    rounds = [RoundPrivacy(1.0, 0.6)] * 3 + [RoundPrivacy(1.5, 1.0)] * 2
    direct = RDPAccountant()
    previous = 0.0
    accountant = PrivacyAccountant(delta=delta)
    for k, step in enumerate(rounds, start=1):
        direct.step(noise_multiplier=step.noise_multiplier, sample_rate=step.sample_rate)
        reported = accountant.record(RoundPrivacy.from_dict(step.to_dict()))
        assert reported == pytest.approx(direct.get_epsilon(delta), rel=1e-12)
        assert reported == pytest.approx(epsilon(rounds[:k], delta), rel=1e-12)
        assert reported > previous
        previous = reported
    assert epsilon([], delta) == 0.0


def test_the_budget_refuses_exactly_the_round_that_would_exceed_it() -> None:
    delta, step = 1e-5, RoundPrivacy(noise_multiplier=1.3, sample_rate=0.8)
    curve = [epsilon([step] * k, delta) for k in range(1, 12)]
    budget = (curve[6] + curve[7]) / 2  # rounds 1..7 fit, the 8th does not
    history: list[RoundPrivacy] = []
    refused_at = None
    for number in range(1, 12):
        if would_exceed(budget, delta, history, step):
            refused_at = number
            break
        history.append(step)
    assert refused_at == 8
    assert epsilon(history, delta) <= budget < epsilon([*history, step], delta)
    assert PrivacyAccountant(delta, list(history)).would_exceed(budget, step)
    assert not would_exceed(budget, delta, history[:-1], step)


def test_bad_privacy_parameters_are_refused() -> None:
    with pytest.raises(BadRequest):
        DPConfig(noise_multiplier=0.0, max_norm=1.0)
    with pytest.raises(BadRequest):
        RoundPrivacy(noise_multiplier=1.0, sample_rate=1.5)
    with pytest.raises(BadRequest, match="delta"):
        epsilon([RoundPrivacy(1.0, 1.0)], 0.0)


def test_dp_sgd_inside_a_node_clips_and_noises_per_sample_gradients() -> None:
    torch.manual_seed(0)
    features = torch.randn(64, 3)
    labels = (features[:, 0] > 0).long()
    model = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(features, labels), batch_size=16)
    private = make_private(model, optimizer, loader, noise_multiplier=1.0, max_grad_norm=0.5)
    assert private.epsilon(1e-5) == 0.0
    assert private.optimizer.max_grad_norm == 0.5
    assert private.optimizer.noise_multiplier == 1.0
    loss_fn = torch.nn.CrossEntropyLoss()
    for x, y in private.loader:
        private.optimizer.zero_grad()
        loss_fn(private.model(x), y).backward()
        for p in private.model.parameters():  # per-sample gradients exist, as DP-SGD needs
            assert p.grad_sample is not None and p.grad_sample.shape[0] == len(x)
        private.optimizer.step()
    after = list(private.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    eps = private.epsilon(1e-5)
    assert 0 < eps < float("inf")
