"""One ingest worker: read, de-identify, write, verify and index one file at a time.

How it runs: the runner starts one worker per core (or uses one in its own process);
:func:`init_worker` builds the :class:`~.deid.Deidentifier` once per process and looks up
the verification and index hooks (``medfed.node.ingest.dicom.verify.scan_pair`` and
``medfed.node.ingest.dicom.index.index_row``; each is used if its module exists).
:func:`run_chunk` handles a list of files and returns one :class:`Outcome` each; it never
raises for a bad file. Per file:

1. read the bytes (the source is opened read-only, never written); parse with pydicom
   (a file without the DICM preamble is parsed as a bare dataset only if it then has SOP
   Class and Instance UIDs); a failure, or a truncated file (its last element shorter than
   its length says, a sequence without its end, an image without pixel data) quarantines
   the file with the reason;
2. de-identify into a new dataset; a burned-in-text risk quarantines it;
3. encode the output (:func:`.encode.encode_file`, pydicom's bytes, faster) and write it
   to a temporary file beside its place
   ``OUT/<pseudonym>/<study uid>/<series uid>/<sop uid>.dcm``; the runner renames it into
   place, or drops it when another source already gave the same instance;
4. ``scan_pair(source, output, output_bytes=...)``: any finding (or an error of the
   verifier) moves the output to ``QUARANTINE/leaks/`` with a report and the outcome is a
   leak (ingest fails);
5. ``index_row(output, out_path)`` gives the file's row of the imaging index (an error
   there removes the output and quarantines the source: every output has its row).

Quarantined sources are copied (never moved) to ``QUARANTINE/<relative path>`` beside a
``.reason.txt`` file.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from medfed.node.ingest.dicom.burned import Rectangles
from medfed.node.ingest.dicom.deid import Deidentifier, Quarantined
from medfed.node.ingest.dicom.encode import encode_file
from medfed.node.ingest.dicom.profile import Option

__all__ = ["Outcome", "Settings", "init_worker", "quarantine", "run_chunk"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_IGNORE_KINDS = {
    Option.RETAIN_DEVICE_IDENTITY: "device",
    Option.RETAIN_INSTITUTION_IDENTITY: "institution",
    Option.RETAIN_UIDS: "uid",
    Option.RETAIN_FULL_DATES: "date",
}


@dataclass(frozen=True)
class Settings:
    """What every worker needs; picklable."""

    secret: str
    options: tuple[str, ...]
    rectangles: Rectangles | None
    out: Path
    quarantine: Path


@dataclass
class Outcome:
    source: str
    rel: str
    status: str  # "done" | "quarantined" | "leak"
    output: str | None = None
    reason: str = ""
    index_row: dict[str, Any] | None = None
    findings: list[str] = field(default_factory=list)
    series_uid: str = ""
    scan: list[Any] | None = None  # the verifier's findings (None: no verifier installed)
    tmp: str | None = None  # the written output, renamed to ``output`` by the runner


class _Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = Deidentifier(
            settings.secret, settings.options, rectangles=settings.rectangles
        )
        self.folders: set[Path] = set()  # output folders made by this worker
        self.ignore_kinds = {kind for o, kind in _IGNORE_KINDS.items() if o in self.engine.options}
        self.scan_pair: Callable[..., list[Any]] | None = _hook("verify", "scan_pair")
        self.index_row: Callable[[Dataset, Path], dict[str, Any]] | None = _hook(
            "index", "index_row"
        )

    def process(self, source: Path, rel: str) -> Outcome:
        try:
            data = source.read_bytes()
        except OSError as exc:
            return self.quarantine(source, rel, f"cannot read the file: {exc.strerror}")
        try:
            ds = _parse(data)
        except Exception as exc:
            return self.quarantine(source, rel, f"not DICOM or corrupt: {_say(exc)}")
        try:
            result = self.engine.deidentify(ds)
            written = encode_file(result.dataset)
        except Quarantined as exc:
            return self.quarantine(source, rel, exc.reason)
        except Exception as exc:
            return self.quarantine(source, rel, f"cannot de-identify: {_say(exc)}")
        output = result.dataset
        target = self.settings.out.joinpath(
            _safe(result.pseudonym),
            _safe(str(output.get("StudyInstanceUID", ""))),
            _safe(str(output.get("SeriesInstanceUID", ""))),
            _safe(str(output.get("SOPInstanceUID", ""))) + ".dcm",
        )
        tmp = _write_temp(target, written, self.folders)
        series = str(output.get("SeriesInstanceUID", ""))
        scan = None
        if self.scan_pair is not None:
            kwargs = {"output_bytes": written, "ignore_kinds": self.ignore_kinds}
            try:
                scan = list(self.scan_pair(ds, output, **kwargs))
            except Exception as exc:  # unverified is unreleased: handled like a leak
                failed = f"the verifier failed on this file: {_say(exc)}"
                return self.leak(source, rel, target, tmp, [failed])
            if scan:
                outcome = self.leak(source, rel, target, tmp, [str(f) for f in scan])
                outcome.series_uid, outcome.scan = series, scan
                return outcome
        try:
            row = self.index_row(output, target) if self.index_row is not None else None
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            return self.quarantine(source, rel, f"cannot index the output: {_say(exc)}")
        return Outcome(
            str(source),
            rel,
            "done",
            str(target),
            index_row=row,
            series_uid=series,
            scan=scan,
            tmp=str(tmp),
        )

    def quarantine(self, source: Path, rel: str, reason: str) -> Outcome:
        return quarantine(self.settings.quarantine, source, rel, reason)

    def leak(self, source: Path, rel: str, target: Path, tmp: Path, findings: list[str]) -> Outcome:
        place = self.settings.quarantine / "leaks" / target.relative_to(self.settings.out)
        place.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, place)
        report = "\n".join(f"- {f}" for f in findings)
        place.with_name(place.name + ".reason.txt").write_text(
            f"source: {source}\nreason: identifying values left in the output\n{report}\n",
            encoding="utf-8",
        )
        reason = f"verifier found {len(findings)} identifying value(s) in the output"
        return Outcome(str(source), rel, "leak", str(target), reason=reason, findings=findings)


def _hook(module: str, name: str) -> Any:
    full = f"medfed.node.ingest.dicom.{module}"
    try:
        return getattr(importlib.import_module(full), name, None)
    except ModuleNotFoundError as exc:
        if exc.name != full:
            raise
        return None


def _parse(data: bytes) -> Dataset:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except InvalidDicomError:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            if not ds.get("SOPClassUID") or not ds.get("SOPInstanceUID"):
                raise InvalidDicomError(
                    "no DICOM preamble, and no SOP Class/Instance UID"
                ) from None
    for warning in caught:
        message = str(warning.message)
        if "End of file reached" in message:
            raise InvalidDicomError("truncated: the file ends inside a sequence")
        if "but found implicit VR" in message or "but found explicit VR" in message:
            # the transfer syntax lies about VR; pydicom reads what is there but keeps the
            # declared encoding, so say how it was read: the writer then re-encodes it
            _, little = ds.original_encoding
            found_implicit = "found implicit" in message
            ds.set_original_encoding(found_implicit, little, ds.original_character_set)
    _check_complete(ds)
    return ds


def _check_complete(ds: Dataset) -> None:
    """Refuse a truncated file: pydicom reads one quietly, up to where the bytes end."""
    tags = list(ds.keys())
    if tags:
        last = ds.get_item(tags[-1])
        if isinstance(last, RawDataElement) and isinstance(last.value, bytes):
            size, length = len(last.value), last.length
            if length != 0xFFFFFFFF and size < length:
                raise InvalidDicomError(
                    f"truncated: element {last.tag} has {size} of its {length} bytes"
                )
    sop_class = UID(str(ds.get("SOPClassUID", "") or ""))
    if "Image Storage" in sop_class.name and not any(t in ds for t in _PIXEL_TAGS):
        raise InvalidDicomError(f"truncated or incomplete: a {sop_class.name} without pixel data")


def _say(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part.strip())[:80] or "unknown"


def _write_temp(target: Path, data: bytes, made: set[Path]) -> Path:
    """Write beside ``target``; the runner renames it into place (or drops a duplicate).

    ``made``: folders this worker already made (a series' files share one).
    """
    if target.parent not in made:
        target.parent.mkdir(parents=True, exist_ok=True)
        made.add(target.parent)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    return tmp


def quarantine(root: Path, source: Path, rel: str, reason: str) -> Outcome:
    """Copy ``source`` (never move it) to ``root/rel`` beside a ``.reason.txt``."""
    place = root / rel
    place.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # unreadable: the reason file says what happened
        shutil.copyfile(source, place)
    place.with_name(place.name + ".reason.txt").write_text(
        f"source: {source}\nreason: {reason}\n", encoding="utf-8"
    )
    return Outcome(str(source), rel, "quarantined", reason=reason)


_WORKER: _Worker | None = None


def init_worker(settings: Settings) -> None:
    global _WORKER
    _WORKER = _Worker(settings)


def run_chunk(items: list[tuple[str, str]]) -> list[Outcome]:
    assert _WORKER is not None, "init_worker first"
    with warnings.catch_warnings():  # pydicom warns on odd values; bad files get a reason
        warnings.simplefilter("ignore")
        return [_WORKER.process(Path(path), rel) for path, rel in items]
