"""Tabular ingest: read a CSV/Parquet export, apply a strategy, check k-anonymity, write.

How it runs, in one process and one pass (:func:`ingest_table`):

1. read the source (CSV by pandas, Parquet by pyarrow; the file is only read). Columns
   that are pseudonymized or name a patient for date shifting are read as text, so
   identifiers keep their leading zeros;
2. :func:`.rules.apply_rules` refuses unnamed or missing columns and applies each rule;
3. :func:`.kanon.enforce` suppresses groups smaller than ``k`` or refuses the ingest;
4. writes the output (Parquet or CSV by its suffix), then ``<output>.report.json`` (rules
   per column, rows in and out, suppressed groups and rows, achieved k — counts only) and
   ``<output>.summary.json`` (the catalogue summary, small counts suppressed). Each file
   is written to a temporary name and renamed, so a failed ingest leaves no partial file.

Re-running with the same secret and strategy gives the same output (keyed, deterministic).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from medfed.common.errors import BadRequest, Refused
from medfed.node.ingest.dicom.summary import summarize_table, write_summary
from medfed.node.ingest.dicom.summary import summary_path as summary_file
from medfed.node.ingest.tables.kanon import KAnonymityReport, enforce
from medfed.node.ingest.tables.rules import ColumnReport, apply_rules
from medfed.node.ingest.tables.strategy import Strategy, load_strategy

__all__ = [
    "TableIngestReport",
    "deidentify_frame",
    "ingest_table",
    "read_table",
    "table_bytes",
    "write_atomic",
]

_CSV = (".csv", ".csv.gz")
_PARQUET = (".parquet", ".pq")


class TableIngestReport(BaseModel):
    """What an ingest did: counts per rule and for the k-anonymity check, never values."""

    source: str
    source_sha256: str
    output: str
    report: str
    summary: str | None
    strategy_sha256: str
    created: str
    rows_in: int
    rows_out: int
    columns: dict[str, ColumnReport]
    k_anonymity: KAnonymityReport


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_CSV):
        return "csv"
    if name.endswith(_PARQUET):
        return "parquet"
    raise BadRequest(f"unsupported table file '{path.name}' (use .csv or .parquet)")


def read_table(path: Path, *, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV or Parquet file; ``text_columns`` of a CSV are read as strings."""
    kind = _kind(path)
    if not path.is_file():
        raise BadRequest(f"table not found: {path}")
    try:
        if kind == "parquet":
            return pd.read_parquet(path, engine="pyarrow")
        header = pd.read_csv(path, nrows=0).columns
        dtype = {c: str for c in text_columns if c in header}
        return pd.read_csv(path, dtype=dtype)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise BadRequest(f"cannot read {path.name}: {exc}") from None


def table_bytes(frame: pd.DataFrame, kind: str) -> bytes:
    """The frame as CSV or Parquet bytes (no index)."""
    buffer = io.BytesIO()
    if kind == "csv":
        buffer.write(frame.to_csv(index=False).encode())
    else:
        frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def deidentify_frame(
    frame: pd.DataFrame, strategy: Strategy, *, secret: str
) -> tuple[pd.DataFrame, dict[str, ColumnReport], KAnonymityReport]:
    """Rules, then k-anonymity: the releasable frame and what was done."""
    out, columns = apply_rules(frame, strategy, secret=secret)
    out, kanon = enforce(out, strategy.k_anonymity)
    if len(frame) and not len(out):
        raise Refused(
            f"k-anonymity: every row is in a group smaller than k={strategy.k_anonymity.k}; "
            "nothing would be left (coarsen the quasi-identifiers)"
        )
    return out, columns, kanon


def _summary(frame: pd.DataFrame, strategy: Strategy, min_cell_count: int) -> dict[str, Any]:
    return summarize_table(
        frame,
        min_cell_count=min_cell_count,
        sex_column=strategy.summary.sex,
        age_column=strategy.summary.age,
        patient_column=strategy.summary.patient,
    )


def ingest_table(
    src: Path,
    out: Path,
    *,
    strategy: Strategy | Path,
    secret: str,
    min_cell_count: int,
) -> TableIngestReport:
    """De-identify ``src`` into ``out`` (Parquet or CSV by suffix); see the module docstring."""
    src, out = Path(src), Path(out)
    if isinstance(strategy, Path):
        strategy = load_strategy(strategy)
    out_kind = _kind(out)
    if out.resolve() == src.resolve():
        raise BadRequest("the output would overwrite the source; name another file")
    if not secret:
        raise BadRequest("the node secret is empty")
    frame = read_table(src, text_columns=strategy.string_columns())
    result, columns, kanon = deidentify_frame(frame, strategy, secret=secret)
    report_path = out.with_name(out.name + ".report.json")
    summary_path = summary_file(out)
    summary = _summary(result, strategy, min_cell_count)
    report = TableIngestReport(
        source=str(src),
        source_sha256=hashlib.sha256(src.read_bytes()).hexdigest(),
        output=str(out),
        report=str(report_path),
        summary=str(summary_path),
        strategy_sha256=strategy.sha256(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        rows_in=len(frame),
        rows_out=len(result),
        columns=columns,
        k_anonymity=kanon,
    )
    write_atomic(out, table_bytes(result, out_kind))
    write_summary(summary, out)  # re-checks the suppression rules; <out>.summary.json
    write_atomic(report_path, report.model_dump_json(indent=2).encode())
    return report
