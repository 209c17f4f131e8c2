"""Verification reports: one JSON file per output series and a summary of them all.

How it runs: ingest keeps one :class:`FileScan` per output file (the output's series UID
and what :func:`~medfed.node.ingest.dicom.verify.scan_pair` found) and calls
:func:`write_reports` when a batch is done. Each series report is merged with the one
already in the folder (a resumed ingest adds files; a re-scanned file replaces its entry),
then ``verification.json`` is recomputed from every series report in the folder, so the
summary always covers the whole dataset. Files are written atomically (temp file, then
rename). Reports hold identifiers only masked; ``ok`` is false when anything was found.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfed.node.ingest.dicom.verify_rules import Finding

__all__ = ["SUMMARY_NAME", "FileScan", "SeriesReport", "write_reports"]

SUMMARY_NAME = "verification.json"
_PREFIX = "series-"


@dataclass(frozen=True, slots=True)
class FileScan:
    """What the scanner found in one output file."""

    series_uid: str  # SeriesInstanceUID of the OUTPUT
    findings: Sequence[Finding] = ()


@dataclass(slots=True)
class SeriesReport:
    """The verification of one output series: each file scanned and its findings."""

    series_uid: str
    files: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def findings(self) -> int:
        return sum(len(f) for f in self.files.values())

    @property
    def ok(self) -> bool:
        return self.findings == 0

    def add(self, path: str, findings: Sequence[Finding]) -> None:
        self.files[path] = [f.to_json() for f in findings]

    def to_json(self) -> dict[str, Any]:
        return {
            "series_uid": self.series_uid,
            "ok": self.ok,
            "files_scanned": len(self.files),
            "findings": self.findings,
            "files": {path: self.files[path] for path in sorted(self.files)},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeriesReport:
        return cls(str(data["series_uid"]), {str(k): list(v) for k, v in data["files"].items()})


def _file_name(series_uid: str) -> str:
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in series_uid) or "unknown"
    return f"{_PREFIX}{safe}.json"


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read(path: Path) -> SeriesReport | None:
    try:
        return SeriesReport.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable: rewritten from this batch alone


def write_reports(findings_by_file: Mapping[str, FileScan], out_dir: Path) -> dict[str, Any]:
    """Write ``series-<uid>.json`` per series and ``verification.json``; return the summary.

    ``findings_by_file``: output file (as the report should name it, e.g. relative to the
    dataset folder) → its :class:`FileScan`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_series: dict[str, dict[str, FileScan]] = {}
    for path, result in findings_by_file.items():
        by_series.setdefault(result.series_uid or "unknown", {})[str(path)] = result
    for uid, files in by_series.items():
        target = out_dir / _file_name(uid)
        report = (_read(target) if target.exists() else None) or SeriesReport(uid)
        for path, result in files.items():
            report.add(path, result.findings)
        _write_json(target, report.to_json())
    summary = _summarize(out_dir)
    _write_json(out_dir / SUMMARY_NAME, summary)
    return summary


def _summarize(out_dir: Path) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    files = files_with_findings = 0
    series, leaking = 0, []
    for path in sorted(out_dir.glob(f"{_PREFIX}*.json")):
        report = _read(path)
        if report is None:
            continue
        series += 1
        files += len(report.files)
        for found in report.files.values():
            files_with_findings += bool(found)
            kinds.update(f.get("kind", "?") for f in found)
        if not report.ok:
            leaking.append(report.series_uid)
    return {
        "ok": not kinds,
        "series": series,
        "files_scanned": files,
        "files_with_findings": files_with_findings,
        "findings": sum(kinds.values()),
        "by_kind": dict(sorted(kinds.items())),
        "series_with_findings": leaking,
    }
