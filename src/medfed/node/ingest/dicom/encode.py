"""Encode a de-identified dataset as a DICOM file, fast, with pydicom's bytes.

How it runs: :func:`encode_file` gives the bytes that ``pydicom.dcmwrite(buffer, ds,
enforce_file_format=True)`` writes, byte for byte (the tests compare the two on pydicom's
test files), at a fraction of its cost. The output of :class:`~.deid.Deidentifier` is
mostly raw elements copied from the source as read, in the source's encoding: pydicom
wraps each of them in a buffer object, checks and re-measures it; here their header is
packed with :mod:`struct` and their bytes are copied. Everything else goes through
pydicom's own element writer (``filewriter.write_data_element``): elements that were
created or changed (a handful per file), Pixel Data (whose undefined length pydicom sets
from the transfer syntax), elements of undefined length and short-VR values over 64 KiB.
Sequences are framed here (item tag, item length, items in tag order) so the raw
elements inside their items take the fast way too.

The whole file goes to ``dcmwrite`` instead when the fast way cannot promise the same
bytes: a transfer syntax that is private, deflated or unknown; a dataset (or sequence item)
whose elements were read in another encoding or character set than the one it is written
in (pydicom then converts every element); File Meta elements other than the usual six;
group 0000/0002 elements in the dataset.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from pydicom import __version_info__
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

__all__ = ["encode_file"]

_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_VERSION_NAME = f"PYDICOM {'.'.join(__version_info__)}"
# File Meta elements this module writes itself (the ones the de-identifier sets, and the
# ones dcmwrite adds): tag -> VR
_META = {
    0x00020001: "OB",  # File Meta Information Version
    0x00020002: "UI",  # Media Storage SOP Class UID
    0x00020003: "UI",  # Media Storage SOP Instance UID
    0x00020010: "UI",  # Transfer Syntax UID
    0x00020012: "UI",  # Implementation Class UID
    0x00020013: "SH",  # Implementation Version Name
}
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
_TEXT_VRS = frozenset({"LO", "SH"})
_NUMBER_VRS = {"US": "H", "UL": "L"}
# character sets (as pydicom names them, either spelling) that write ASCII as ASCII
_PLAIN_CHARSETS = frozenset(
    {"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192", "iso8859", "latin_1", "UTF8"}
)
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_ITEM_BE = struct.pack(">HH", 0xFFFE, 0xE000)


class _Slow(Exception):
    """The fast way cannot promise dcmwrite's bytes for this file."""


def encode_file(ds: Dataset) -> bytes:
    """The file ``dcmwrite(..., enforce_file_format=True)`` writes for ``ds``.

    Like dcmwrite, this sets the Pixel Data element's undefined-length flag from the
    transfer syntax.
    """
    try:
        return _fast(ds)
    except _Slow:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def _fast(ds: Dataset) -> bytes:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise _Slow
    syntax = UID(str(syntax))
    if syntax.is_private or not syntax.is_transfer_syntax:
        raise _Slow
    if syntax == DeflatedExplicitVRLittleEndian:
        raise _Slow
    if any(tag >> 16 in (0, 2) for tag in ds._dict):
        raise _Slow
    preamble = getattr(ds, "preamble", None)
    if preamble and len(preamble) != 128:
        raise _Slow
    implicit, little = bool(syntax.is_implicit_VR), bool(syntax.is_little_endian)
    if implicit and not little:
        raise _Slow
    head = _file_meta(ds, meta)
    if _PIXEL_DATA in ds._dict:  # as dcmwrite does
        ds[_PIXEL_DATA].is_undefined_length = bool(syntax.is_compressed)
    writer = _Writer(implicit, little)
    body = writer.top(ds)
    return b"".join((preamble or bytes(128), b"DICM", head, body))


def _file_meta(ds: Dataset, meta: Any) -> bytes:
    values: dict[int, Any] = {}
    for tag, elem in meta._dict.items():
        if tag == 0x00020000:
            continue  # the group length is recomputed
        if tag not in _META or isinstance(elem, RawDataElement):
            raise _Slow
        values[int(tag)] = elem.value
    for tag, keyword in ((0x00020002, "SOPClassUID"), (0x00020003, "SOPInstanceUID")):
        here = ds.get(keyword)
        if values.get(tag) is None or (here and here != values[tag]):
            values[tag] = here
    if not values.get(0x00020001):
        values[0x00020001] = b"\x00\x01"
    if not values.get(0x00020012):
        values[0x00020012] = PYDICOM_IMPLEMENTATION_UID
    values.setdefault(0x00020013, _VERSION_NAME)
    for tag in (0x00020002, 0x00020003, 0x00020010):
        if not values.get(tag):
            raise _Slow  # dcmwrite says which one is missing
    parts = []
    for tag in sorted(values):
        vr, value = _META[tag], values[tag]
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif isinstance(value, str):
            data = value.encode("iso8859")
        else:
            raise _Slow
        if len(data) % 2:
            data += b"\x00" if vr in ("UI", "OB") else b" "
        if vr == "OB":
            parts.append(struct.pack("<HH2sHL", 2, tag & 0xFFFF, b"OB", 0, len(data)))
        else:
            parts.append(struct.pack("<HH2sH", 2, tag & 0xFFFF, vr.encode(), len(data)))
        parts.append(data)
    body = b"".join(parts)
    return struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(body)) + body


def _simple_value(elem: DataElement, encodings: Any, order: str) -> bytes | None:
    """The encoded value of a changed element of a plain kind, as pydicom writes it.

    Strings of the ASCII VRs (UI, CS, DA, ...), LO and SH text in ASCII under a character
    set where ASCII is written as itself, single US and UL numbers; None for anything else.
    """
    vr, value = elem.VR, elem.value
    if vr in _NUMBER_VRS:
        if type(value) is int:
            return struct.pack(order + _NUMBER_VRS[vr], value)
        return None
    if vr not in _ASCII_VRS and not (vr in _TEXT_VRS and _plain(encodings)):
        return None
    if value is None or value == "":
        return b""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (MultiValue, list, tuple)) and all(type(v) is str for v in value):
        text = "\\".join(value)
    else:
        return None
    if not text.isascii():
        return None
    if len(text) % 2:
        text += "\0" if vr == "UI" else " "
    return text.encode("ascii")


def _plain(encodings: Any) -> bool:
    if not encodings:
        return True
    names = [encodings] if isinstance(encodings, str) else list(encodings)
    return len(names) == 1 and names[0] in _PLAIN_CHARSETS


class _Writer:
    """Encodes datasets in one transfer syntax's encoding."""

    def __init__(self, implicit: bool, little: bool) -> None:
        self.implicit, self.little = implicit, little
        self.encoding = (implicit, little)
        self.order = "<" if little else ">"
        self.item = _ITEM if little else _ITEM_BE

    def top(self, ds: Dataset) -> bytes:
        if not self.same_encoding(ds):
            raise _Slow  # pydicom converts every element: dcmwrite does it all
        return self.dataset(ds, "iso8859")

    def same_encoding(self, ds: Dataset) -> bool:
        """Whether pydicom writes ``ds``'s raw elements as they are (no conversion)."""
        return bool(
            ds.original_encoding == self.encoding and ds.original_character_set == ds._character_set
        )

    def dataset(self, ds: Dataset, parent_encoding: str | list[str]) -> bytes:
        encodings: Any = ds.get("SpecificCharacterSet", parent_encoding)  # as dcmwrite
        elements = ds._dict
        parts: list[bytes] = []
        head = self.head
        for tag in sorted(elements):
            if tag & 0xFFFF == 0 and tag >> 16 > 6:
                continue  # retired group lengths: dcmwrite leaves them out
            elem = elements[tag]
            if isinstance(elem, RawDataElement):
                value, vr = elem.value, elem.VR
                if (
                    value is not None
                    and elem.length != _UNDEFINED
                    and vr != "SQ"
                    and tag != _PIXEL_DATA
                    and (self.implicit or (vr is not None and len(vr) == 2))
                ):
                    header = head(tag, vr, len(value))
                    if header is not None:
                        parts += (header, value)
                        continue
            elif elem.VR == "SQ":
                if not elem.is_undefined_length:
                    parts.append(self.sequence(elem, encodings))
                    continue
            elif not elem.is_undefined_length:
                value = _simple_value(elem, encodings, self.order)
                if value is not None:
                    header = head(tag, elem.VR, len(value))
                    if header is not None:
                        parts += (header, value)
                        continue
            parts.append(self.pydicom(elem, encodings))
        return b"".join(parts)

    def head(self, tag: int, vr: str | None, size: int) -> bytes | None:
        """An element's tag, VR and length; None when pydicom must decide (over 64 KiB)."""
        group, element = tag >> 16, tag & 0xFFFF
        if self.implicit:
            return struct.pack(self.order + "HHL", group, element, size)
        assert vr is not None
        if vr in _LONG_VRS:
            return struct.pack(self.order + "HH2sHL", group, element, vr.encode(), 0, size)
        if size > 0xFFFF:
            return None  # dcmwrite writes it as UN, with a warning
        return struct.pack(self.order + "HH2sH", group, element, vr.encode(), size)

    def sequence(self, elem: DataElement, encodings: Any) -> bytes:
        inherited = convert_encodings(encodings or "iso8859")
        items = []
        for item in elem.value:
            if getattr(item, "is_undefined_length_sequence_item", False):
                raise _Slow
            if self.same_encoding(item):
                body = self.dataset(item, inherited)
            else:  # e.g. an item made by the de-identifier: pydicom decides
                buffer = self.buffer()
                write_dataset(buffer, item, parent_encoding=inherited)
                body = buffer.getvalue()
            items.append(self.item + struct.pack(self.order + "L", len(body)) + body)
        value = b"".join(items)
        tag = int(elem.tag)
        if self.implicit:
            head = struct.pack(self.order + "HHL", tag >> 16, tag & 0xFFFF, len(value))
        else:
            head = struct.pack(self.order + "HH2sHL", tag >> 16, tag & 0xFFFF, b"SQ", 0, len(value))
        return head + value

    def buffer(self) -> DicomBytesIO:
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = self.implicit, self.little
        return buffer

    def pydicom(self, elem: DataElement | RawDataElement, encodings: Any) -> bytes:
        buffer = self.buffer()
        write_data_element(buffer, elem, encodings)
        return buffer.getvalue()
