"""``medfed node omop ingest-fhir DIR --cdm cdm.duckdb``: a bulk FHIR export into the CDM.

How it runs:

1. Every ``*.ndjson`` (or ``*.ndjson.gz``) file in DIR is read line by line; each line's
   ``resourceType`` says what it is (Bulk Data files are per type, but the name is not
   trusted). Types other than those mapped (:data:`TYPES`) are counted and skipped. Each
   resource is validated with the ``fhir.resources`` R4B models; a line that is not JSON or
   not a valid resource refuses the whole ingest with the file, line and field named —
   never a value — and nothing is written.
2. Patients first: each gets its pseudonym, day offset and ``person_id``
   (:mod:`.deid`). Then Encounters (so other resources can name their visit), then the
   rest, mapped by :mod:`.mapping`; a resource whose patient is not in the export is
   skipped (counted). Consents go to the opt-out register (:mod:`.consent`), not to the
   CDM.
3. Rows are appended in one DuckDB transaction to the CDM (created with
   :func:`~medfed.node.stores.omop_schema.create_cdm` when the file is new), ids after the
   largest present, with ``observation_period`` per new person spanning their events.
   A keyed hash of each resource's type and id goes to ``medfed_fhir_seen``, so a resource
   already ingested is skipped on the next batch (no FHIR id is stored).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pydantic import ValidationError

from medfed.common.errors import BadRequest
from medfed.node.ingest.fhir.consent import consent_event
from medfed.node.ingest.fhir.deid import PERSON_MAP, FhirDeid, patient_key
from medfed.node.ingest.fhir.mapping import Context, map_resource
from medfed.node.ingest.fhir.vocab import Vocabulary
from medfed.node.ingest.keys import derive_key, hmac_hex
from medfed.node.stores.omop_schema import cdm_spec, create_cdm
from medfed.node.stores.optout import ConsentEvent, OptOutRegister

__all__ = ["TYPES", "FhirReport", "ingest_fhir", "read_bundle"]

TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "Procedure",
    "ImagingStudy",
    "Consent",
)
_SEEN = "medfed_fhir_seen"
_ID_COLUMN = {
    "visit_occurrence": "visit_occurrence_id",
    "condition_occurrence": "condition_occurrence_id",
    "measurement": "measurement_id",
    "observation": "observation_id",
    "drug_exposure": "drug_exposure_id",
    "procedure_occurrence": "procedure_occurrence_id",
    "image_occurrence": "image_occurrence_id",
    "observation_period": "observation_period_id",
}
_DATE_COLUMNS = {
    "visit_occurrence": ("visit_start_date", "visit_end_date"),
    "condition_occurrence": ("condition_start_date", "condition_end_date"),
    "measurement": ("measurement_date", None),
    "observation": ("observation_date", None),
    "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date"),
    "procedure_occurrence": ("procedure_date", "procedure_end_date"),
    "image_occurrence": ("image_occurrence_date", None),
}


@dataclass
class FhirReport:
    """What an ingest did (shown on the node's machine; counts are not sent anywhere)."""

    resources: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    consents: int = 0


def _model(resource_type: str) -> Any:
    module = __import__(f"fhir.resources.R4B.{resource_type.lower()}", fromlist=[resource_type])
    return getattr(module, resource_type)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise BadRequest(f"fhir: cannot read {path.name}: {type(exc).__name__}") from None


def read_bundle(directory: Path) -> tuple[dict[str, list[Any]], Counter[str]]:
    """Validated models per mapped type, and the count of other types skipped."""
    files = sorted([*directory.glob("*.ndjson"), *directory.glob("*.ndjson.gz")])
    if not directory.is_dir() or not files:
        raise BadRequest(f"fhir: no .ndjson files in {directory}")
    found: dict[str, list[Any]] = defaultdict(list)
    other: Counter[str] = Counter()
    models = {t: _model(t) for t in TYPES}
    for path in files:
        for number, line in _lines(path):
            try:
                raw = json.loads(line)
            except ValueError:
                raise BadRequest(f"fhir: {path.name} line {number} is not JSON") from None
            kind = raw.get("resourceType") if isinstance(raw, dict) else None
            if kind not in models:
                other[str(kind)[:40]] += 1
                continue
            try:
                found[kind].append(models[kind].model_validate(raw))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or kind
                raise BadRequest(
                    f"fhir: {path.name} line {number}: {kind} is not valid R4 at '{where}' "
                    f"({first['type']})"
                ) from None
    return found, other


def _subject(resource: Any) -> str | None:
    ref = getattr(resource, "subject", None) or getattr(resource, "patient", None)
    text = str(getattr(ref, "reference", "") or "")
    return text.rsplit("/", 1)[1] if text.startswith("Patient/") else None


def ingest_fhir(
    directory: Path,
    *,
    cdm: Path,
    secret: str,
    register: OptOutRegister | None = None,
) -> FhirReport:
    """Read, de-identify, map and append one export (see the module docstring)."""
    resources, other = read_bundle(Path(directory))
    report = FhirReport(skipped=Counter({f"type {k}": v for k, v in other.items()}))
    deid = FhirDeid(secret)
    seen_key = derive_key(secret, "fhir-seen")
    con = duckdb.connect(str(cdm))
    try:
        create_cdm(con)
        deid.load_persons(con)
        con.execute(f"CREATE TABLE IF NOT EXISTS {_SEEN} (digest VARCHAR PRIMARY KEY)")
        seen = {r[0] for r in con.execute(f"SELECT digest FROM {_SEEN}").fetchall()}
        before = deid.known()
        vocab = Vocabulary(con)
        patients: dict[str, tuple[int, int, str]] = {}  # FHIR id → person, offset, pseudonym
        for patient in resources.get("Patient", []):
            key = patient_key(patient)
            pseudonym = deid.pseudonym(key)
            patients[str(patient.id)] = (deid.person_id(pseudonym), deid.offset(key), pseudonym)
        tables: dict[str, list[dict[str, Any]]] = defaultdict(list)
        new_seen: list[str] = []
        visits: dict[str, int] = {}
        next_id = _next_ids(con)
        for kind in TYPES:
            if kind == "Consent":
                continue
            for resource in resources.get(kind, []):
                report.resources[kind] += 1
                pid = str(resource.id) if kind == "Patient" else _subject(resource)
                if pid is None or pid not in patients:
                    report.skipped[f"{kind} without a Patient in the export"] += 1
                    continue
                digest = hmac_hex(seen_key, kind, str(resource.id or ""))[:32]
                if digest in seen:
                    report.skipped[f"{kind} ingested before"] += 1
                    continue
                person_id, offset, pseudonym = patients[pid]
                ctx = Context(vocab, deid, person_id, offset, pseudonym, visits)
                for table, row in map_resource(resource, ctx):
                    id_column = _ID_COLUMN.get(table)
                    if id_column is not None:
                        row[id_column] = next_id[table]
                        next_id[table] += 1
                    if kind == "Encounter" and resource.id:
                        visits[str(resource.id)] = row["visit_occurrence_id"]
                    tables[table].append(row)
                seen.add(digest)
                new_seen.append(digest)
        events = _consents(resources.get("Consent", []), patients, deid, secret)
        report.resources["Consent"] = len(resources.get("Consent", []))
        _observation_periods(tables, next_id, new_persons={i for _, i in deid.new_persons(before)})
        con.execute("BEGIN TRANSACTION")
        try:
            for table, rows in tables.items():
                _append(con, table, rows)
                report.rows[table] += len(rows)
            pairs = deid.new_persons(before)
            if pairs:
                con.executemany(f"INSERT INTO {PERSON_MAP} VALUES (?, ?)", pairs)
            if new_seen:
                con.executemany(f"INSERT INTO {_SEEN} VALUES (?)", [(d,) for d in new_seen])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    if register is not None and events:
        report.consents = register.import_events(events)
    return report


def _consents(
    consents: list[Any], patients: dict[str, tuple[int, int, str]], deid: FhirDeid, secret: str
) -> list[ConsentEvent]:
    """Register decisions; the person is the CDM person_id (text) of the patient."""
    key = derive_key(secret, "fhir-consent")

    def person(fhir_id: str) -> str | None:
        if fhir_id in patients:
            return str(patients[fhir_id][0])
        return str(deid.person_id(deid.pseudonym(fhir_id))) if fhir_id else None

    events = []
    for consent in consents:
        event = consent_event(consent, person=person, key=key)
        if event is not None:
            events.append(event)
    return events


def _next_ids(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    out = {}
    for table, column in _ID_COLUMN.items():
        row = con.execute(f'SELECT coalesce(max("{column}"), 0) FROM "{table}"').fetchone()
        out[table] = int(row[0] if row else 0) + 1
    return out


def _observation_periods(
    tables: dict[str, list[dict[str, Any]]], next_id: dict[str, int], *, new_persons: set[int]
) -> None:
    """One observation period per new person, from their first to their last event date."""
    spans: dict[int, list[Any]] = defaultdict(list)
    for table, (start, end) in _DATE_COLUMNS.items():
        for row in tables.get(table, []):
            for column in (start, end):
                if column and row.get(column) is not None:
                    spans[int(row["person_id"])].append(row[column])
    for person_id in sorted(new_persons):
        dates = spans.get(person_id)
        if not dates:
            continue
        tables["observation_period"].append(
            {
                "observation_period_id": next_id["observation_period"],
                "person_id": person_id,
                "observation_period_start_date": min(dates),
                "observation_period_end_date": max(dates),
                "period_type_concept_id": 32817,
            }
        )
        next_id["observation_period"] += 1


def _append(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    columns = [name for name, _ in cdm_spec()[table]]
    frame = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
    con.register("medfed_fhir_rows", frame)
    try:
        names = ", ".join(f'"{c}"' for c in columns)
        con.execute(f'INSERT INTO "{table}" ({names}) SELECT {names} FROM medfed_fhir_rows')
    finally:
        con.unregister("medfed_fhir_rows")
