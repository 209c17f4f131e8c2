"""FHIR R4 bulk NDJSON → OMOP CDM: clinical facts round-trip, identifiers never arrive.

Synthetic patients come from the ``carebundle`` package (offline, seeded: Patient,
Encounter, Condition, Observation, MedicationRequest); Procedure, ImagingStudy, Consent
and the identifying details (an MRN, address, telecom, a death) are hand-written edge
cases added to the same export. The vocabulary is a handful of concept rows written into
the CDM here (a standard LOINC test, an ICD-10-CM code that ``Maps to`` SNOMED, RxNorm,
UCUM, a DICOM modality). The CDM is a real DuckDB file made by ``create_cdm``.
"""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from carebundle import generate_cohort, to_ndjson

from medfed.common.errors import BadRequest
from medfed.node.ingest.dicom.deid import Deidentifier
from medfed.node.ingest.fhir.deid import FhirDeid
from medfed.node.ingest.fhir.runner import ingest_fhir, read_bundle
from medfed.node.stores.omop_schema import create_cdm
from medfed.node.stores.optout import OptOutRegister

SECRET = "mfn_fhir-test-secret"
MRN = "MRN-0042-7731"
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"

VOCAB = [  # concept_id, name, domain, vocabulary, class, standard, code
    (3019550, "Sodium", "Measurement", "LOINC", "Lab Test", "S", "2951-2"),
    (3023103, "Potassium", "Measurement", "LOINC", "Lab Test", "S", "2823-3"),
    (45548980, "Hyperlipidemia (ICD)", "Condition", "ICD10CM", "5-char code", None, "E78.5"),
    (432867, "Hyperlipidemia", "Condition", "SNOMED", "Clinical Finding", "S", "55822004"),
    (1308216, "lisinopril 10 MG", "Drug", "RxNorm", "Clinical Drug", "S", "314076"),
    (8753, "millimole per liter", "Unit", "UCUM", "Unit", "S", "mmol/L"),
    (4163872, "Appendectomy", "Procedure", "SNOMED", "Procedure", "S", "80146002"),
    (2000000300, "CT", "Meas Value", "DICOM", "Modality", "S", "CT"),
]


def _line(resource: dict[str, Any]) -> str:
    return json.dumps(resource) + "\n"


def edge_cases(patient_id: str, other_id: str) -> dict[str, str]:
    """Resources carebundle does not make, about two of its patients (and one of ours)."""
    ours = {
        "resourceType": "Patient",
        "id": "pt-edge-1",
        "identifier": [
            {"type": {"coding": [{"code": "MR"}]}, "system": "urn:hosp", "value": MRN},
            {"system": "urn:ssn", "value": "123-45-6789"},
        ],
        "name": [{"family": "Zebulonova", "given": ["Quirina"]}],
        "telecom": [{"system": "phone", "value": "+33-6-1234-5678"}],
        "address": [{"line": ["17 Rue des Tilleuls"], "city": "Montbrisonne"}],
        "gender": "female",
        "birthDate": "1950-03-04",
        "deceasedDateTime": "2024-02-10T08:00:00Z",
    }
    ref = {"reference": "Patient/pt-edge-1"}
    procedure = {
        "resourceType": "Procedure",
        "id": "proc-1",
        "status": "completed",
        "subject": ref,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
        "performedPeriod": {"start": "2023-05-01T10:00:00Z", "end": "2023-05-01T11:30:00Z"},
    }
    local_code = {
        "resourceType": "Condition",
        "id": "cond-local",
        "subject": ref,
        "code": {"coding": [{"system": "urn:hosp:local", "code": MRN}], "text": "Zebulonova"},
        "onsetDateTime": "2022-01-01",
    }
    coded = {
        "resourceType": "Observation",
        "id": "obs-coded",
        "status": "final",
        "subject": ref,
        "code": {"coding": [{"system": "http://loinc.org", "code": "72166-2"}]},
        "valueCodeableConcept": {
            "coding": [{"system": "http://snomed.info/sct", "code": "8517006"}]
        },
        "effectiveDateTime": "2023-06-01",
    }
    imaging = {
        "resourceType": "ImagingStudy",
        "id": "img-1",
        "status": "available",
        "subject": ref,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY}"}],
        "started": "2023-05-02T09:00:00Z",
        "series": [
            {
                "uid": SERIES,
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "CT",
                },
            }
        ],
    }

    def consent(cid: str, who: str, kind: str, when: str, purpose: str = "HRESERCH") -> str:
        return _line(
            {
                "resourceType": "Consent",
                "id": cid,
                "status": "active",
                "scope": {"coding": [{"code": "research"}]},
                "category": [{"coding": [{"code": "research"}]}],
                "patient": {"reference": f"Patient/{who}"},
                "dateTime": when,
                "provision": {
                    "type": kind,
                    "purpose": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                            "code": purpose,
                        }
                    ],
                },
            }
        )

    consents = (
        consent("c1", "pt-edge-1", "deny", "2024-01-01T00:00:00Z")
        + consent("c2", patient_id, "deny", "2024-01-01T00:00:00Z")
        + consent("c3", patient_id, "permit", "2024-06-01T00:00:00Z")  # later: back in
        + consent("c4", other_id, "permit", "2023-01-01T00:00:00Z")
        + consent("c5", other_id, "deny", "2023-06-01T00:00:00Z")  # later deny: out
    )
    return {
        "Patient.edge.ndjson": _line(ours),
        "Procedure.ndjson": _line(procedure),
        "Condition.edge.ndjson": _line(local_code),
        "Observation.edge.ndjson": _line(coded),
        "ImagingStudy.ndjson": _line(imaging),
        "Consent.ndjson": consents,
    }


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fhir") / "export"
    root.mkdir()
    streams = to_ndjson(generate_cohort(count=8, seed=7))
    for kind, text in streams.items():
        (root / f"{kind}.ndjson").write_text(text)
    patients = [json.loads(line) for line in streams["Patient"].splitlines()]
    for name, text in edge_cases(patients[0]["id"], patients[1]["id"]).items():
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def ingested(export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cdm")
    cdm = root / "cdm.duckdb"
    con = duckdb.connect(str(cdm))
    create_cdm(con)
    con.executemany(
        "INSERT INTO concept (concept_id, concept_name, domain_id, vocabulary_id, "
        "concept_class_id, standard_concept, concept_code, valid_start_date, valid_end_date) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, DATE '1970-01-01', DATE '2099-12-31')",
        VOCAB,
    )
    con.execute(
        "INSERT INTO concept_relationship VALUES "
        "(45548980, 432867, 'Maps to', DATE '1970-01-01', DATE '2099-12-31', NULL)"
    )
    con.close()
    register = OptOutRegister(root / "optout.sqlite3", secret=SECRET)
    report = ingest_fhir(export, cdm=cdm, secret=SECRET, register=register)
    return {"cdm": cdm, "register": register, "report": report}


def _query(cdm: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(cdm), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _patients(export: Path) -> dict[str, tuple[int, int, str]]:
    """FHIR id → (person_id, offset, pseudonym), computed independently of the CDM."""
    resources, _ = read_bundle(export)
    deid = FhirDeid(SECRET)
    out = {}
    for p in resources["Patient"]:
        mrn = [i.value for i in p.identifier or [] if i.type and i.type.coding[0].code == "MR"]
        key = mrn[0] if mrn else (p.identifier[0].value if p.identifier else p.id)
        out[str(p.id)] = (0, deid.offset(key), deid.pseudonym(key))
    return out


def _person_of(cdm: Path, pseudonym: str) -> int:
    rows = _query(cdm, "SELECT person_id FROM person WHERE person_source_value = ?", [pseudonym])
    assert len(rows) == 1
    return int(rows[0][0])


def _raw(export: Path, kind: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted(export.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if item["resourceType"] == kind:
                found.append(item)
    return found


def _day(text: str) -> date:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).date()


def test_every_resource_type_is_read_and_mapped(ingested: dict[str, Any]) -> None:
    report = ingested["report"]
    for kind in ("Patient", "Encounter", "Condition", "Observation", "MedicationRequest"):
        assert report.resources[kind] > 0, kind
    assert report.resources["Procedure"] == report.resources["ImagingStudy"] == 1
    assert report.skipped["type Practitioner"] > 0  # other types are counted, not mapped
    for table in ("person", "visit_occurrence", "condition_occurrence", "measurement"):
        assert report.rows[table] > 0, table
    for table in ("drug_exposure", "procedure_occurrence", "image_occurrence", "death"):
        assert report.rows[table] > 0, table


def test_patients_and_their_dates_shift_by_one_keyed_offset(
    export: Path, ingested: dict[str, Any]
) -> None:
    cdm = ingested["cdm"]
    patients = _patients(export)
    for raw in _raw(export, "Patient"):
        _, offset, pseudonym = patients[raw["id"]]
        assert 1 <= abs(offset) <= 365
        person = _person_of(cdm, pseudonym)
        born = date.fromisoformat(raw["birthDate"]) + timedelta(days=offset)
        row = _query(
            cdm,
            "SELECT gender_concept_id, year_of_birth, month_of_birth, day_of_birth "
            "FROM person WHERE person_id = ?",
            [person],
        )[0]
        assert row == (
            {"male": 8507, "female": 8532}[raw["gender"]],
            born.year,
            born.month,
            born.day,
        )
    edge = patients["pt-edge-1"]
    died = _query(
        cdm, "SELECT death_date FROM death WHERE person_id = ?", [_person_of(cdm, edge[2])]
    )
    assert died == [(date(2024, 2, 10) + timedelta(days=edge[1]),)]


def test_measurements_round_trip_code_value_unit_and_shifted_date(
    export: Path, ingested: dict[str, Any]
) -> None:
    cdm = ingested["cdm"]
    patients = _patients(export)
    con = duckdb.connect(str(cdm), read_only=True)
    try:
        table = con.execute(
            "SELECT m.*, p.person_source_value FROM measurement m JOIN person p USING (person_id)"
        ).df()
    finally:
        con.close()
    found = {
        (r.person_source_value, r.measurement_source_value, r.measurement_date.date()): r
        for r in table.itertuples()
    }
    checked = 0
    for raw in _raw(export, "Observation"):
        quantity = raw.get("valueQuantity")
        if quantity is None:
            continue
        _, offset, pseudonym = patients[raw["subject"]["reference"].split("/")[1]]
        code = raw["code"]["coding"][0]["code"]
        when = _day(raw["effectiveDateTime"]) + timedelta(offset)
        row = found[(pseudonym, code, when)]
        assert row.measurement_concept_id == {"2951-2": 3019550, "2823-3": 3023103}.get(code, 0)
        assert row.value_as_number == float(quantity["value"])
        assert row.unit_source_value == quantity["code"]
        assert row.unit_concept_id == (8753 if quantity["code"] == "mmol/L" else 0)
        checked += 1
    assert checked > 50 and checked == len(table)


def test_conditions_drugs_visits_procedures_and_images_round_trip(
    export: Path, ingested: dict[str, Any]
) -> None:
    cdm = ingested["cdm"]
    patients = _patients(export)
    for raw in _raw(export, "Condition"):
        if raw["id"] == "cond-local":
            continue
        _, offset, pseudonym = patients[raw["subject"]["reference"].split("/")[1]]
        code = raw["code"]["coding"][0]["code"]
        rows = _query(
            cdm,
            "SELECT condition_concept_id, condition_source_concept_id FROM condition_occurrence "
            "WHERE person_id = ? AND condition_source_value = ? AND condition_start_date = ?",
            [_person_of(cdm, pseudonym), code, _day(raw["onsetDateTime"]) + timedelta(offset)],
        )
        expected = (432867, 45548980) if code == "E78.5" else (0, 0)  # ICD-10-CM Maps to SNOMED
        assert expected in rows, code
    for raw in _raw(export, "MedicationRequest"):
        _, offset, pseudonym = patients[raw["subject"]["reference"].split("/")[1]]
        code = raw["medicationCodeableConcept"]["coding"][0]["code"]
        rows = _query(
            cdm,
            "SELECT drug_concept_id FROM drug_exposure WHERE person_id = ? "
            "AND drug_source_value = ? AND drug_exposure_start_date = ?",
            [_person_of(cdm, pseudonym), code, _day(raw["authoredOn"]) + timedelta(offset)],
        )
        assert rows and rows[0][0] == (1308216 if code == "314076" else 0)
    for raw in _raw(export, "Encounter"):
        _, offset, pseudonym = patients[raw["subject"]["reference"].split("/")[1]]
        rows = _query(
            cdm,
            "SELECT visit_concept_id FROM visit_occurrence WHERE person_id = ? "
            "AND visit_start_date = ?",
            [_person_of(cdm, pseudonym), _day(raw["period"]["start"]) + timedelta(offset)],
        )
        assert (9202,) in rows  # AMB → outpatient visit
    _, offset, pseudonym = patients["pt-edge-1"]
    person = _person_of(cdm, pseudonym)
    proc = _query(
        cdm,
        "SELECT procedure_concept_id, procedure_date, procedure_end_date "
        "FROM procedure_occurrence WHERE person_id = ?",
        [person],
    )
    shifted = date(2023, 5, 1) + timedelta(offset)
    assert proc == [(4163872, shifted, shifted)]
    image = _query(
        cdm,
        "SELECT image_occurrence_date, image_study_uid, image_series_uid, modality_concept_id "
        "FROM image_occurrence WHERE person_id = ?",
        [person],
    )
    dicom = Deidentifier(SECRET)
    assert image == [
        (
            date(2023, 5, 2) + timedelta(offset),
            dicom.uids.map(STUDY),
            dicom.uids.map(SERIES),
            2000000300,
        )
    ]
    # the DICOM ingest's pseudonym and date offset of the same MRN are the CDM's
    assert dicom.pseudonym(MRN) == pseudonym and dicom.date_offset(MRN) == offset
    coded = _query(
        cdm,
        "SELECT observation_concept_id, observation_source_value, value_source_value "
        "FROM observation WHERE person_id = ?",
        [person],
    )
    assert coded == [(0, "72166-2", "8517006")]  # unmapped: concept 0, the LOINC code kept


def test_no_identifier_reaches_the_cdm(export: Path, ingested: dict[str, Any]) -> None:
    secrets: set[str] = set()
    for path in export.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            secrets.add(item["id"])
            for ident in item.get("identifier", []):
                secrets.add(ident["value"])
                secrets.add(ident["value"].removeprefix("urn:oid:"))
            if item["resourceType"] == "Patient":
                for name in item.get("name", []):
                    secrets.update([name["family"], *name.get("given", [])])
                for address in item.get("address", []):
                    secrets.update([*address.get("line", []), address.get("city", "")])
                secrets.update(t["value"] for t in item.get("telecom", []))
    secrets.add(SERIES)
    secrets.discard("")
    con = duckdb.connect(str(ingested["cdm"]), read_only=True)
    try:
        columns = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'VARCHAR'"
        ).fetchall()
        scanned = 0
        for table, column in columns:
            values = con.execute(f'SELECT DISTINCT "{column}" FROM "{table}"').fetchall()
            for (value,) in values:
                if value is None:
                    continue
                scanned += 1
                assert not any(s in value for s in secrets if len(s) >= 4), (table, column)
    finally:
        con.close()
    assert scanned > 20
    local = _query(
        ingested["cdm"],
        "SELECT condition_concept_id, condition_source_value FROM condition_occurrence "
        "WHERE condition_source_concept_id = 0 AND condition_source_value IS NULL",
    )
    assert local == [(0, None)]  # a code of an unknown system may be an identifier: dropped


def test_consents_reach_the_register_latest_decision_wins(
    export: Path, ingested: dict[str, Any]
) -> None:
    cdm, register = ingested["cdm"], ingested["register"]
    patients = _patients(export)
    ids = {fhir: str(_person_of(cdm, p[2])) for fhir, p in patients.items()}
    first, second = [p["id"] for p in _raw(export, "Patient") if p["id"] != "pt-edge-1"][:2]
    excluded = register.excluded()
    assert ids["pt-edge-1"] in excluded  # deny
    assert ids[second] in excluded  # permit, then a later deny
    assert ids[first] not in excluded  # deny, then a later permit
    assert len(excluded) == 2


def test_a_second_ingest_of_the_same_export_adds_nothing(
    export: Path, ingested: dict[str, Any]
) -> None:
    cdm = ingested["cdm"]
    before = _query(cdm, "SELECT count(*) FROM measurement")[0][0]
    report = ingest_fhir(export, cdm=cdm, secret=SECRET, register=ingested["register"])
    assert sum(report.rows.values()) == 0 and report.consents == 0
    assert _query(cdm, "SELECT count(*) FROM measurement")[0][0] == before


def test_a_bad_line_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    good = {"resourceType": "Patient", "id": "a", "gender": "female"}
    bad = {"resourceType": "Observation", "id": "o", "status": "final", "code": 7}
    (folder / "x.ndjson").write_text(_line(good) + _line(bad))
    cdm = tmp_path / "cdm.duckdb"
    with pytest.raises(BadRequest, match=r"x\.ndjson line 2: Observation is not valid R4 at 'code"):
        ingest_fhir(folder, cdm=cdm, secret=SECRET)
    assert not cdm.exists()
    (folder / "x.ndjson").write_text(_line(good) + "{not json\n")
    with pytest.raises(BadRequest, match=r"x\.ndjson line 2 is not JSON"):
        ingest_fhir(folder, cdm=cdm, secret=SECRET)


def _cdm_with_vocabulary(path: Path) -> Path:
    con = duckdb.connect(str(path))
    create_cdm(con)
    con.executemany(
        "INSERT INTO concept (concept_id, concept_name, domain_id, vocabulary_id, "
        "concept_class_id, standard_concept, concept_code, valid_start_date, valid_end_date) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, DATE '1970-01-01', DATE '2099-12-31')",
        VOCAB,
    )
    con.close()
    return path


def _cdm_tables(cdm: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(cdm), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {t: con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall() for t in names}
    finally:
        con.close()


def test_small_batches_stream_into_the_same_cdm_as_one_batch(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    streams = to_ndjson(generate_cohort(count=20, seed=11))
    for kind, text in streams.items():
        if kind == "Observation":  # one file compressed, as bulk exports may be
            (export / f"{kind}.ndjson.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (export / f"{kind}.ndjson").write_text(text)
    patients = [json.loads(line) for line in streams["Patient"].splitlines()]
    for name, text in edge_cases(patients[0]["id"], patients[1]["id"]).items():
        (export / name).write_text(text)

    whole = _cdm_with_vocabulary(tmp_path / "whole.duckdb")
    small = _cdm_with_vocabulary(tmp_path / "small.duckdb")
    one = ingest_fhir(export, cdm=whole, secret=SECRET, batch_size=None)
    many = ingest_fhir(export, cdm=small, secret=SECRET, batch_size=7)

    assert one == many
    assert one.rows["measurement"] > 7 * 10  # many batches of 7 rows each
    expected, got = _cdm_tables(whole), _cdm_tables(small)
    assert set(got) == set(expected)
    for table, rows in expected.items():
        assert got[table] == rows, table
    with pytest.raises(BadRequest, match="batch size"):
        ingest_fhir(export, cdm=small, secret=SECRET, batch_size=0)
