"""Ledger entries: canonical JSON holding ids and hashes, never personal data.

An entry is ``{"index", "prev", "time", "action", "actor", "objects", "hashes"}``:
``actor`` is a pseudonymous id (``user:12``, ``node:3``, ``hub``), ``objects`` maps kinds
to ids (``{"task": 7, "datasets": [1, 2]}``), ``hashes`` maps names to SHA-256 hex digests
of content (``{"outcome": "…"}``), and ``prev`` is the leaf hash of the entry before, so a
verifier names the first entry that was edited, deleted or moved. Canonical form: keys
sorted, no spaces, UTF-8 (the bytes that are hashed).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from medfed.common.errors import BadRequest

ACTION = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")
ACTOR = re.compile(r"^(hub|user:\d+|node:\d+|anonymous)$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
GENESIS_PREV = "0" * 64


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(value: Any) -> str:
    """SHA-256 hex of a JSON value's canonical form, or of raw bytes."""
    data = value if isinstance(value, bytes) else canonical(value)
    return hashlib.sha256(data).hexdigest()


def _ids(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | str):
        return True
    return isinstance(value, list) and all(_ids(v) for v in value)


def make_entry(
    *,
    index: int,
    prev: str,
    time: str,
    action: str,
    actor: str,
    objects: dict[str, Any],
    hashes: dict[str, str],
) -> dict[str, Any]:
    """A checked entry; anything that could carry personal data is refused."""
    if not ACTION.match(action):
        raise BadRequest(f"ledger: bad action name '{action}'")
    if not ACTOR.match(actor):
        raise BadRequest(f"ledger: actor must be a pseudonymous id, not '{actor}'")
    for key, value in objects.items():
        if not _ids(value):
            raise BadRequest(f"ledger: object '{key}' must be ids, not {type(value).__name__}")
        if isinstance(value, str) and len(value) > 100:
            raise BadRequest(f"ledger: object '{key}' is too long for an id")
    for key, digest in hashes.items():
        if not HEX64.match(digest):
            raise BadRequest(f"ledger: hash '{key}' is not a SHA-256 hex digest")
    return {
        "index": index,
        "prev": prev,
        "time": time,
        "action": action,
        "actor": actor,
        "objects": objects,
        "hashes": hashes,
    }
