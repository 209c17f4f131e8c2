"""De-identification of FHIR resources on their way into the CDM: keys, dates, persons.

How it runs: one :class:`FhirDeid` per ingest, built from the node secret.

* The patient key is the Patient's medical record number (the ``identifier`` whose type
  is ``MR``), else its first identifier's value, else its resource id — the value the
  DICOM ingest sees as PatientID at the same hospital. From it come the node's one patient
  pseudonym (:func:`medfed.node.ingest.keys.patient_pseudonym`) and the per-patient day
  offset (:func:`medfed.node.ingest.dicom.dates.patient_offset`: a whole number of days in
  [-365, -1] or [1, 365], keyed, the same for every resource of the patient and for the
  patient's DICOM studies), so images and clinical rows of one patient share both.
* ``person_id`` (a 32-bit CDM integer) is taken from the pseudonym by a keyed hash; the CDM
  keeps the pairs in ``medfed_person_map`` so that the rare collision of two pseudonyms
  is resolved once (the next candidate) and every later batch gets the same answer.
* Study and series UIDs become the DICOM ingest's keyed UIDs (``2.25.…``), so
  ``image_occurrence`` joins the imaging index on them. Nothing else of a resource's
  identity (FHIR ids, identifiers, names, addresses, telecom, free text) is kept.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb

from medfed.node.ingest.dicom.dates import patient_offset
from medfed.node.ingest.dicom.uids import UidMapper
from medfed.node.ingest.keys import derive_key, hmac_hex, patient_pseudonym

__all__ = ["PERSON_MAP", "FhirDeid", "as_datetime", "patient_key", "shift_date", "shift_datetime"]

PERSON_MAP = "medfed_person_map"
_MAX_ID = 2**31 - 1


def patient_key(patient: Any) -> str:
    """The hospital's identity of a Patient model: MRN, first identifier, else its id."""
    identifiers = list(getattr(patient, "identifier", None) or [])
    for ident in identifiers:
        codings = getattr(getattr(ident, "type", None), "coding", None) or []
        if any(getattr(c, "code", None) == "MR" for c in codings) and ident.value:
            return str(ident.value).strip()
    for ident in identifiers:
        if ident.value:
            return str(ident.value).strip()
    return str(patient.id or "").strip()


class FhirDeid:
    """Keyed pseudonyms, date offsets, person ids and UIDs for one node secret."""

    def __init__(self, secret: str) -> None:
        self._patient_key = derive_key(secret, "patient-pseudonym")
        self._date_key = derive_key(secret, "date-offset")
        self._person_key = derive_key(secret, "omop-person-id")
        self.uids = UidMapper(derive_key(secret, "dicom-uid"))
        self._persons: dict[str, int] = {}
        self._taken: set[int] = set()

    def pseudonym(self, key: str) -> str:
        return patient_pseudonym(self._patient_key, key)

    def offset(self, key: str) -> int:
        return patient_offset(self._date_key, key.strip())

    def load_persons(self, con: duckdb.DuckDBPyConnection) -> None:
        """Read the pseudonym → person_id pairs an earlier batch stored in the CDM."""
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {PERSON_MAP} "
            "(pseudonym VARCHAR PRIMARY KEY, person_id INTEGER UNIQUE)"
        )
        for pseudonym, person_id in con.execute(f"SELECT * FROM {PERSON_MAP}").fetchall():
            self._persons[str(pseudonym)] = int(person_id)
            self._taken.add(int(person_id))

    def person_id(self, pseudonym: str) -> int:
        """The CDM person_id of a pseudonym: keyed, the next candidate on a collision."""
        known = self._persons.get(pseudonym)
        if known is not None:
            return known
        attempt = 0
        while True:
            value = int(hmac_hex(self._person_key, pseudonym, str(attempt))[:16], 16)
            candidate = value % _MAX_ID + 1
            if candidate not in self._taken:
                break
            attempt += 1
        self._persons[pseudonym] = candidate
        self._taken.add(candidate)
        return candidate

    def new_persons(self, before: set[str]) -> list[tuple[str, int]]:
        return [(p, i) for p, i in self._persons.items() if p not in before]

    def known(self) -> set[str]:
        return set(self._persons)

    def resolve(self) -> dict[str, int]:
        return dict(self._persons)


def shift_date(value: Any, days: int) -> dt.date | None:
    """A FHIR date or dateTime moved by ``days`` (time zone dropped: the CDM is local)."""
    moment = as_datetime(value)
    return None if moment is None else (moment + dt.timedelta(days=days)).date()


def shift_datetime(value: Any, days: int) -> dt.datetime | None:
    moment = as_datetime(value)
    return None if moment is None else moment + dt.timedelta(days=days)


def as_datetime(value: Any) -> dt.datetime | None:
    """A FHIR date/dateTime (a Python date, datetime or partial text) as a naive datetime."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    text = str(value)
    try:
        if len(text) == 4:
            return dt.datetime(int(text), 1, 1)
        if len(text) == 7:
            return dt.datetime(int(text[:4]), int(text[5:7]), 1)
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        return None
