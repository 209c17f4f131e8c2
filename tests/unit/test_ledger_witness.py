"""Witnesses catch a hub that shows two histories; verification names the first bad index."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfed.ledger.checkpoint import Checkpoint, new_key, public_b64
from medfed.ledger.entries import GENESIS_PREV, canonical, make_entry
from medfed.ledger.merkle import MemoryTree, consistency_proof, leaf_hash
from medfed.ledger.verify import find_forks, verify_log
from medfed.node.witness import ForkDetected, Witness

HUB_KEY = new_key()


def log(n: int, tag: str = "a") -> list[bytes]:
    out: list[bytes] = []
    prev = GENESIS_PREV
    for i in range(n):
        entry = make_entry(
            index=i,
            prev=prev,
            time=f"2026-01-01T00:00:{i:02d}",
            action="task.create",
            actor="user:1",
            objects={"task": i, "tag": tag},
            hashes={},
        )
        raw = canonical(entry)
        out.append(raw)
        prev = leaf_hash(raw).hex()
    return out


def checkpoint(bodies: list[bytes], size: int) -> Checkpoint:
    tree = MemoryTree(leaf_hash(b) for b in bodies)
    return Checkpoint("hub", size, tree.root(size).hex(), "t").signed(HUB_KEY)


def proof(bodies: list[bytes], first: int, second: int) -> list[str]:
    tree = MemoryTree(leaf_hash(b) for b in bodies)
    return [h.hex() for h in consistency_proof(tree, first, second)]


def test_a_witness_cosigns_an_honest_extension(tmp_path: Path) -> None:
    bodies = log(20)
    witness = Witness(tmp_path)
    hub = public_b64(HUB_KEY)
    assert witness.check(checkpoint(bodies, 5), hub, None) is not None
    assert witness.check(checkpoint(bodies, 20), hub, proof(bodies, 5, 20)) is not None
    restarted = Witness(tmp_path)  # state survives a restart
    assert (restarted.size, restarted.public_key) == (20, witness.public_key)


def test_a_fork_is_detected_by_the_witness(tmp_path: Path) -> None:
    honest = log(8)
    forked = honest[:3] + log(12, tag="b")[3:]  # same first 3 entries, then another history
    hub = public_b64(HUB_KEY)
    witness = Witness(tmp_path)
    assert witness.check(checkpoint(honest, 6), hub, None) is not None
    with pytest.raises(ForkDetected, match="not consistent"):
        witness.check(checkpoint(forked, 12), hub, proof(forked, 6, 12))
    with pytest.raises(ForkDetected, match="two roots"):
        witness.check(checkpoint(forked, 6), hub, None)


def test_two_witnesses_shown_two_histories_are_caught_by_comparing_cosignatures(
    tmp_path: Path,
) -> None:
    honest, forked = log(8), log(8, tag="b")
    hub = public_b64(HUB_KEY)
    one, two = Witness(tmp_path / "one"), Witness(tmp_path / "two")
    seen_one = checkpoint(honest, 8)
    seen_two = checkpoint(forked, 8)
    assert one.check(seen_one, hub, None) and two.check(seen_two, hub, None)
    problems = find_forks([seen_one, seen_two])
    assert problems and "size 8" in problems[0]


def _verify(bodies: list[bytes], cps: list[Checkpoint]) -> tuple[bool, int | None]:
    report = verify_log(bodies, cps, public_b64(HUB_KEY))
    return report.ok, report.first_bad_index


@pytest.mark.parametrize("bad", [0, 7, 18, 19])
def test_editing_one_entry_names_it(bad: int) -> None:
    bodies = log(20)
    cps = [checkpoint(bodies, 10), checkpoint(bodies, 20)]
    assert _verify(bodies, cps) == (True, None)
    edited = list(bodies)
    edited[bad] = edited[bad].replace(b'"tag":"a"', b'"tag":"z"')
    assert _verify(edited, cps) == (False, bad)


@pytest.mark.parametrize("bad", [0, 9, 19])
def test_deleting_one_entry_names_it(bad: int) -> None:
    bodies = log(20)
    cps = [checkpoint(bodies, 20)]
    assert _verify(bodies[:bad] + bodies[bad + 1 :], cps) == (False, bad)


def test_reordering_two_entries_names_the_first() -> None:
    bodies = log(20)
    swapped = list(bodies)
    swapped[4], swapped[11] = swapped[11], swapped[4]
    assert _verify(swapped, [checkpoint(bodies, 20)]) == (False, 4)


def test_a_forged_checkpoint_signature_fails() -> None:
    bodies = log(5)
    good = checkpoint(bodies, 5)
    forged = Checkpoint(good.origin, good.size, good.root, good.time, new_key_signature(good))
    ok, _ = _verify(bodies, [forged])
    assert not ok


def new_key_signature(cp: Checkpoint) -> str:
    return Checkpoint(cp.origin, cp.size, cp.root, cp.time).signed(new_key()).signature
