"""The verifier's view of a dataset: every text value, with its tag path, in one pass.

How it runs: :func:`segments` walks a dataset (file meta first, then every element and
every item of every sequence, private tags included) and returns one :class:`Segment` per
element (or per value) whose VR can hold text: person names, strings, codes, dates, UIDs,
and binary values (UN, OB up to 64 KiB, pixel data left out) read as Latin-1. Raw elements
that pydicom has not converted yet are decoded here directly when the character set is a
simple one (none, ISO_IR 100, ISO_IR 192) — converting them with pydicom would cost more
than the whole scan; sequences and other character sets go through pydicom. Private
creator elements (a vendor's block name) are left out. :func:`joined` puts the texts of
many segments in one string so a spelling is searched once per dataset, not per element.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom._dicom_dict import DicomDictionary
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

__all__ = ["BINARY_VRS", "KEYWORDS", "PIXEL_DATA", "Segment", "joined", "segments"]

TEXT_VRS = frozenset({"PN", "SH", "LO", "UC", "UT", "ST", "LT", "CS", "UR", "AE", "UI", "DA", "DT"})
BINARY_VRS = frozenset({"UN", "OB"})
PIXEL_DATA = 0x7FE00010
KEYWORDS: dict[int, str] = {tag: entry[4] for tag, entry in DicomDictionary.items()}
_WANTED_VRS = TEXT_VRS | BINARY_VRS
_MAX_BINARY = 65536  # longer binary values (pixel data, bulk data) are not read as text
_CHARSET = BaseTag(0x00080005)
_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
_SINGLE_VRS = frozenset({"ST", "LT", "UT", "UR"})
_DICT_VRS: dict[int, str] = {tag: entry[0] for tag, entry in DicomDictionary.items()}
_TAG_TEXT: dict[int, str] = {}  # tag -> "(gggg,eeee)", made once per tag


@dataclass(slots=True)
class Segment:
    path: str
    vr: str
    tag: int
    text: str

    @property
    def private(self) -> bool:
        return bool((self.tag >> 16) & 1)


def _strings(value: Any, vr: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes | bytearray):
        if vr in BINARY_VRS and len(value) <= _MAX_BINARY:
            return [bytes(value).decode("latin-1")]
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, MultiValue | list | tuple):
        return [s for s in (str(v) for v in value if v is not None) if s]
    text = str(value)
    return [text] if text else []


def _codec(ds: Dataset, inherited: str | None) -> str | None:
    """The Python codec of a dataset's text, or None when only pydicom can decode it."""
    elem = ds._dict.get(_CHARSET)
    if elem is None:
        return inherited
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        value = "\\".join(str(v) for v in value or ())
    return _CODECS.get(value.strip(" \x00"))


def _raw_strings(raw: bytes | None, vr: str, codec: str) -> list[str]:
    """Text values of a raw (not yet converted) element, decoded without pydicom."""
    if not raw:
        return []
    if vr in BINARY_VRS:
        return [raw.decode("latin-1")] if len(raw) <= _MAX_BINARY else []
    text = raw.decode(codec if vr in _CHARSET_VRS else "latin-1", "replace").rstrip(" \x00")
    if vr in _SINGLE_VRS:
        return [text] if text else []
    return [t for t in text.split("\\") if t]


def _walk(ds: Dataset, prefix: str, out: list[Segment], per_value: bool, codec: str | None) -> None:
    """Text segments of ``ds`` and its sequences: one per element, or one per value."""
    elements = ds._dict  # tag -> element
    wanted = _WANTED_VRS
    codec = _codec(ds, codec)
    for tag in list(elements):
        elem = elements[tag]
        vr = elem.VR
        if vr is not None and vr != "SQ" and vr not in wanted:
            continue  # numbers, binary bulk data: skipped before any conversion
        if tag & 0x10000 and (tag & 0xFFFF) < 0x100:
            continue  # private creator: a vendor's block name
        name = _TAG_TEXT.get(tag)
        if name is None:
            name = _TAG_TEXT[tag] = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        path = prefix + name
        if isinstance(elem, RawDataElement):
            vr = vr or (None if tag & 0x10000 else _DICT_VRS.get(tag))
            if vr in wanted and (codec is not None or vr not in _CHARSET_VRS):
                if not (vr in BINARY_VRS and int(tag) == PIXEL_DATA):
                    texts = _raw_strings(elem.value, vr, codec or "latin-1")
                    _emit(out, path, vr, tag, texts, per_value)
                continue
            if vr is not None and vr != "SQ" and vr not in wanted:
                continue
            try:
                elem = ds[tag]  # pydicom converts (and keeps) the raw element
                vr, value = elem.VR, elem.value
            except Exception:  # a value pydicom cannot convert: read its bytes as text
                vr, value = "UN", getattr(elem, "value", None)
        else:
            value = elem.value
        if vr == "SQ":
            for i, item in enumerate(value or ()):
                _walk(item, f"{path}[{i}].", out, per_value, codec)
            continue
        if vr not in wanted or (vr in BINARY_VRS and int(tag) == PIXEL_DATA):
            continue
        _emit(out, path, vr, tag, _strings(value, vr), per_value)


def _emit(
    out: list[Segment], path: str, vr: str, tag: int, texts: list[str], per_value: bool
) -> None:
    if per_value:
        out.extend(Segment(path, vr, tag, t) for t in texts)
    elif texts:
        out.append(Segment(path, vr, tag, "\\".join(texts)))


def segments(ds: Dataset, *, per_value: bool) -> list[Segment]:
    """Every text value of ``ds``: one segment per element, or per value (``per_value``)."""
    out: list[Segment] = []
    meta = getattr(ds, "file_meta", None)
    if isinstance(meta, Dataset):
        _walk(meta, "", out, per_value, "latin-1")
    _walk(ds, "", out, per_value, "latin-1")
    return out


def joined(segments: Sequence[Segment]) -> tuple[str, list[int]]:
    """The segments' texts in one string (NUL between them) and where each starts."""
    starts, pos = [], 0
    for seg in segments:
        starts.append(pos)
        pos += len(seg.text) + 1
    return "\x00".join(seg.text for seg in segments), starts
