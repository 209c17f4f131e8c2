"""Signed checkpoints (tree size, root hash, time) and witness cosignatures, with Ed25519.

A checkpoint's signed text is the lines ``medfed-checkpoint/v1``, origin, size, root (hex)
and time, each ending in a newline.
The hub signs it with a key derived from its secret (HKDF-SHA256), so every hub worker
signs with the same key; nodes sign the same text with their own key to cosign it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "medfed-checkpoint/v1"


def derive_key(secret: str, purpose: str = "medfed ledger checkpoint key") -> Ed25519PrivateKey:
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        secret.encode()
    )
    return Ed25519PrivateKey.from_private_bytes(seed)


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_private(raw: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public(b64: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(b64))


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: str  # hex
    time: str
    signature: str = ""  # base64, by the hub
    cosignatures: dict[str, str] = field(default_factory=dict)  # witness id -> base64

    def text(self) -> bytes:
        return f"{PREFIX}\n{self.origin}\n{self.size}\n{self.root}\n{self.time}\n".encode()

    def signed(self, key: Ed25519PrivateKey) -> Checkpoint:
        signature = base64.b64encode(key.sign(self.text())).decode()
        return Checkpoint(self.origin, self.size, self.root, self.time, signature, {})

    def cosign(self, key: Ed25519PrivateKey) -> str:
        return base64.b64encode(key.sign(self.text())).decode()


def verify_signature(public: str, checkpoint: Checkpoint, signature: str) -> bool:
    try:
        load_public(public).verify(base64.b64decode(signature), checkpoint.text())
        return True
    except (InvalidSignature, ValueError):
        return False
