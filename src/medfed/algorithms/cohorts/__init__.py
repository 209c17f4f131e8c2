"""Cohorts on OMOP CDM data: Circe definitions (circe) and feature specifications (features)."""
