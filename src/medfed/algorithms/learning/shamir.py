"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

Used by :mod:`medfed.algorithms.learning.secagg` to share each client's self-mask seed and
pairwise-mask private key, so that the server can rebuild them from any ``threshold``
surviving clients and from no fewer.

How it runs: a secret ``s`` (bytes, at most 64 of them, read as a big-endian integer, so
always below the prime) becomes the constant term of a random polynomial ``f`` of degree
``threshold - 1`` whose other coefficients are drawn with :mod:`secrets`; the share of the
party with x-coordinate ``x`` (a positive integer, distinct per party, e.g. its node id) is
``f(x)``. Any ``threshold`` shares give ``f(0) = s`` by Lagrange interpolation at zero; fewer
give no information about ``s`` (every value of ``s`` is equally likely).

The Mersenne prime 2^521 - 1 is larger than any 64-byte secret, so a 32-byte X25519 key
or seed is shared in one piece. A share is encoded as 66 big-endian bytes.

API::

    split(secret: bytes, *, threshold: int, xs: Iterable[int]) -> dict[int, bytes]
    combine(shares: Mapping[int, bytes], *, threshold: int, length: int = 32) -> bytes

``combine`` uses exactly ``threshold`` shares (the smallest x-coordinates) and raises
:class:`medfed.common.errors.Conflict` when fewer are given; malformed input raises
:class:`medfed.common.errors.BadRequest`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

from medfed.common.errors import BadRequest, Conflict

__all__ = ["PRIME", "SHARE_BYTES", "combine", "split"]

PRIME = 2**521 - 1
SHARE_BYTES = 66
MAX_SECRET_BYTES = 64


def _evaluate(coefficients: list[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):  # Horner
        value = (value * x + coefficient) % PRIME
    return value


def split(secret: bytes, *, threshold: int, xs: Iterable[int]) -> dict[int, bytes]:
    """Shares of ``secret`` for the parties at ``xs``; any ``threshold`` of them rebuild it."""
    points = list(xs)
    if len(secret) > MAX_SECRET_BYTES:
        raise BadRequest(f"secret of {len(secret)} bytes; at most {MAX_SECRET_BYTES} can be shared")
    if len(set(points)) != len(points) or any(x <= 0 or x >= PRIME for x in points):
        raise BadRequest("share x-coordinates must be distinct positive integers")
    if not 1 <= threshold <= len(points):
        raise BadRequest(f"threshold {threshold} must be between 1 and the {len(points)} parties")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x).to_bytes(SHARE_BYTES, "big") for x in points}


def combine(shares: Mapping[int, bytes], *, threshold: int, length: int = 32) -> bytes:
    """The secret (``length`` bytes) from at least ``threshold`` shares keyed by x."""
    if len(shares) < threshold:
        raise Conflict(f"{len(shares)} shares given; {threshold} are needed to rebuild the secret")
    chosen = sorted(shares)[:threshold]
    points: list[tuple[int, int]] = []
    for x in chosen:
        share = shares[x]
        if x <= 0 or len(share) != SHARE_BYTES:
            raise BadRequest(f"share for x={x} is malformed")
        y = int.from_bytes(share, "big")
        if y >= PRIME:
            raise BadRequest(f"share for x={x} is not a field element")
        points.append((x, y))
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * length):
        raise Conflict("the shares do not rebuild a secret of the expected length (tampered?)")
    return secret.to_bytes(length, "big")
