"""Secrets: random tokens, their SHA-256 digests, and argon2 password hashes.

User API tokens start with ``mfu_`` and node secrets with ``mfn_``; both carry 256 bits of
randomness, so a fast SHA-256 digest is a safe way to store them (the hub looks them up
by digest on every request). Passwords are low-entropy and get argon2id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

USER_TOKEN_PREFIX = "mfu_"
NODE_SECRET_PREFIX = "mfn_"

_hasher = PasswordHasher()


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
