"""The hub's secrets on disk and in its database: the dev key, sealed values, file modes.

How it runs, once per process and without threads of its own:

- :func:`dev_secret` — in dev mode without ``MEDFED_SECRET_KEY`` the hub's secret is a
  random key generated once per data folder and kept in ``<data_dir>/dev-secret.key``
  (mode 0600); every later start (and every worker) on that folder reads the same key.
  The file is written under a temporary name and linked into place, so two workers that
  start together agree on one key. There is no public default key.
- :func:`seal` / :func:`unseal` — secrets the hub must use later in plain form (an
  organization's Zenodo token) are stored encrypted: Fernet (AES-128-CBC + HMAC-SHA256)
  under a key derived from the hub's secret with HKDF-SHA256 (its own ``info``, so it
  is independent of the ledger's signing key). A sealed value starts with ``enc:v1:``;
  a value without the prefix is a legacy plain value (:func:`is_sealed`).
- :func:`make_private` — the hub's data folder 0700 and its files (``hub.db`` and its WAL,
  ethics documents, the dev key) 0600; :func:`write_private` creates a file 0600 from the
  start.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DEV_KEY_FILE",
    "MIN_SECRET_BYTES",
    "SEALED_PREFIX",
    "UnsealError",
    "dev_secret",
    "is_sealed",
    "make_private",
    "seal",
    "unseal",
    "write_private",
]

DEV_KEY_FILE = "dev-secret.key"
MIN_SECRET_BYTES = 32
SEALED_PREFIX = "enc:v1:"
_SEAL_INFO = b"medfed stored-secret key v1"


class UnsealError(Exception):
    """A sealed value does not open with this hub's secret (the secret changed)."""


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (replacing it) through a temporary file created 0600."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def make_private(path: Path, *, folder: bool = False) -> None:
    """Mode 0700 (a folder) or 0600 (a file) where the path exists and is ours."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        path.chmod(0o700 if folder else 0o600)


def dev_secret(data_dir: Path) -> str:
    """The dev-mode secret of ``data_dir``: read it, or generate it once (mode 0600)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        tmp = data_dir / f".{DEV_KEY_FILE}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # fails if another worker linked its key first: use that one
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = path.read_text().strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the dev key {path} holds {len(secret.encode())} bytes, fewer than "
            f"{MIN_SECRET_BYTES}; delete the file to have a new key generated"
        )
    return secret


def _fernet(secret_key: str) -> Fernet:
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(raw))


def seal(secret_key: str, plain: str) -> str:
    """``plain`` encrypted under the hub's secret, as text for a database column."""
    return SEALED_PREFIX + _fernet(secret_key).encrypt(plain.encode()).decode()


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)


def unseal(secret_key: str, value: str) -> str:
    """The plain value of a sealed one (a legacy plain value is returned as it is)."""
    if not is_sealed(value):
        return value
    try:
        return _fernet(secret_key).decrypt(value[len(SEALED_PREFIX) :].encode()).decode()
    except InvalidToken:
        raise UnsealError(
            "a stored secret does not decrypt with the hub's MEDFED_SECRET_KEY (was the key "
            "changed?); set it again"
        ) from None
