"""Ingest on a node: raw hospital exports in, de-identified, verified datasets out."""
