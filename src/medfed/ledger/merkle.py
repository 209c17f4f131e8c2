"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs, and their verification.

Hashes: leaf = SHA-256(0x00 ‖ entry), node = SHA-256(0x01 ‖ left ‖ right); the tree head
of ``n`` leaves splits at ``k``, the largest power of two smaller than ``n`` (RFC 9162
§2.1.1). Proof generation works on any :class:`SubtreeSource` — something that returns
the hash of a *perfect, aligned* subtree (``2**level`` leaves starting at
``index * 2**level``) — so the hub can keep those hashes in its database and answer for a
million entries with ``O(log n)`` look-ups. :class:`MemoryTree` is the in-memory source
used by nodes, verifiers and tests. Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


class SubtreeSource(Protocol):
    def perfect(self, level: int, index: int) -> bytes:
        """Hash of leaves ``[index * 2**level, (index + 1) * 2**level)``."""
        ...


def subtree_root(source: SubtreeSource, start: int, end: int) -> bytes:
    """MTH of leaves ``[start, end)`` (``start`` aligned as the RFC's splits make it)."""
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        return source.perfect(n.bit_length() - 1, start // n)
    k = split_point(n)
    return node_hash(subtree_root(source, start, start + k), subtree_root(source, start + k, end))


def inclusion_proof(source: SubtreeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            proof.append(subtree_root(source, start + k, end))
            end = start + k
        else:
            proof.append(subtree_root(source, start, start + k))
            start = start + k
    proof.reverse()
    return proof


def consistency_proof(source: SubtreeSource, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 9162 §2.1.4.1."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to {second}")
    proof: list[bytes] = []

    def subproof(m: int, start: int, end: int, whole: bool) -> None:
        n = end - start
        if m == n:
            if not whole:
                proof.append(subtree_root(source, start, end))
            return
        k = split_point(n)
        if m <= k:
            subproof(m, start, start + k, whole)
            proof.append(subtree_root(source, start + k, end))
        else:
            subproof(m - k, start + k, end, False)
            proof.append(subtree_root(source, start, start + k))

    subproof(first, 0, second, True)
    return proof


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2."""
    if first > second or first == 0:
        return False
    if first == second:
        return not proof and first_root == second_root
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


class MemoryTree:
    """An append-only tree in memory: ``levels[l][i]`` holds each perfect subtree hash."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append_leaf(leaf)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append_leaf(self, leaf: bytes) -> int:
        """Add a leaf hash; returns its index. Completes every perfect subtree it closes."""
        index = self.size
        self.levels[0].append(leaf)
        level, i, h = 0, index, leaf
        while i & 1:
            h = node_hash(self.levels[level][i - 1], h)
            level += 1
            i >>= 1
            if len(self.levels) == level:
                self.levels.append([])
            self.levels[level].append(h)
        return index

    def append(self, entry: bytes) -> int:
        return self.append_leaf(leaf_hash(entry))

    def perfect(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return subtree_root(self, 0, self.size if size is None else size)


def new_perfect_nodes(leaf: bytes, index: int, left: SubtreeSource) -> list[tuple[int, int, bytes]]:
    """The perfect subtrees (level, index, hash) that appending ``leaf`` at ``index`` closes.

    ``left`` must already hold the subtrees to the left. Level 0 (the leaf itself) included.
    """
    out = [(0, index, leaf)]
    level, i, h = 0, index, leaf
    while i & 1:
        h = node_hash(left.perfect(level, i - 1), h)
        level += 1
        i >>= 1
        out.append((level, i, h))
    return out
