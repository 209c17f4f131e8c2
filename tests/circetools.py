"""Circe (ATLAS) cohort definitions for the OMOP tests, built from small parts.

The concept ids are the shipped test vocabulary's (``node/stores/cdm/test_vocabulary``).
"""

from __future__ import annotations

from typing import Any

BREAST, GRADE3, NODES = 2000000100, 2000000103, 2000001002
TAMOXIFEN, HORMONAL, RECURRENCE = 2000002001, 2000002000, 2000000150


def concept_set(i: int, concept: int, descendants: bool) -> dict[str, Any]:
    item = {"concept": {"CONCEPT_ID": concept}, "includeDescendants": descendants}
    return {"id": i, "name": f"set {i}", "expression": {"items": [item]}}


def cohort(entry: dict[str, Any], sets: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "ConceptSets": sets,
        "PrimaryCriteria": {
            "CriteriaList": [entry],
            "ObservationWindow": {"PriorDays": 0, "PostDays": 0},
            "PrimaryCriteriaLimit": {"Type": "First"},
        },
        "QualifiedLimit": {"Type": "First"},
        "ExpressionLimit": {"Type": "First"},
        "CollapseSettings": {"CollapseType": "ERA", "EraPad": 0},
        **extra,
    }
