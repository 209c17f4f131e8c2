"""Secure aggregation: the hub gets the exact sum, survives dropouts, learns nothing else."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medfed.algorithms.learning import shamir
from medfed.algorithms.learning.secagg import SecAggClient, SecAggConfig
from medfed.algorithms.learning.secagg_server import SecAggServer
from medfed.common.errors import BadRequest, Conflict, Refused


def wire(message: Mapping[str, Any]) -> dict[str, Any]:
    """What arrives after a trip through JSON (the hub stores and relays JSON)."""
    return dict(json.loads(json.dumps(message)))


def run_round(
    config: SecAggConfig,
    updates: Mapping[int, np.ndarray],
    *,
    drop_before_mask: Collection[int] = (),
    drop_after_mask: Collection[int] = (),
) -> np.ndarray:
    """One full round; ``drop_after_mask`` clients send their masked input, then vanish."""
    clients = {i: SecAggClient(config, i) for i in config.participants}
    server = SecAggServer(config)
    for client in clients.values():
        server.receive_advert(wire(client.advertise()))
    directory = wire(server.directory())
    for client in clients.values():
        server.receive_shares(wire(client.share_keys(directory)))
    for i, client in clients.items():
        if i not in drop_before_mask:
            server.receive_masked(i, client.mask(updates[i], wire(server.inbox(i))))
    request = wire(server.unmask_request())
    for i, client in clients.items():
        if i not in drop_before_mask and i not in drop_after_mask:
            server.receive_reveal(wire(client.unmask(request)))
    return server.aggregate()


def updates_for(config: SecAggConfig, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        i: rng.uniform(-config.clip, config.clip, config.size).astype(np.float32)
        for i in config.participants
    }


FIVE = (1, 2, 3, 4, 5)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("size", [1, 7, 1000, 100_003])
def test_the_aggregate_equals_the_plain_sum_within_the_quantization_bound(
    size: int, bits: int
) -> None:
    config = SecAggConfig(round_id="t1/r0", participants=FIVE, threshold=3, size=size, bits=bits)
    updates = updates_for(config, seed=size)
    total = run_round(config, updates)
    plain = np.sum([u.astype(np.float64) for u in updates.values()], axis=0)
    assert total.shape == (size,)
    assert np.max(np.abs(total - plain)) <= config.error_bound
    assert config.error_bound < (1e-8 if bits == 32 else 1e-14)


def test_inputs_at_the_clip_limit_do_not_wrap_and_larger_ones_saturate() -> None:
    config = SecAggConfig(round_id="edge", participants=FIVE, threshold=3, size=4, clip=2.0)
    updates = {i: np.array([2.0, -2.0, 50.0, -50.0]) for i in FIVE}
    total = run_round(config, updates)
    np.testing.assert_allclose(total, [10.0, -10.0, 10.0, -10.0], atol=config.error_bound)


def test_a_client_that_drops_after_masking_is_still_in_the_sum() -> None:
    config = SecAggConfig(round_id="r-after", participants=FIVE, threshold=3, size=5000)
    updates = updates_for(config, seed=1)
    total = run_round(config, updates, drop_after_mask={4, 5})
    plain = np.sum([updates[i].astype(np.float64) for i in FIVE], axis=0)
    assert np.max(np.abs(total - plain)) <= config.error_bound


def test_a_client_that_drops_before_masking_is_left_out_of_the_sum() -> None:
    config = SecAggConfig(round_id="r-before", participants=FIVE, threshold=3, size=5000)
    updates = updates_for(config, seed=2)
    total = run_round(config, updates, drop_before_mask={2})
    plain = np.sum([updates[i].astype(np.float64) for i in (1, 3, 4, 5)], axis=0)
    assert np.max(np.abs(total - plain)) <= config.error_bound


def test_fewer_masked_inputs_than_the_threshold_is_a_clear_error() -> None:
    config = SecAggConfig(round_id="r-few", participants=FIVE, threshold=4, size=10)
    with pytest.raises(Conflict, match=r"only 3 clients sent masked inputs; threshold is 4"):
        run_round(config, updates_for(config), drop_before_mask={1, 2})


def test_fewer_reveals_than_the_threshold_is_a_clear_error() -> None:
    config = SecAggConfig(round_id="r-rev", participants=FIVE, threshold=3, size=10)
    with pytest.raises(Conflict, match=r"only 2 clients revealed their shares; threshold is 3"):
        run_round(config, updates_for(config), drop_after_mask={1, 2, 3})


def test_a_threshold_of_half_the_clients_or_less_is_refused() -> None:
    with pytest.raises(BadRequest, match="more than half"):
        SecAggConfig(round_id="r", participants=(1, 2, 3, 4), threshold=2, size=3)


def uniform_and_unrelated(ring: np.ndarray, secret: np.ndarray) -> bool:
    """Looks uniform over Z_2^32 and carries no linear trace of ``secret``."""
    # 64 equal bins: chi-square (df=63) far below its 1e-9 tail (~152)
    counts = np.bincount((ring >> np.uint32(26)).astype(np.int64), minlength=64)
    expected = ring.size / 64
    uniform = float(np.sum((counts - expected) ** 2 / expected)) < 150
    # uncorrelated with the secret, whichever way one reads the ring elements (6 sigma)
    views = (ring.astype(np.float64), ring.view(np.int32).astype(np.float64))
    unrelated = all(abs(np.corrcoef(v, secret)[0, 1]) < 6 / np.sqrt(ring.size) for v in views)
    return uniform and unrelated


def test_what_the_hub_holds_before_unmasking_reveals_nothing_of_the_inputs() -> None:
    config = SecAggConfig(round_id="r-leak", participants=FIVE, threshold=3, size=200_000)
    base = np.sin(np.arange(config.size) / 50.0)  # strongly structured updates
    secrets_ = {i: base * (i / 5) for i in FIVE}
    clients = {i: SecAggClient(config, i) for i in FIVE}
    server = SecAggServer(config)
    for client in clients.values():
        server.receive_advert(client.advertise())
    directory = server.directory()
    for client in clients.values():
        server.receive_shares(client.share_keys(directory))
    masked = {i: clients[i].mask(secrets_[i], server.inbox(i)) for i in FIVE}
    unmasked = np.rint(base * config.scale).astype(np.int32).view(np.uint32)
    assert not uniform_and_unrelated(unmasked, base)  # the check does catch a plain input
    for i in FIVE:  # each masked input on its own
        assert masked[i].dtype == np.uint32
        assert uniform_and_unrelated(masked[i], secrets_[i])
    # the sum of any four of them still hides the four inputs' sum (the fifth's masks remain)
    partial = masked[1] + masked[2] + masked[3] + masked[4]
    assert uniform_and_unrelated(partial, base * 2)
    # while all five together, unmasked, give the exact sum
    for i in FIVE:
        server.receive_masked(i, masked[i])
    request = server.unmask_request()
    for i in (1, 2, 3):
        server.receive_reveal(clients[i].unmask(request))
    np.testing.assert_allclose(server.aggregate(), base * 3, atol=config.error_bound)


def test_a_tampered_share_ciphertext_is_refused() -> None:
    config = SecAggConfig(round_id="r-tamper", participants=(1, 2, 3), threshold=2, size=8)
    clients = {i: SecAggClient(config, i) for i in config.participants}
    server = SecAggServer(config)
    for client in clients.values():
        server.receive_advert(client.advertise())
    directory = server.directory()
    for client in clients.values():
        server.receive_shares(client.share_keys(directory))
    inbox = wire(server.inbox(1))
    blob = bytearray(base64.b64decode(inbox["shares"]["2"]))
    blob[-1] ^= 0x01
    tampered = {**inbox, "shares": {**inbox["shares"], "2": base64.b64encode(blob).decode()}}
    with pytest.raises(Refused, match="share from client 2 fails authentication"):
        clients[1].mask(np.zeros(8), tampered)
    swapped = {**inbox, "shares": {"2": inbox["shares"]["3"], "3": inbox["shares"]["2"]}}
    with pytest.raises(Refused, match="fails authentication"):
        clients[1].mask(np.zeros(8), swapped)


def test_a_client_answers_one_unmask_story_only() -> None:
    config = SecAggConfig(round_id="r-story", participants=(1, 2, 3), threshold=2, size=4)
    clients = {i: SecAggClient(config, i) for i in config.participants}
    server = SecAggServer(config)
    for client in clients.values():
        server.receive_advert(client.advertise())
    directory = server.directory()
    for client in clients.values():
        server.receive_shares(client.share_keys(directory))
    for i in (1, 2, 3):
        server.receive_masked(i, clients[i].mask(np.ones(4), server.inbox(i)))
    honest = {"round": "r-story", "survivors": [1, 2, 3], "dropped": []}
    first = clients[1].unmask(honest)
    assert clients[1].unmask(honest) == first  # a repeat is answered the same way
    lie = {"round": "r-story", "survivors": [1, 2], "dropped": [3]}
    with pytest.raises(Refused, match="second, different unmask request"):
        clients[1].unmask(lie)
    both = {"round": "r-story", "survivors": [1, 2, 3], "dropped": [3]}
    with pytest.raises(Refused, match="split this round's clients"):
        clients[2].unmask(both)


def test_messages_out_of_phase_or_from_strangers_are_refused() -> None:
    config = SecAggConfig(round_id="r-order", participants=(1, 2, 3), threshold=2, size=4)
    server = SecAggServer(config)
    with pytest.raises(Conflict, match="only 0 clients advertised"):
        server.directory()
    stranger = SecAggClient(SecAggConfig("r-order", (1, 2, 9), 2, 4), 9).advertise()
    with pytest.raises(Conflict, match="client 9 is not part"):
        server.receive_advert(stranger)
    other_round = SecAggClient(SecAggConfig("elsewhere", (1, 2, 3), 2, 4), 1).advertise()
    with pytest.raises(BadRequest, match="round 'elsewhere'"):
        server.receive_advert(other_round)
    with pytest.raises(Conflict, match="masked inputs are taken only"):
        server.receive_masked(1, np.zeros(4, np.uint32))


def test_shamir_rebuilds_from_any_threshold_shares_and_not_from_fewer() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, threshold=3, xs=[1, 2, 3, 4, 5])
    for subset in ([1, 2, 3], [3, 4, 5], [1, 3, 5], [1, 2, 3, 4, 5]):
        assert shamir.combine({x: shares[x] for x in subset}, threshold=3) == secret
    with pytest.raises(Conflict, match="3 are needed"):
        shamir.combine({1: shares[1], 2: shares[2]}, threshold=3)
    # two shares are consistent with every secret: a fresh split of another secret can
    # reuse them (a degree-2 polynomial through (0, s'), (1, y1), (2, y2) always exists)
    other = b"\xff" * 32
    y1, y2 = (int.from_bytes(shares[x], "big") for x in (1, 2))
    s2 = int.from_bytes(other, "big")
    # coefficients of f(x) = s2 + a x + b x^2 through the two points
    p = shamir.PRIME
    b = ((y2 - s2) * pow(2, -1, p) - (y1 - s2)) % p
    a = (y1 - s2 - b) % p
    f3 = (s2 + 3 * a + 9 * b) % p
    forged = {1: shares[1], 2: shares[2], 3: f3.to_bytes(shamir.SHARE_BYTES, "big")}
    assert shamir.combine(forged, threshold=3) == other


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_dropout_pattern_gives_the_senders_sum_or_a_clear_error(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=2, max_value=6), label="n")
    threshold = data.draw(st.integers(min_value=n // 2 + 1, max_value=n), label="threshold")
    ids = tuple(data.draw(st.permutations(range(1, 50)))[:n])
    before = set(data.draw(st.sets(st.sampled_from(ids), max_size=n), label="drop before"))
    senders = [i for i in ids if i not in before]
    after = set(data.draw(st.sets(st.sampled_from(ids), max_size=n), label="drop after"))
    after &= set(senders)
    config = SecAggConfig(round_id="prop", participants=ids, threshold=threshold, size=33, clip=3.0)
    updates = updates_for(config, seed=n)
    if len(senders) < threshold or len(senders) - len(after) < threshold:
        with pytest.raises(Conflict, match="threshold"):
            run_round(config, updates, drop_before_mask=before, drop_after_mask=after)
        return
    total = run_round(config, updates, drop_before_mask=before, drop_after_mask=after)
    plain = np.sum([updates[i].astype(np.float64) for i in senders], axis=0)
    assert np.max(np.abs(total - plain)) <= config.error_bound


def test_a_corrupted_revealed_share_is_caught_not_summed() -> None:
    config = SecAggConfig(round_id="r-bad", participants=(1, 2, 3), threshold=2, size=4)
    clients = {i: SecAggClient(config, i) for i in config.participants}
    server = SecAggServer(config)
    for client in clients.values():
        server.receive_advert(client.advertise())
    directory = server.directory()
    for client in clients.values():
        server.receive_shares(client.share_keys(directory))
    for i in (1, 2):
        server.receive_masked(i, clients[i].mask(np.ones(4), server.inbox(i)))
    request = server.unmask_request()
    assert request["dropped"] == [3]
    server.receive_reveal(clients[1].unmask(request))
    reveal = clients[2].unmask(request)
    share = bytearray(base64.b64decode(reveal["self_shares"]["1"]))
    share[-1] ^= 0x01
    reveal["self_shares"]["1"] = base64.b64encode(share).decode()
    server.receive_reveal(reveal)
    with pytest.raises(Refused, match="self-mask seed of client 1 does not match"):
        server.aggregate()


def test_a_client_masks_once_so_two_inputs_under_one_mask_never_leave_it() -> None:
    config = SecAggConfig(round_id="r-once", participants=(1, 2, 3), threshold=2, size=4)
    clients = {i: SecAggClient(config, i) for i in config.participants}
    server = SecAggServer(config)
    for client in clients.values():
        server.receive_advert(client.advertise())
    directory = server.directory()
    for client in clients.values():
        server.receive_shares(client.share_keys(directory))
    with pytest.raises(Conflict, match="runs once"):
        clients[1].share_keys(directory)
    inbox = server.inbox(1)
    clients[1].mask(np.ones(4), inbox)
    with pytest.raises(Conflict, match="runs once"):
        clients[1].mask(np.zeros(4), inbox)


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(min_value=1, max_value=9),
    data=st.data(),
)
def test_shamir_any_threshold_subset_rebuilds_the_secret(
    secret: bytes, n: int, data: st.DataObject
) -> None:
    threshold = data.draw(st.integers(min_value=1, max_value=n), label="threshold")
    xs = data.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, threshold=threshold, xs=xs)
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=threshold, unique=True))
    assert shamir.combine({x: shares[x] for x in subset}, threshold=threshold) == secret
