"""Dates: the per-patient keyed offset, shifting DA and DT values, and dummy values per VR.

How it runs: with the option Retain Longitudinal Temporal Information with Modified
Dates, every date of a patient moves by the same whole number of days,
``patient_offset(key, patient_id)`` in [-365, -1] or [1, 365], taken from
``HMAC-SHA256(derive_key(secret, "date-offset"), patient_id)``: intervals between a
patient's studies stay exact, times (TM) stay as they are (a whole-day shift keeps them
consistent), and every run and batch of the node gives the same dates. A value that does
not parse as a date is not kept: it becomes zero-length.
"""

from __future__ import annotations

import datetime as dt

from medfed.node.ingest.keys import hmac_hex

__all__ = ["DUMMY", "dummy_value", "patient_offset", "shift_da", "shift_dt"]

DUMMY = "ANONYMIZED"
_DUMMIES: dict[str, object] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY,
    "LT": DUMMY,
    "PN": DUMMY,
    "SH": DUMMY,
    "ST": DUMMY,
    "UC": DUMMY,
    "UT": DUMMY,
    "UR": "http://anonymized.invalid",
    "AT": 0,
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
}


def dummy_value(vr: str) -> object:
    """A non-empty dummy value of ``vr`` (action D); binary VRs get two zero bytes."""
    return _DUMMIES.get(vr, b"\x00\x00")


def patient_offset(key: bytes, patient_id: str) -> int:
    """Days to add to every date of this patient: never 0, at most a year either way."""
    n = int(hmac_hex(key, "date-offset", patient_id)[:12], 16) % 730
    return n - 365 if n < 365 else n - 364


def _shift_date(text: str, days: int) -> str | None:
    """Shift ``YYYY``, ``YYYYMM`` or ``YYYYMMDD`` (precision kept); None if not a date."""
    if not text.isdigit() or len(text) not in (4, 6, 8):
        return None
    padded = (text + "0101")[:8] if len(text) == 4 else (text + "01")[:8]
    try:
        moved = dt.date(int(padded[:4]), int(padded[4:6]), int(padded[6:8]))
        moved += dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return moved.strftime("%Y%m%d")[: len(text)]


def shift_da(value: str, days: int) -> str:
    """Shift a DA value (also the ``A-B`` range form); unparseable → empty."""
    text = value.strip()
    if not text:
        return ""
    parts = text.split("-") if "-" in text else [text]
    shifted = [_shift_date(part.strip(), days) if part.strip() else "" for part in parts]
    if any(s is None for s in shifted):
        return ""
    return "-".join(s or "" for s in shifted)


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DT value, keeping time, fraction and UTC offset."""
    text = value.strip()
    if not text:
        return ""
    zone = ""
    for sign in ("+", "-"):
        if sign in text[4:]:
            cut = text.index(sign, 4)
            text, zone = text[:cut], text[cut:]
            break
    digits = text.split(".")[0]
    date_len = min(len(digits), 8)
    date = _shift_date(digits[:date_len], days) if date_len in (4, 6, 8) else None
    if date is None:
        return ""
    return date + text[date_len:] + zone
