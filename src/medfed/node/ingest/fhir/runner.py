"""``medfed node omop ingest-fhir DIR --cdm cdm.duckdb``: a bulk FHIR export into the CDM.

How it runs:

1. The export is read and validated once, line by line, into a per-type spool on disk
   (:class:`~.bundle.Spool`): each line's ``resourceType`` says what it is, types other
   than those mapped (:data:`TYPES`) are counted and skipped, and a line that is not JSON
   or not a valid resource refuses the whole ingest with the file, line and field named —
   never a value — before the CDM is opened, so nothing is written.
2. Patients first: each gets its pseudonym, day offset and ``person_id``
   (:mod:`.deid`). Then Encounters (so other resources can name their visit), then the
   rest, mapped by :mod:`.mapping`, each type streamed back from the spool one resource
   at a time; a resource whose patient is not in the export is skipped (counted).
   Consents go to the opt-out register (:mod:`.consent`), not to the CDM.
3. Rows are appended inside one DuckDB transaction to the CDM (created with
   :func:`~medfed.node.stores.omop_schema.create_cdm` when the file is new), ids after the
   largest present, in batches of at most ``batch_size`` rows per table, so memory stays
   bounded by the batch size (plus a small key per patient, encounter and resource: the
   person and visit maps and the set of resources seen). ``observation_period`` per new
   person spans their events (a running first and last date per person). A keyed hash of
   each resource's type and id goes to ``medfed_fhir_seen``, so a resource already
   ingested is skipped on the next batch (no FHIR id is stored). Any error rolls the
   transaction back: nothing of the export is kept.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from medfed.common.errors import BadRequest
from medfed.node.ingest.fhir.bundle import TYPES, Spool, read_bundle
from medfed.node.ingest.fhir.consent import consent_event
from medfed.node.ingest.fhir.deid import PERSON_MAP, FhirDeid, patient_key
from medfed.node.ingest.fhir.mapping import Context, map_resource
from medfed.node.ingest.fhir.vocab import Vocabulary
from medfed.node.ingest.keys import derive_key, hmac_hex
from medfed.node.stores.omop_schema import cdm_spec, create_cdm
from medfed.node.stores.optout import ConsentEvent, OptOutRegister

__all__ = ["BATCH_ROWS", "TYPES", "FhirReport", "ingest_fhir", "read_bundle"]

#: rows per table buffered before they are appended to the CDM
BATCH_ROWS = 20_000
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


class _Writer:
    """Buffers mapped rows per table and appends them in batches; tracks each person's span."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, batch_size: int | None, report: FhirReport
    ) -> None:
        self.con = con
        self.batch_size = batch_size
        self.report = report
        self.buffers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.seen: list[str] = []
        #: person_id → [first, last] event date of this ingest
        self.spans: dict[int, list[dt.date]] = {}

    def add(self, table: str, row: dict[str, Any]) -> None:
        for column in _DATE_COLUMNS.get(table, ()):
            value = row.get(column) if column else None
            if value is not None:
                span = self.spans.setdefault(int(row["person_id"]), [value, value])
                span[0] = min(span[0], value)
                span[1] = max(span[1], value)
        rows = self.buffers[table]
        rows.append(row)
        if self.batch_size is not None and len(rows) >= self.batch_size:
            self.flush(table)

    def saw(self, digest: str) -> None:
        self.seen.append(digest)
        if self.batch_size is not None and len(self.seen) >= self.batch_size:
            self.flush_seen()

    def flush(self, table: str) -> None:
        rows = self.buffers.pop(table, [])
        if rows:
            _append(self.con, table, rows)
            self.report.rows[table] += len(rows)

    def flush_seen(self) -> None:
        if self.seen:
            frame = pd.DataFrame({"digest": self.seen})
            self.con.register("medfed_fhir_digests", frame)
            try:
                self.con.execute(f"INSERT INTO {_SEEN} SELECT digest FROM medfed_fhir_digests")
            finally:
                self.con.unregister("medfed_fhir_digests")
            self.seen = []

    def flush_all(self) -> None:
        for table in list(self.buffers):
            self.flush(table)
        self.flush_seen()


def ingest_fhir(
    directory: Path,
    *,
    cdm: Path,
    secret: str,
    register: OptOutRegister | None = None,
    batch_size: int | None = BATCH_ROWS,
) -> FhirReport:
    """Read, de-identify, map and append one export (see the module docstring).

    ``batch_size``: rows per table buffered before an append (None: no limit).
    """
    if batch_size is not None and batch_size < 1:
        raise BadRequest("fhir: the batch size must be at least 1 row")
    with Spool(Path(directory)) as spool:
        report = FhirReport(skipped=Counter({f"type {k}": v for k, v in spool.other.items()}))
        con = duckdb.connect(str(cdm))
        try:
            events = _ingest(spool, con, secret, report, batch_size)
        finally:
            con.close()
    if register is not None and events:
        report.consents = register.import_events(events)
    return report


def _ingest(
    spool: Spool,
    con: duckdb.DuckDBPyConnection,
    secret: str,
    report: FhirReport,
    batch_size: int | None,
) -> list[ConsentEvent]:
    """Map the spooled export into ``con`` in one transaction; the Consents' events."""
    deid = FhirDeid(secret)
    seen_key = derive_key(secret, "fhir-seen")
    create_cdm(con)
    deid.load_persons(con)
    con.execute(f"CREATE TABLE IF NOT EXISTS {_SEEN} (digest VARCHAR PRIMARY KEY)")
    seen = {r[0] for r in con.execute(f"SELECT digest FROM {_SEEN}").fetchall()}
    before = deid.known()
    vocab = Vocabulary(con)
    patients: dict[str, tuple[int, int, str]] = {}  # FHIR id → person, offset, pseudonym
    for patient in spool.items("Patient"):
        key = patient_key(patient)
        pseudonym = deid.pseudonym(key)
        patients[str(patient.id)] = (deid.person_id(pseudonym), deid.offset(key), pseudonym)
    visits: dict[str, int] = {}
    next_id = _next_ids(con)
    writer = _Writer(con, batch_size, report)
    con.execute("BEGIN TRANSACTION")
    try:
        for kind in TYPES:
            if kind == "Consent":
                continue
            for resource in spool.items(kind):
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
                    writer.add(table, row)
                seen.add(digest)
                writer.saw(digest)
        events = _consents(spool.items("Consent"), patients, deid, secret)
        report.resources["Consent"] = spool.counts["Consent"]
        pairs = deid.new_persons(before)
        _observation_periods(writer, next_id, new_persons={i for _, i in pairs})
        writer.flush_all()
        if pairs:
            con.executemany(f"INSERT INTO {PERSON_MAP} VALUES (?, ?)", pairs)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return events


def _subject(resource: Any) -> str | None:
    ref = getattr(resource, "subject", None) or getattr(resource, "patient", None)
    text = str(getattr(ref, "reference", "") or "")
    return text.rsplit("/", 1)[1] if text.startswith("Patient/") else None


def _consents(
    consents: Iterable[Any], patients: dict[str, tuple[int, int, str]], deid: FhirDeid, secret: str
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
    writer: _Writer, next_id: dict[str, int], *, new_persons: set[int]
) -> None:
    """One observation period per new person, from their first to their last event date."""
    for person_id in sorted(new_persons):
        span = writer.spans.get(person_id)
        if span is None:
            continue
        writer.add(
            "observation_period",
            {
                "observation_period_id": next_id["observation_period"],
                "person_id": person_id,
                "observation_period_start_date": span[0],
                "observation_period_end_date": span[1],
                "period_type_concept_id": 32817,
            },
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
