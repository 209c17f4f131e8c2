"""Local data stores of a node: tables (CSV/Parquet via DuckDB); DICOM and BIDS to come."""
