"""The node as a witness of the hub's audit log.

Every ``witness_seconds`` the agent fetches the hub's latest checkpoint. The witness
checks the hub's signature (the hub key is pinned on first sight, or set in
``node.toml``), asks for a consistency proof from the last checkpoint it cosigned, checks
it (RFC 9162 §2.1.4.2), and only then cosigns with its own Ed25519 key (kept in the
node's data folder). A checkpoint that is not an extension of what the node saw before —
the hub showing another history — raises :class:`ForkDetected`; the node stops cosigning
and writes the alarm to its own log. State survives restarts in ``witness.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medfed.ledger.checkpoint import (
    Checkpoint,
    load_private,
    new_key,
    private_bytes,
    public_b64,
    verify_signature,
)
from medfed.ledger.merkle import verify_consistency


class ForkDetected(Exception):
    """The hub's new checkpoint does not extend the history this node cosigned."""


class BadCheckpoint(Exception):
    """A checkpoint whose hub signature does not verify."""


class Witness:
    def __init__(self, folder: Path, hub_key: str | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        key_path = folder / "witness.key"
        if key_path.exists():
            self.key = load_private(key_path.read_bytes())
        else:
            self.key = new_key()
            key_path.write_bytes(private_bytes(self.key))
            os.chmod(key_path, 0o600)
        self.state_path = folder / "witness.json"
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.hub_key: str | None = hub_key or state.get("hub_key")
        self.size: int = state.get("size", 0)
        self.root: str = state.get("root", "")

    @property
    def public_key(self) -> str:
        return public_b64(self.key)

    def _save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"hub_key": self.hub_key, "size": self.size, "root": self.root}))
        os.replace(tmp, self.state_path)

    def needs_proof(self, checkpoint: Checkpoint) -> tuple[int, int] | None:
        """The (first, second) sizes of the consistency proof this checkpoint needs."""
        if self.size == 0 or checkpoint.size == self.size:
            return None
        return self.size, checkpoint.size

    def check(self, checkpoint: Checkpoint, hub_key: str, proof: list[str] | None) -> str | None:
        """Cosignature for ``checkpoint`` if it extends what this node saw; else raise."""
        if self.hub_key is None:
            self.hub_key = hub_key
        elif hub_key != self.hub_key:
            raise ForkDetected("the hub's checkpoint key changed")
        if not verify_signature(self.hub_key, checkpoint, checkpoint.signature):
            raise BadCheckpoint(f"checkpoint {checkpoint.size}: hub signature does not verify")
        if checkpoint.size < self.size:
            raise ForkDetected(
                f"the hub shows size {checkpoint.size} after this node cosigned {self.size}"
            )
        if checkpoint.size == self.size:
            if checkpoint.root != self.root:
                raise ForkDetected(f"two roots for size {self.size}")
            return None
        if self.size:
            ok = verify_consistency(
                self.size,
                checkpoint.size,
                bytes.fromhex(self.root),
                bytes.fromhex(checkpoint.root),
                [bytes.fromhex(h) for h in proof or []],
            )
            if not ok:
                raise ForkDetected(
                    f"checkpoint {checkpoint.size} is not consistent with the cosigned "
                    f"checkpoint {self.size}"
                )
        self.size, self.root = checkpoint.size, checkpoint.root
        self._save()
        return checkpoint.cosign(self.key)
