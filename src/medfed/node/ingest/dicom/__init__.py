"""DICOM ingest: de-identification, independent verification, imaging index, NIfTI, summary."""
