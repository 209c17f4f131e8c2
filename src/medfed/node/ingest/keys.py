"""Keys for de-identification, derived from the node's secret; one derivation for all.

Every keyed operation of ingest — DICOM UIDs, patient pseudonyms, per-patient date
offsets, tabular pseudonyms — uses ``derive_key(secret, purpose)`` (HKDF-SHA256, 32 bytes,
``info = "medfed ingest " + purpose``) and ``hmac_hex(key, *parts)`` (HMAC-SHA256 over the
parts joined by a 0x1f unit separator). The same secret and purpose give the same outputs
on every run and batch; another node's secret gives unrelated ones.

:func:`patient_pseudonym` is the one patient pseudonym of the node: the DICOM ingest writes
it as PatientID (and the imaging index's ``patient_pseudonym``), the FHIR ingest keys its
OMOP ``person_id`` on it and the opt-out register records FHIR Consents by it, so imaging,
clinical rows and opt-outs of one patient meet on the same value.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["derive_key", "hmac_hex", "patient_pseudonym"]


def derive_key(secret: str, purpose: str) -> bytes:
    if not secret:
        raise ValueError("a node secret is needed to derive de-identification keys")
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"medfed ingest {purpose}".encode()
    ).derive(secret.encode())


def hmac_hex(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()


def patient_pseudonym(key: bytes, patient_id: str) -> str:
    """``P`` + 16 hex digits keyed by ``derive_key(secret, "patient-pseudonym")``."""
    return "P" + hmac_hex(key, "patient", patient_id.strip())[:16].upper()
