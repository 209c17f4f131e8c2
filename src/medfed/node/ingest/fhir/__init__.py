"""FHIR R4 bulk NDJSON → OMOP CDM 5.4, de-identified on the way (see :mod:`.runner`)."""
