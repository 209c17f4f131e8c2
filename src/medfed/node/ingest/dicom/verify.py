"""Independent verification: does any identifying value of a source file survive in its output?

How it runs, per file, in the ingest worker that wrote the output:

1. :func:`identifying_values` walks the SOURCE dataset once (file meta, every element,
   nested sequences, private tags) and collects every identifying value with the rules of
   :mod:`.verify_rules` — names and their components, IDs, dates in eight notations, UIDs
   that are not well-known, places, contacts, institutions, devices; then a second pass
   over the free text and private values adds the dates, labelled IDs and contacts written
   inside them, and every private text value that contains an identifier. When ingest
   de-identifies a dataset in place, call this before de-identifying.
2. :func:`scan` walks the OUTPUT once and joins its decoded text values into one string;
   each spelling of each identifier is searched in it once with ``str.find`` (C speed, no
   per-file regex compilation), a hit is kept when the boundary rule of its spelling holds,
   and its offset is mapped back to the element's tag path by bisection. Binary values
   (UN, OB) and the raw bytes of the file (pixel data left out) are searched the same way
   for the longer spellings, case-insensitively; a raw-byte hit is reported only for an
   identifier that no element showed. Cost: linear in spellings times text, well under a
   millisecond for a CT slice.
3. :func:`scan_pair` does both and then looks at the dates: when most date elements of
   the output are their source date moved by one number of days (Modified Dates), a date
   so moved that happens to equal another date of the source is no leak and is not
   reported. A date left as it was, or copied from another element, moved differently
   and is reported.

The dataset walk (which elements, decoded how) is in :mod:`.verify_walk`.

This module deliberately imports nothing from the de-identification code (profile, deid):
it is a second opinion. Findings name the identifier's kind, where it was found and the
kind of value found there; the value itself appears only masked (:func:`mask`).
Reports per series: :mod:`.verify_report`.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from functools import lru_cache
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset

from medfed.node.ingest.dicom.verify_report import FileScan, SeriesReport, write_reports
from medfed.node.ingest.dicom.verify_rules import (
    KIND_PRIORITY,
    Finding,
    Form,
    Identifier,
    classify,
    free_text_identifiers,
    is_type_uid,
    mask,
    value_forms,
)
from medfed.node.ingest.dicom.verify_walk import (
    BINARY_VRS,
    KEYWORDS,
    PIXEL_DATA,
    Segment,
    joined,
    segments,
)

__all__ = [
    "FileScan",
    "Finding",
    "Identifier",
    "SeriesReport",
    "identifying_values",
    "mask",
    "scan",
    "scan_pair",
    "write_reports",
]

_MAX_PRIVATE_VALUE = 256
_EXACT = frozenset({"date", "uid"})  # spellings never taken for coded terms
_DATE_VRS = frozenset({"DA", "DT"})
_RANK = {kind: i for i, kind in enumerate(KIND_PRIORITY)}


def _char(haystack: str | bytes, i: int) -> str:
    if i < 0 or i >= len(haystack):
        return "\x00"
    c = haystack[i]
    return chr(c) if isinstance(c, int) else c


def _bounded(h: str | bytes, start: int, end: int, mode: str) -> bool:
    """Whether the hit ``h[start:end]`` obeys its spelling's boundary rule."""
    before, after = _char(h, start - 1), _char(h, end)
    if mode == "word":
        return not before.isalnum() and not after.isalnum()
    if mode == "uid":
        return not (before.isdigit() or before == ".") and not after.isdigit()
    if mode == "uid-exact":  # raw bytes: a UID's root inside another UID is no leak there
        return not (before.isdigit() or before == ".") and not (after.isdigit() or after == ".")
    if before.isdigit() or (before == "." and _char(h, start - 2).isdigit()):
        return False
    if mode == "date":
        return True
    return not (after.isdigit() or (after == "." and _char(h, end + 1).isdigit()))


def _find_all(haystack: str | bytes, needle: Any, mode: str, bounded: bool = True) -> Iterator[int]:
    start = haystack.find(needle)
    while start >= 0:
        if not bounded or _bounded(haystack, start, start + len(needle), mode):
            yield start
        start = haystack.find(needle, start + 1)


class _Table:
    """Spellings to search, each once, mapped to the most sensitive identifier using it."""

    def __init__(self, identifiers: Sequence[Identifier]) -> None:
        self.forms: dict[str, tuple[Form, Identifier]] = {}
        for ident in sorted(identifiers, key=lambda i: _RANK.get(i.kind, len(_RANK))):
            for form in ident.forms:
                self.forms.setdefault(form.text, (form, ident))

    def hits(
        self, segments: Sequence[Segment], *, raw_only: bool = False
    ) -> Iterator[tuple[Segment, Identifier]]:
        """Each (segment, identifier) whose spelling occurs in a segment's text."""
        if not segments:
            return
        lowered = [Segment(s.path, s.vr, s.tag, s.text.lower()) for s in segments]
        haystack, starts = joined(lowered)
        for form, ident in self.forms.values():
            if raw_only and not form.raw:
                continue
            for at in _find_all(haystack, form.text, form.mode):
                yield segments[bisect_right(starts, at) - 1], ident


def _well_known(uid: str) -> bool:
    return uid.startswith("1.2.840.10008.") or uid in UID_dictionary


def identifying_values(source: Dataset) -> list[Identifier]:
    """Every identifying value of ``source``, most sensitive kinds first (see module doc)."""
    return _identify(segments(source, per_value=True))


def _identify(segments: Sequence[Segment]) -> list[Identifier]:
    found: dict[tuple[str, str], Identifier] = {}

    def add(kind: str, value: str, path: str) -> None:
        values = [value]
        if kind == "date":  # DA, DA range, DT: the dates in it
            values = [v.strip()[:8] if v.strip()[:8].isdigit() else v for v in value.split("-")]
        for v in values:
            v = v.strip().strip("\x00").strip()
            if v and (kind, v.lower()) not in found:
                forms = value_forms(kind, v)
                if forms:
                    found[kind, v.lower()] = Identifier(kind, v, path, forms)

    free: list[Segment] = []
    other: list[Segment] = []
    vocabulary: set[str] = set()  # coded terms (CS) of this file: words, not identifiers
    software: set[str] = set()  # class, syntax and implementation UIDs of this file
    for seg in segments:
        kind = classify(KEYWORDS.get(seg.tag, ""), seg.vr, seg.private)
        if seg.vr == "CS":
            vocabulary.add(seg.text.strip().lower())
        if kind == "text" and seg.vr not in BINARY_VRS:
            free.append(seg)
        elif kind in ("text", "other"):
            other.append(seg)
        elif kind is None and seg.vr == "UI":
            software.add(seg.text.strip("\x00 "))
        elif kind is not None and not (kind == "uid" and _well_known(seg.text.strip("\x00 "))):
            add(kind, seg.text, seg.path)
    for part, contacts in ((free, True), (other, False)):  # identifiers inside text
        text, starts = joined(part)
        for kind, value, at in free_text_identifiers(text, contacts=contacts):
            add(kind, value, part[bisect_right(starts, at) - 1].path)
    private = [s for s in free if s.private and len(s.text.strip()) <= _MAX_PRIVATE_VALUE]
    for seg, _ident in _Table(list(found.values())).hits(private):
        add("private", seg.text, seg.path)
    for key, ident in list(found.items()):
        if ident.kind == "uid" and ident.value in software:
            del found[key]  # e.g. an Instance Creator UID that is the implementation's UID
            continue
        forms = tuple(f for f in ident.forms if f.mode in _EXACT or f.text not in vocabulary)
        if not forms:
            del found[key]
        elif len(forms) < len(ident.forms):
            found[key] = Identifier(ident.kind, ident.value, ident.source, forms)
    return sorted(found.values(), key=lambda i: (_RANK.get(i.kind, len(_RANK)), i.source))


@lru_cache(maxsize=4096)
def _variants(form: Form) -> frozenset[bytes]:
    """The byte spellings of a form as the raw search sees it (ASCII lower-cased)."""
    out = set()
    for text in (form.text, form.text.upper()):
        for codec in ("utf-8", "latin-1"):
            try:
                out.add(text.encode(codec).lower())
            except UnicodeEncodeError:
                continue
    return frozenset(out)


def _without_pixels(data: bytes, ds: Dataset) -> bytes:
    try:
        pixels = ds[PIXEL_DATA].value if PIXEL_DATA in ds else None
    except Exception:
        pixels = None
    if not isinstance(pixels, bytes) or len(pixels) < 64:
        return data
    if data.endswith(pixels):
        return data[: len(data) - len(pixels)]
    at = data.find(pixels)
    return data if at < 0 else data[:at] + data[at + len(pixels) :]


def scan(
    output: Dataset, identifiers: Sequence[Identifier], *, output_bytes: bytes | None = None
) -> list[Finding]:
    """Where in ``output`` (and its file bytes, when given) any of ``identifiers`` occurs."""
    return _scan(output, identifiers, output_bytes, segments(output, per_value=False))


def _scan(
    output: Dataset,
    identifiers: Sequence[Identifier],
    output_bytes: bytes | None,
    segments: Sequence[Segment],
) -> list[Finding]:
    if not identifiers:
        return []
    table = _Table(identifiers)
    # class, syntax and implementation UIDs of the output name software, never a person
    text = [s for s in segments if s.vr not in BINARY_VRS and not is_type_uid(s.tag)]
    binary = [s for s in segments if s.vr in BINARY_VRS]
    findings: dict[tuple[str, str, str], Finding] = {}
    seen: set[Identifier] = set()
    for part, raw_only in ((text, False), (binary, True)):
        for seg, ident in table.hits(part, raw_only=raw_only):
            seen.add(ident)
            findings.setdefault(
                (ident.kind, ident.value, seg.path),
                Finding(ident.kind, seg.path, seg.vr, ident.masked, ident.source),
            )
    if output_bytes is not None:
        data = _without_pixels(output_bytes, output).lower()
        for form, ident in table.forms.values():
            if not form.raw or ident in seen:
                continue
            bounded = form.mode != "word" or len(form.text) < 8
            mode = "uid-exact" if form.mode == "uid" else form.mode
            for needle in _variants(form):
                at = next(_find_all(data, needle, mode, bounded), -1)
                if at >= 0:
                    seen.add(ident)
                    path = f"raw@{at}"
                    findings[ident.kind, ident.value, path] = Finding(
                        ident.kind, path, "raw", ident.masked, ident.source
                    )
                    break
    return list(findings.values())


def scan_pair(
    source_ds: Dataset,
    output_ds: Dataset,
    *,
    output_bytes: bytes | None = None,
    ignore_kinds: Collection[str] = (),
) -> list[Finding]:
    """:func:`identifying_values` of the source, then :func:`scan` of the output.

    ``ignore_kinds``: kinds the steward chose to keep, e.g. ``{"device"}`` with Retain
    Device Identity, ``{"institution"}`` with Retain Institution Identity, ``{"uid"}``
    with Retain UIDs.
    """
    source = segments(source_ds, per_value=True)
    output = segments(output_ds, per_value=False)
    identifiers = [i for i in _identify(source) if i.kind not in ignore_kinds]
    findings = _scan(output_ds, identifiers, output_bytes, output)
    before, after = _dates(source), _dates(output)
    deltas = {p: (after[p] - before[p]).days for p in before.keys() & after.keys()}
    ranked = Counter(deltas.values()).most_common(2)
    if not ranked or ranked[0][0] == 0 or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return findings
    # Most date elements moved by one number of days (Modified Dates): a date found in an
    # element that holds its own source date so moved is the shift landing on another
    # source date (a study date moved one day onto the next day's content date), not a
    # leak. A date left as it was, or copied from elsewhere, moved differently: reported.
    shift = ranked[0][0]
    return [f for f in findings if not (f.kind == "date" and deltas.get(f.path) == shift)]


def _dates(segments: Sequence[Segment]) -> dict[str, dt.date]:
    """The date (first eight digits) of each DA and DT element, by tag path."""
    out: dict[str, dt.date] = {}
    for seg in segments:
        if seg.vr in _DATE_VRS and seg.path not in out:
            text = seg.text.strip()
            try:
                out[seg.path] = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
            except ValueError:
                continue
    return out
