"""The server strategies of ``fl.train`` on small arrays with results worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medfed.algorithms.learning.strategies import ServerOptions, apply_update, combine
from medfed.algorithms.learning.tensors import decode, encode, flatten, mean_metrics, unflatten


def _u(*values: float) -> dict[str, np.ndarray]:
    return {"w": np.array(values, dtype=np.float32)}


UPDATES = [_u(1, 10), _u(2, 20), _u(3, 30), _u(4, 40), _u(100, -100)]
OPTIONS = ServerOptions(trim_fraction=0.2)


def test_fedavg_weights_each_update_by_its_samples() -> None:
    delta = combine("fedavg", UPDATES[:2], [100, 300], OPTIONS)
    np.testing.assert_allclose(delta["w"], [(100 * 1 + 300 * 2) / 400, (1000 + 6000) / 400])
    assert combine("fedprox", UPDATES[:2], [100, 300], OPTIONS)["w"].tolist() == delta["w"].tolist()


def test_median_and_trimmed_mean_ignore_one_outlier() -> None:
    median = combine("fedmedian", UPDATES, [1] * 5, OPTIONS)
    np.testing.assert_allclose(median["w"], [3, 20])
    trimmed = combine("trimmed_mean", UPDATES, [1] * 5, OPTIONS)  # drops 1 low, 1 high
    np.testing.assert_allclose(trimmed["w"], [(2 + 3 + 4) / 3, (10 + 20 + 30) / 3])


def test_fedadam_and_fedyogi_follow_their_update_rules() -> None:
    w, d = _u(1.0, 1.0), _u(0.5, -2.0)
    options = ServerOptions(eta=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    new, state = apply_update("fedadam", w, d, None, options)
    assert state is not None
    m = 0.1 * np.array([0.5, -2.0])
    v = 0.01 * np.array([0.25, 4.0])
    np.testing.assert_allclose(state["m.w"], m, rtol=1e-6)
    np.testing.assert_allclose(state["v.w"], v, rtol=1e-6)
    np.testing.assert_allclose(new["w"], 1 + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-6)
    # Yogi: v - (1-b2)·d²·sign(v - d²), from the state Adam left
    _, yogi = apply_update("fedyogi", new, d, state, options)
    assert yogi is not None
    d2 = np.array([0.25, 4.0])
    np.testing.assert_allclose(yogi["v.w"], v - 0.01 * d2 * np.sign(v - d2), rtol=1e-6)


def test_plain_strategies_step_by_the_server_learning_rate() -> None:
    new, state = apply_update("fedavg", _u(1, 2), _u(1, 1), None, ServerOptions(server_lr=0.5))
    assert state is None and new["w"].tolist() == [1.5, 2.5]


def test_mismatched_updates_are_refused() -> None:
    with pytest.raises(ValueError, match="different tensors"):
        combine("fedavg", [_u(1), {"v": np.zeros(1, dtype=np.float32)}], [1, 1], OPTIONS)
    with pytest.raises(ValueError, match="different shapes"):
        combine("fedavg", [_u(1), _u(1, 2)], [1, 1], OPTIONS)
    with pytest.raises(ValueError, match="positive"):
        combine("fedavg", [_u(1)], [0], OPTIONS)


def test_tensors_round_trip_through_safetensors_and_vectors() -> None:
    arrays = {"b": np.arange(3, dtype=np.float32), "a": np.ones((2, 2), dtype=np.float32)}
    back = decode(encode(arrays))
    assert {k: v.tolist() for k, v in back.items()} == {k: v.tolist() for k, v in arrays.items()}
    flat = flatten(arrays)
    assert flat.tolist() == [1, 1, 1, 1, 0, 1, 2]  # tensors in name order
    assert unflatten(flat, arrays)["a"].shape == (2, 2)
    assert mean_metrics([({"acc": 1.0}, 10), ({"acc": 0.0}, 30), (None, 5)]) == {"acc": 0.25}
