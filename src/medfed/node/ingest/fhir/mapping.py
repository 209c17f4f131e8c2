"""One FHIR R4 resource → CDM rows (plain dicts), de-identified.

How it runs: :func:`map_resource` dispatches on the resource type. Each mapper reads the
clinical facts only — codes (through :class:`~.vocab.Vocabulary`), values, units, and
dates moved by the patient's offset (:mod:`.deid`) — and never copies an id, identifier,
name, address, telecom, reference text or narrative. Type concepts are fixed: 32817 (EHR)
for events, 32838 (EHR prescription) for MedicationRequest.

===================  ========================  =============================================
FHIR                 CDM table                 facts
===================  ========================  =============================================
Patient              person (+ death)          gender, birth date (shifted), deceased date
Encounter            visit_occurrence          class (AMB 9202, IMP 9201, EMER 9203), period
Condition            condition_occurrence      code, onset/recorded date, abatement date
Observation          measurement               code, valueQuantity (value, UCUM unit), date
Observation (other)  observation               code, valueCodeableConcept, date
MedicationRequest    drug_exposure             medication code, authoredOn, validity end
Procedure            procedure_occurrence      code, performed date or period
ImagingStudy         image_occurrence          started date, keyed study/series UIDs,
                                               modality (DICOM vocabulary)
===================  ========================  =============================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medfed.node.ingest.fhir.deid import FhirDeid, shift_date, shift_datetime
from medfed.node.ingest.fhir.vocab import Vocabulary

__all__ = ["EHR", "Context", "Row", "map_resource"]

EHR = 32817
EHR_PRESCRIPTION = 32838
GENDER = {"male": 8507, "female": 8532}
VISIT_CLASS = {"AMB": 9202, "IMP": 9201, "EMER": 9203, "ACUTE": 9201, "HH": 581476}

Row = tuple[str, dict[str, Any]]


@dataclass
class Context:
    """What the mappers need about the current patient and the batch."""

    vocab: Vocabulary
    deid: FhirDeid
    person_id: int
    offset: int
    #: the patient's keyed pseudonym (``P`` + 16 hex): person_source_value, the DICOM link
    pseudonym: str
    #: FHIR Encounter id → visit_occurrence_id (this batch); never written to the CDM
    visits: dict[str, int] = field(default_factory=dict)


def _ref_id(reference: Any) -> str | None:
    text = getattr(reference, "reference", None)
    if not text or "/" not in str(text):
        return None
    return str(text).rsplit("/", 1)[1]


def _visit(resource: Any, ctx: Context) -> int | None:
    encounter = _ref_id(getattr(resource, "encounter", None))
    return ctx.visits.get(encounter) if encounter else None


def _person(r: Any, ctx: Context) -> list[Row]:
    born = shift_datetime(r.birthDate, ctx.offset)
    gender = str(r.gender) if r.gender else None
    rows: list[Row] = [
        (
            "person",
            {
                "person_id": ctx.person_id,
                "gender_concept_id": GENDER.get(gender or "", 0),
                "year_of_birth": born.year if born else None,
                "month_of_birth": born.month if born else None,
                "day_of_birth": born.day if born else None,
                "birth_datetime": born,
                "race_concept_id": 0,
                "ethnicity_concept_id": 0,
                "person_source_value": ctx.pseudonym,
                "gender_source_value": gender,
            },
        )
    ]
    died = shift_datetime(getattr(r, "deceasedDateTime", None), ctx.offset)
    if died is not None:
        rows.append(
            (
                "death",
                {
                    "person_id": ctx.person_id,
                    "death_date": died.date(),
                    "death_datetime": died,
                    "death_type_concept_id": EHR,
                },
            )
        )
    return rows


def _encounter(r: Any, ctx: Context) -> list[Row]:
    period = r.period
    start = shift_datetime(getattr(period, "start", None), ctx.offset)
    end = shift_datetime(getattr(period, "end", None), ctx.offset) or start
    klass = getattr(r, "class_fhir", None) or getattr(r, "class", None)
    code = str(getattr(klass, "code", "") or "")
    row = {
        "person_id": ctx.person_id,
        "visit_concept_id": VISIT_CLASS.get(code, 0),
        "visit_start_date": start.date() if start else None,
        "visit_start_datetime": start,
        "visit_end_date": end.date() if end else None,
        "visit_end_datetime": end,
        "visit_type_concept_id": EHR,
        "visit_source_value": code if code in VISIT_CLASS else None,
    }
    return [("visit_occurrence", row)]


def _condition(r: Any, ctx: Context) -> list[Row]:
    concept = ctx.vocab.concept(r.code)
    start = shift_datetime(getattr(r, "onsetDateTime", None) or r.recordedDate, ctx.offset)
    end = shift_datetime(getattr(r, "abatementDateTime", None), ctx.offset)
    row = {
        "person_id": ctx.person_id,
        "condition_concept_id": concept.concept_id,
        "condition_start_date": start.date() if start else None,
        "condition_start_datetime": start,
        "condition_end_date": end.date() if end else None,
        "condition_end_datetime": end,
        "condition_type_concept_id": EHR,
        "visit_occurrence_id": _visit(r, ctx),
        "condition_source_value": concept.source_value,
        "condition_source_concept_id": concept.source_concept_id,
    }
    return [("condition_occurrence", row)]


def _observation(r: Any, ctx: Context) -> list[Row]:
    concept = ctx.vocab.concept(r.code)
    when = shift_datetime(
        getattr(r, "effectiveDateTime", None)
        or getattr(getattr(r, "effectivePeriod", None), "start", None)
        or getattr(r, "issued", None),
        ctx.offset,
    )
    quantity = getattr(r, "valueQuantity", None)
    if quantity is not None and quantity.value is not None:
        unit_code = str(quantity.code or quantity.unit or "") or None
        unit = ctx.vocab.unit(unit_code)
        row = {
            "person_id": ctx.person_id,
            "measurement_concept_id": concept.concept_id,
            "measurement_date": when.date() if when else None,
            "measurement_datetime": when,
            "measurement_type_concept_id": EHR,
            "value_as_number": float(quantity.value),
            "unit_concept_id": unit.concept_id,
            "visit_occurrence_id": _visit(r, ctx),
            "measurement_source_value": concept.source_value,
            "measurement_source_concept_id": concept.source_concept_id,
            "unit_source_value": unit.source_value,
        }
        return [("measurement", row)]
    value = getattr(r, "valueCodeableConcept", None)
    answer = ctx.vocab.concept(value) if value is not None else None
    row = {
        "person_id": ctx.person_id,
        "observation_concept_id": concept.concept_id,
        "observation_date": when.date() if when else None,
        "observation_datetime": when,
        "observation_type_concept_id": EHR,
        "value_as_concept_id": answer.concept_id if answer else None,
        "visit_occurrence_id": _visit(r, ctx),
        "observation_source_value": concept.source_value,
        "observation_source_concept_id": concept.source_concept_id,
        "value_source_value": answer.source_value if answer else None,
    }
    return [("observation", row)]


def _medication(r: Any, ctx: Context) -> list[Row]:
    concept = ctx.vocab.concept(getattr(r, "medicationCodeableConcept", None))
    start = shift_datetime(r.authoredOn, ctx.offset)
    validity = getattr(getattr(r, "dispenseRequest", None), "validityPeriod", None)
    end = shift_datetime(getattr(validity, "end", None), ctx.offset) or start
    row = {
        "person_id": ctx.person_id,
        "drug_concept_id": concept.concept_id,
        "drug_exposure_start_date": start.date() if start else None,
        "drug_exposure_start_datetime": start,
        "drug_exposure_end_date": end.date() if end else None,
        "drug_exposure_end_datetime": end,
        "drug_type_concept_id": EHR_PRESCRIPTION,
        "visit_occurrence_id": _visit(r, ctx),
        "drug_source_value": concept.source_value,
        "drug_source_concept_id": concept.source_concept_id,
    }
    return [("drug_exposure", row)]


def _procedure(r: Any, ctx: Context) -> list[Row]:
    concept = ctx.vocab.concept(r.code)
    period = getattr(r, "performedPeriod", None)
    start = shift_datetime(
        getattr(r, "performedDateTime", None) or getattr(period, "start", None), ctx.offset
    )
    end = shift_datetime(getattr(period, "end", None), ctx.offset)
    row = {
        "person_id": ctx.person_id,
        "procedure_concept_id": concept.concept_id,
        "procedure_date": start.date() if start else None,
        "procedure_datetime": start,
        "procedure_end_date": end.date() if end else None,
        "procedure_end_datetime": end,
        "procedure_type_concept_id": EHR,
        "visit_occurrence_id": _visit(r, ctx),
        "procedure_source_value": concept.source_value,
        "procedure_source_concept_id": concept.source_concept_id,
    }
    return [("procedure_occurrence", row)]


def _study_uid(r: Any) -> str | None:
    for ident in getattr(r, "identifier", None) or []:
        value = str(ident.value or "")
        if str(ident.system or "") == "urn:dietf:rfc:3986" or value.startswith("urn:oid:"):
            return value.removeprefix("urn:oid:")
    return None


def _imaging(r: Any, ctx: Context) -> list[Row]:
    started = shift_date(r.started, ctx.offset)
    study = _study_uid(r)
    rows: list[Row] = []
    series = list(getattr(r, "series", None) or []) or [None]
    for item in series:
        modality = getattr(item, "modality", None) if item is not None else None
        if modality is None:
            modality = (list(getattr(r, "modality", None) or []) or [None])[0]
        concept = (
            ctx.vocab.lookup("DICOM", str(modality.code))
            if modality is not None and modality.code
            else None
        )
        uid = str(item.uid) if item is not None and item.uid else None
        row = {
            "person_id": ctx.person_id,
            "visit_occurrence_id": _visit(r, ctx),
            "anatomic_site_concept_id": 0,
            "image_occurrence_date": started,
            "image_study_uid": ctx.deid.uids.map(study) if study else None,
            "image_series_uid": ctx.deid.uids.map(uid) if uid else None,
            "modality_concept_id": concept.concept_id if concept else 0,
        }
        rows.append(("image_occurrence", row))
    return rows


MAPPERS: dict[str, Callable[[Any, Context], list[Row]]] = {
    "Patient": _person,
    "Encounter": _encounter,
    "Condition": _condition,
    "Observation": _observation,
    "MedicationRequest": _medication,
    "Procedure": _procedure,
    "ImagingStudy": _imaging,
}


def map_resource(resource: Any, ctx: Context) -> list[Row]:
    """CDM rows of one resource (ids filled in by the runner)."""
    return MAPPERS[resource.get_resource_type()](resource, ctx)
