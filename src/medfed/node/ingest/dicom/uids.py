"""Keyed, deterministic replacement UIDs (action ``U``) and the UIDs never replaced.

How it runs: a :class:`UidMapper` holds the node's UID key (``derive_key(secret,
"dicom-uid")``) and a per-process cache. ``map(uid)`` returns
``2.25.<int>`` where the integer is the first 128 bits of ``HMAC-SHA256(key, uid)`` with
the UUID version (8, custom) and variant bits set, so the result is a valid UUID-derived
UID (PS3.5 B.2) of at most 44 characters. The same original UID maps to the same new UID
in every place it appears (file meta, sequences, references), on every run and batch of
the node; another node's secret gives unrelated UIDs. Well-known UIDs (SOP Classes,
Transfer Syntaxes, coding schemes: anything in pydicom's UID dictionary or under the
DICOM root ``1.2.840.10008.``) are returned unchanged.
"""

from __future__ import annotations

from pydicom._uid_dict import UID_dictionary

from medfed.node.ingest.keys import hmac_hex

__all__ = ["DICOM_ROOT", "UidMapper", "is_well_known"]

DICOM_ROOT = "1.2.840.10008."
_CACHE_LIMIT = 200_000


def is_well_known(uid: str) -> bool:
    """A UID the standard defines (never replaced): SOP Class, Transfer Syntax, ..."""
    return uid in UID_dictionary or uid.startswith(DICOM_ROOT)


class UidMapper:
    """Original UID → keyed ``2.25.`` UID, deterministic for one node key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._cache: dict[str, str] = {}

    def map(self, uid: str) -> str:
        uid = uid.strip().rstrip("\x00").strip()
        if not uid or is_well_known(uid):
            return uid
        new = self._cache.get(uid)
        if new is None:
            value = int(hmac_hex(self._key, "uid", uid)[:32], 16)
            value = (value & ~(0xF << 76)) | (0x8 << 76)  # UUID version 8 (custom)
            value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
            new = f"2.25.{value}"
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[uid] = new
        return new
