"""The ledger's Merkle proofs against an independent implementation of RFC 9162 §2.1.

The reference functions (``tests/rfc9162.py``) are written from the RFC's recursive
definitions (MTH, PATH, PROOF/SUBPROOF), not from medfed's code.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from medfed.ledger.merkle import (
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from rfc9162 import mth, path, reference_verify_inclusion, subproof


def entries(n: int) -> list[bytes]:
    return [f'{{"index":{i}}}'.encode() for i in range(n)]


def test_root_equals_the_rfc_definition_for_every_size_up_to_130() -> None:
    d = entries(130)
    tree = MemoryTree()
    for i, e in enumerate(d):
        tree.append(e)
        assert tree.root() == mth(d[: i + 1])


def test_inclusion_proofs_equal_rfc_path_and_verify_both_ways() -> None:
    d = entries(67)
    tree = MemoryTree(leaf_hash(e) for e in d)
    for size in range(1, len(d) + 1):
        root = mth(d[:size])
        for index in range(size):
            proof = inclusion_proof(tree, index, size)
            assert proof == path(index, d[:size])
            assert reference_verify_inclusion(leaf_hash(d[index]), index, size, proof, root)
            assert verify_inclusion(leaf_hash(d[index]), index, size, proof, root)


def test_consistency_proofs_equal_rfc_proof_and_verify() -> None:
    d = entries(67)
    tree = MemoryTree(leaf_hash(e) for e in d)
    for second in range(1, len(d) + 1):
        for first in range(1, second + 1):
            proof = consistency_proof(tree, first, second)
            assert proof == subproof(first, d[:second], True)
            assert verify_consistency(first, second, mth(d[:first]), mth(d[:second]), proof)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data())
def test_tampered_proofs_and_roots_are_rejected(size: int, data: st.DataObject) -> None:
    d = entries(size)
    tree = MemoryTree(leaf_hash(e) for e in d)
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(tree, index, size)
    root = mth(d)
    assert len(proof) <= (size - 1).bit_length()
    assert not verify_inclusion(leaf_hash(b"forged"), index, size, proof, root)
    if proof:
        bad = [*proof]
        bad[0] = hashlib.sha256(bad[0]).digest()
        assert not verify_inclusion(leaf_hash(d[index]), index, size, bad, root)
    first = data.draw(st.integers(1, size))
    cproof = consistency_proof(tree, first, size)
    other = mth([b"x", *d[1:first]]) if first > 0 else root
    if first < size:
        assert not verify_consistency(first, size, other, root, cproof)
