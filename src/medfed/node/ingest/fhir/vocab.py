"""Source codes of FHIR codings → OMOP concepts, through the CDM's own vocabulary tables.

How it runs: a coding's ``system`` names an OMOP vocabulary (:data:`SYSTEMS`: LOINC,
SNOMED, RxNorm, ICD-10(-CM), CPT4, UCUM, DICOM). :meth:`Vocabulary.lookup` finds the
source concept in ``concept`` (vocabulary_id, concept_code) and its standard concept: the
concept itself when it is standard (``standard_concept = 'S'``), else the target of its
valid ``Maps to`` row in ``concept_relationship``. A code the vocabulary does not hold,
or that maps to nothing, gives concept_id 0. The source value (the code) is kept only for
codes of a known terminology: a code from an unknown or local system may be a hospital
identifier, so it is dropped. Display texts are never kept (free text can hold names).
Answers are cached per (vocabulary, code) for the ingest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

__all__ = ["SYSTEMS", "Concept", "Vocabulary"]

#: FHIR code system URI → OMOP vocabulary_id
SYSTEMS: dict[str, str] = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "http://www.ama-assn.org/go/cpt": "CPT4",
    "http://unitsofmeasure.org": "UCUM",
    "http://dicom.nema.org/resources/ontology/DCM": "DICOM",
}


@dataclass(frozen=True)
class Concept:
    """One coding's concepts: standard (0 if unmapped), source (0 if unknown), code."""

    concept_id: int
    source_concept_id: int
    source_value: str | None
    domain_id: str | None = None


UNMAPPED = Concept(0, 0, None)


class Vocabulary:
    """Lookups against ``concept`` / ``concept_relationship`` of one CDM connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._cache: dict[tuple[str, str], Concept] = {}

    def lookup(self, vocabulary_id: str, code: str) -> Concept:
        key = (vocabulary_id, code)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        rows = self._con.execute(
            "SELECT c.concept_id, c.standard_concept, c.domain_id, "
            "(SELECT min(r.concept_id_2) FROM concept_relationship r "
            " WHERE r.concept_id_1 = c.concept_id AND r.relationship_id = 'Maps to' "
            " AND r.invalid_reason IS NULL) AS target, "
            "(SELECT min(t.domain_id) FROM concept_relationship r JOIN concept t "
            " ON t.concept_id = r.concept_id_2 WHERE r.concept_id_1 = c.concept_id "
            " AND r.relationship_id = 'Maps to' AND r.invalid_reason IS NULL) AS target_domain "
            "FROM concept c WHERE c.vocabulary_id = ? AND c.concept_code = ? "
            "ORDER BY c.invalid_reason NULLS FIRST, c.concept_id LIMIT 1",
            [vocabulary_id, code],
        ).fetchall()  # read to the end: the connection appends rows next
        row = rows[0] if rows else None
        if row is None:
            found = Concept(0, 0, code[:50])
        else:
            source_id, standard, domain, target, target_domain = row
            if standard == "S":
                found = Concept(int(source_id), int(source_id), code[:50], domain)
            elif target is not None:
                found = Concept(int(target), int(source_id), code[:50], target_domain)
            else:
                found = Concept(0, int(source_id), code[:50], domain)
        self._cache[key] = found
        return found

    def concept(self, codeable: Any) -> Concept:
        """The first coding of a CodeableConcept in a known system (else unmapped)."""
        codings = list(getattr(codeable, "coding", None) or [])
        best: Concept | None = None
        for coding in codings:
            vocabulary_id = SYSTEMS.get(str(getattr(coding, "system", "") or ""))
            code = getattr(coding, "code", None)
            if vocabulary_id is None or not code:
                continue
            found = self.lookup(vocabulary_id, str(code))
            if found.concept_id:
                return found
            best = best or found
        return best or UNMAPPED

    def unit(self, code: str | None) -> Concept:
        if not code:
            return UNMAPPED
        return self.lookup("UCUM", code)
