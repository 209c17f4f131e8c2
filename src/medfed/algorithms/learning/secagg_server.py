"""The hub's side of one secure-aggregation round: :class:`SecAggServer`.

The protocol, its messages and its guarantees are described in
:mod:`medfed.algorithms.learning.secagg` (client side, config and primitives); this module
is the relay-and-sum half. How it runs: the hub feeds it each client message as it arrives
and calls the phase-closing methods when a quorum answered or a timeout passed::

    server = SecAggServer(config)
    server.receive_advert(msg)            # phase 1, per client
    directory = server.directory()        # closes phase 1 (U1); broadcast it
    server.receive_shares(msg)            # phase 2, per client
    inbox = server.inbox(client)          # first call closes phase 2 (U2); one per client
    server.receive_masked(client, array)  # phase 3, per client: adds to a running sum
    request = server.unmask_request()     # closes phase 3 (U3); broadcast it
    server.receive_reveal(msg)            # phase 4, per client
    total = server.aggregate()            # float64 sum of the U3 clients' updates

Each closing method raises ``Conflict`` naming the round and the threshold when fewer than
``threshold`` clients took part. It keeps only the messages and the running sum of masked
vectors (never a single unmasked update), so a restarted hub rebuilds it by replaying the
stored messages in phase order.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from numpy.typing import NDArray

from medfed.algorithms.learning import shamir
from medfed.algorithms.learning.secagg import (
    _KEY_BYTES,
    SecAggConfig,
    _agree,
    _b64,
    _check,
    _commit,
    _dequantize,
    _ids,
    _pair_mask,
    _public,
    _self_mask,
    _unb64,
)
from medfed.common.errors import BadRequest, Conflict, Refused

__all__ = ["SecAggServer"]


@dataclass
class SecAggServer:
    """The hub's side of one round: relays keys and shares, sums masked inputs, unmasks.

    Its state is only the messages it received, so a hub that restarts can rebuild it by
    replaying them in phase order. Repeating an identical key, share or reveal message is
    harmless; a different one from the same client, one after its phase closed, or a second
    masked input from one client raises ``Conflict``.
    """

    config: SecAggConfig
    _adverts: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    _directory: dict[str, Any] | None = None
    _shares: dict[int, tuple[str, dict[str, str]]] = field(default_factory=dict)
    _sharers: tuple[int, ...] | None = None
    _sum: NDArray[Any] | None = None
    _masked: set[int] = field(default_factory=set)
    _request: dict[str, Any] | None = None
    _reveals: dict[int, dict[str, Any]] = field(default_factory=dict)

    def receive_advert(self, message: Mapping[str, Any]) -> None:
        _check(message, self.config, "client", "mask_key", "share_key")
        client = self._member(message["client"], self.config.participants)
        keys = (
            _unb64(message["mask_key"], "mask key", _KEY_BYTES),
            _unb64(message["share_key"], "share key", _KEY_BYTES),
        )
        self._once(self._adverts, client, keys, closed=self._directory is not None)

    def directory(self) -> dict[str, Any]:
        """Closes phase 1: the public keys of every client that advertised (``U1``)."""
        if self._directory is None:
            if len(self._adverts) < self.config.threshold:
                raise Conflict(self._too_few(len(self._adverts), "advertised keys"))
            self._directory = {
                "round": self.config.round_id,
                "keys": {
                    str(c): {"mask_key": _b64(m), "share_key": _b64(s)}
                    for c, (m, s) in sorted(self._adverts.items())
                },
            }
        return self._directory

    def receive_shares(self, message: Mapping[str, Any]) -> None:
        if self._directory is None:
            raise Conflict("shares arrived before the key directory was sent")
        _check(message, self.config, "client", "commitment", "shares")
        client = self._member(message["client"], tuple(self._adverts))
        shares = message["shares"]
        if not isinstance(shares, Mapping) or _ids(shares, "shares") != set(self._adverts) - {
            client
        }:
            raise BadRequest(f"client {client} must send one share to every other client in U1")
        for peer, blob in shares.items():
            _unb64(blob, f"share from {client} to {peer}")
        sealed = {str(k): str(v) for k, v in shares.items()}
        self._once(self._shares, client, (str(message["commitment"]), sealed), self._closed)

    def inbox(self, client: int) -> dict[str, Any]:
        """Closes phase 2 (``U2`` = who shared): the encrypted shares addressed to ``client``."""
        if self._sharers is None:
            if self._directory is None or len(self._shares) < self.config.threshold:
                raise Conflict(self._too_few(len(self._shares), "shared their keys"))
            self._sharers = tuple(sorted(self._shares))
        member = self._member(client, self._sharers)
        return {
            "round": self.config.round_id,
            "shares": {
                str(sender): sealed[str(member)]
                for sender, (_, sealed) in sorted(self._shares.items())
                if sender != member
            },
        }

    def receive_masked(self, client: int, vector: NDArray[Any]) -> None:
        """Adds one masked input to the running sum (kept mod 2^bits); once per client."""
        if self._sharers is None or self._request is not None:
            raise Conflict("masked inputs are taken only between inbox() and unmask_request()")
        member = self._member(client, self._sharers)
        array = np.asarray(vector)
        if array.dtype != self.config.dtype or array.shape != (self.config.size,):
            raise BadRequest(
                f"masked input must be {self.config.size} values of {self.config.dtype}"
            )
        if member in self._masked:
            raise Conflict(f"client {member}'s masked input was already received")
        self._masked.add(member)
        if self._sum is None:
            self._sum = array.copy()
        else:
            np.add(self._sum, array, out=self._sum)  # wraps mod 2^bits, as it must

    def unmask_request(self) -> dict[str, Any]:
        """Closes phase 3 (``U3`` = whose masked input arrived): who survived, who dropped."""
        if self._request is None:
            if self._sharers is None or len(self._masked) < self.config.threshold:
                raise Conflict(self._too_few(len(self._masked), "sent masked inputs"))
            self._request = {
                "round": self.config.round_id,
                "survivors": sorted(self._masked),
                "dropped": sorted(set(self._sharers) - self._masked),
            }
        return self._request

    def receive_reveal(self, message: Mapping[str, Any]) -> None:
        if self._request is None or self._sharers is None:
            raise Conflict("reveals arrived before the unmask request was sent")
        _check(message, self.config, "client", "self_shares", "mask_shares")
        client = self._member(message["client"], self._sharers)
        own, keys = message["self_shares"], message["mask_shares"]
        if (
            not isinstance(own, Mapping)
            or not isinstance(keys, Mapping)
            or _ids(own, "self_shares") != set(self._request["survivors"])
            or _ids(keys, "mask_shares") != set(self._request["dropped"])
        ):
            raise BadRequest(f"client {client}'s reveal does not match the unmask request")
        for blob in [*own.values(), *keys.values()]:
            _unb64(blob, f"share revealed by client {client}", shamir.SHARE_BYTES)
        self._once(self._reveals, client, dict(message), closed=False)

    def aggregate(self) -> NDArray[np.float64]:
        """Phase 4 result: the float64 sum of the survivors' (clipped, quantized) updates."""
        if self._request is None or self._sum is None:
            raise Conflict("aggregate() comes after the masked inputs and the unmask request")
        if len(self._reveals) < self.config.threshold:
            raise Conflict(self._too_few(len(self._reveals), "revealed their shares"))
        total = self._sum.copy()
        survivors: list[int] = self._request["survivors"]
        for v in survivors:
            seed = self._rebuild(v, "self_shares")
            if _commit(seed, v, self.config.round_id) != self._shares[v][0]:
                raise Refused(
                    f"the rebuilt self-mask seed of client {v} does not match its commitment"
                )
            total -= _self_mask(seed, self.config)
        for w in self._request["dropped"]:
            key = X25519PrivateKey.from_private_bytes(self._rebuild(w, "mask_shares"))
            if _public(key) != self._adverts[w][0]:
                raise Refused(f"the rebuilt mask key of dropped client {w} does not match its key")
            for v in survivors:
                pad = _pair_mask(_agree(key, self._adverts[v][0]), self.config)
                if v < w:
                    total -= pad
                else:
                    total += pad
        return _dequantize(total, self.config)

    @property
    def survivors(self) -> list[int]:
        return list(self._request["survivors"]) if self._request else []

    @property
    def dropped(self) -> list[int]:
        return list(self._request["dropped"]) if self._request else []

    def _rebuild(self, client: int, kind: str) -> bytes:
        shares = {
            x: base64.b64decode(reveal[kind][str(client)]) for x, reveal in self._reveals.items()
        }
        return shamir.combine(shares, threshold=self.config.threshold, length=_KEY_BYTES)

    @property
    def _closed(self) -> bool:
        return self._sharers is not None

    def _member(self, raw: Any, allowed: Iterable[int]) -> int:
        client = next(iter(_ids([raw], "the message")))
        if client not in set(allowed):
            raise Conflict(
                f"client {client} is not part of this phase of round {self.config.round_id}"
            )
        return client

    def _too_few(self, count: int, what: str) -> str:
        return (
            f"secure aggregation round {self.config.round_id}: only {count} clients {what}; "
            f"threshold is {self.config.threshold}"
        )

    @staticmethod
    def _once(store: dict[int, Any], client: int, value: Any, closed: bool) -> None:
        if client in store:
            if store[client] != value:
                raise Conflict(f"client {client} already sent a different message in this phase")
            return
        if closed:
            raise Conflict(f"client {client}'s message arrived after its phase closed")
        store[client] = value
