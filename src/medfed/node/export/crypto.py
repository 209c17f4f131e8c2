"""Cryptography of the export package: keys, key wrapping, file encryption, manifest tags.

How it works (all primitives from ``cryptography``; nothing here does I/O except the key
files):

- **Content key**: 32 random bytes per package. Every file is encrypted with
  AES-256-GCM under it, with a fresh random 96-bit nonce per file and associated data
  ``"medfed-export/1 file\\0" ‖ SHA-256(manifest.json) ‖ "\\0" ‖ file name``, so a blob
  decrypts only under its own name and with the exact manifest it was built with.
- **Key wrap** to the recipient's X25519 public key: an ephemeral X25519 key pair;
  ``kek = HKDF-SHA256(shared secret, salt = ephemeral public ‖ recipient public,
  info = "medfed-export/1 key-wrap" ‖ manifest id)``; the content key is sealed with
  AES-256-GCM under ``kek`` with associated data ``manifest id ‖ recipient fingerprint``.
- **Manifest tag**: ``HMAC-SHA256(HKDF(content key, info = "medfed-export/1 manifest"),
  manifest.json)`` — only someone holding the content key can make a manifest that
  passes. An optional Ed25519 signature over ``manifest.json`` names the sender.
- **Fingerprint** of a public key: SHA-256 of its 32 raw bytes, hex.

Key files are PEM: PKCS#8 private keys (unencrypted, created with mode 0600) and
SubjectPublicKeyInfo public keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medfed.common.errors import BadRequest

__all__ = [
    "FORMAT",
    "CryptoFailure",
    "decrypt_file",
    "encrypt_file",
    "fingerprint",
    "hmac_equal",
    "load_ed25519_private",
    "load_ed25519_public",
    "load_x25519_private",
    "load_x25519_public",
    "manifest_tag",
    "new_content_key",
    "raw_public",
    "unwrap_key",
    "verify_signature",
    "wrap_key",
    "write_keypair",
]

FORMAT = "medfed-export/1"
KeyKind = Literal["x25519", "ed25519"]
PrivateKey = X25519PrivateKey | Ed25519PrivateKey
PublicKey = X25519PublicKey | Ed25519PublicKey


class CryptoFailure(Exception):
    """A tag or signature did not verify (the caller names what failed)."""


def new_content_key() -> bytes:
    return os.urandom(32)


def raw_public(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: PublicKey) -> str:
    return hashlib.sha256(raw_public(key)).hexdigest()


def _hkdf(secret: bytes, *, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def wrap_key(
    content_key: bytes, recipient: X25519PublicKey, *, manifest_id: str
) -> tuple[bytes, bytes, bytes]:
    """Seal the content key to ``recipient``: (ephemeral public, nonce, wrapped key)."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = raw_public(ephemeral.public_key())
    kek = _hkdf(
        ephemeral.exchange(recipient),
        salt=ephemeral_public + raw_public(recipient),
        info=f"{FORMAT} key-wrap".encode() + manifest_id.encode(),
    )
    nonce = os.urandom(12)
    aad = manifest_id.encode() + b"\0" + fingerprint(recipient).encode()
    return ephemeral_public, nonce, AESGCM(kek).encrypt(nonce, content_key, aad)


def unwrap_key(
    ephemeral_public: bytes,
    nonce: bytes,
    wrapped: bytes,
    recipient: X25519PrivateKey,
    *,
    manifest_id: str,
) -> bytes:
    """Open the sealed content key with the recipient's private key, or CryptoFailure."""
    try:
        peer = X25519PublicKey.from_public_bytes(ephemeral_public)
        public = recipient.public_key()
        kek = _hkdf(
            recipient.exchange(peer),
            salt=ephemeral_public + raw_public(public),
            info=f"{FORMAT} key-wrap".encode() + manifest_id.encode(),
        )
        aad = manifest_id.encode() + b"\0" + fingerprint(public).encode()
        key = AESGCM(kek).decrypt(nonce, wrapped, aad)
    except (InvalidTag, ValueError) as exc:
        raise CryptoFailure(str(exc) or type(exc).__name__) from None
    if len(key) != 32:
        raise CryptoFailure("the content key is not 32 bytes")
    return key


def _file_aad(manifest_hash: bytes, name: str) -> bytes:
    return f"{FORMAT} file".encode() + b"\0" + manifest_hash + b"\0" + name.encode()


def encrypt_file(
    content_key: bytes, nonce: bytes, data: bytes, *, manifest_hash: bytes, name: str
) -> bytes:
    return AESGCM(content_key).encrypt(nonce, data, _file_aad(manifest_hash, name))


def decrypt_file(
    content_key: bytes, nonce: bytes, blob: bytes, *, manifest_hash: bytes, name: str
) -> bytes:
    try:
        return AESGCM(content_key).decrypt(nonce, blob, _file_aad(manifest_hash, name))
    except (InvalidTag, ValueError) as exc:
        raise CryptoFailure(str(exc) or type(exc).__name__) from None


def manifest_tag(content_key: bytes, manifest: bytes) -> bytes:
    """HMAC-SHA256 of the manifest bytes under a key derived from the content key."""
    mac_key = _hkdf(content_key, salt=None, info=f"{FORMAT} manifest".encode())
    return hmac.new(mac_key, manifest, hashlib.sha256).digest()


def hmac_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def verify_signature(public: Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    try:
        public.verify(signature, data)
    except InvalidSignature:
        raise CryptoFailure("signature does not verify") from None


def write_keypair(prefix: Path, kind: KeyKind = "x25519") -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (0600, created exclusively) and ``PREFIX.pub``; refuse to overwrite."""
    private: PrivateKey = (
        X25519PrivateKey.generate() if kind == "x25519" else (Ed25519PrivateKey.generate())
    )
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (key_path, pub_path):
        if path.exists():
            raise BadRequest(f"{path} exists; refusing to overwrite a key file")
    key_path.parent.mkdir(parents=True, exist_ok=True)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(key_path, 0o600)  # whatever the umask
    pub_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_path, pub_path


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadRequest(f"cannot read {what} {path}: {exc.strerror}") from None


def _load_private(path: Path) -> object:
    try:
        return serialization.load_pem_private_key(_read(path, "key file"), password=None)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"{path} is not an unencrypted PEM private key: {exc}") from None


def _load_public(path: Path) -> object:
    try:
        return serialization.load_pem_public_key(_read(path, "key file"))
    except ValueError as exc:
        raise BadRequest(f"{path} is not a PEM public key: {exc}") from None


def load_x25519_private(path: Path) -> X25519PrivateKey:
    """A recipient's private key (PEM), or BadRequest naming the file."""
    key = _load_private(path)
    if not isinstance(key, X25519PrivateKey):
        raise BadRequest(f"{path} is not an X25519 private key")
    return key


def load_x25519_public(path: Path) -> X25519PublicKey:
    """A recipient's public key (PEM), or BadRequest naming the file."""
    key = _load_public(path)
    if not isinstance(key, X25519PublicKey):
        raise BadRequest(f"{path} is not an X25519 public key")
    return key


def load_ed25519_private(path: Path) -> Ed25519PrivateKey:
    """A sender's signing key (PEM), or BadRequest naming the file."""
    key = _load_private(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise BadRequest(f"{path} is not an Ed25519 private key")
    return key


def load_ed25519_public(path: Path) -> Ed25519PublicKey:
    """A sender's public key (PEM), or BadRequest naming the file."""
    key = _load_public(path)
    if not isinstance(key, Ed25519PublicKey):
        raise BadRequest(f"{path} is not an Ed25519 public key")
    return key
