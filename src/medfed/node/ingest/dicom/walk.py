"""One file's pass of the de-identification engine: element by element, sequences included.

How it runs: :class:`Walk` is made by :meth:`.deid.Deidentifier.deidentify` for one source
dataset and builds the output dataset in one pass in tag order. Elements are taken from
the dataset's element dict as read, so an element kept as it is stays a raw (undecoded)
element and is written back byte for byte (an empty raw value is converted first, as
``Dataset.get_item`` does). UIDs to replace and dates to shift are read from their raw
bytes (ASCII VRs) and written as new raw elements, padded as pydicom pads them; only
sequences, text to clean and non-raw values go through pydicom's conversion. Elements go
into the output's dict directly, except private ones and sequences, which take
``Dataset.__setitem__`` (it links private blocks and sequence items). Every output dataset,
sequence items included, carries its source's encoding and character set, so the writer
(:mod:`.encode`) copies raw elements as they are.

Cleaning needs to know the file's identifying values, which come later in tag order than
many descriptors (Study Description (0008,1030) before Patient's Name (0010,0010)). So the
pass collects the values of the attributes it removes or replaces (text and dates), and
records the text to clean (``C``), the kept text to scrub (unlisted LO, SH, ST, LT, UT,
UC, PN) and the private numbers kept under Retain Safe Private; :meth:`Walk.finish` then
cleans and scrubs the text with the collected values and drops a private number equal to
one of them (an ID written as a number). A kept text is decoded only if a cheap substring
test finds one of those values in it; the cleaning expression is built only when a text
needs it, and cached per set of values (:func:`.clean.identifying_values`).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from medfed.node.ingest.dicom.clean import clean_text, identifying_values, quick_terms, scrub_known
from medfed.node.ingest.dicom.dates import dummy_value, shift_da, shift_dt

if TYPE_CHECKING:
    from collections.abc import Callable

    from medfed.node.ingest.dicom.deid import Deidentifier

__all__ = ["Mode", "Walk"]

TEXT_VRS = frozenset({"AE", "AS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
SCRUB_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
COLLECT_VRS = TEXT_VRS | {"DA", "DT"}
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
SAFE_PRIVATE_VRS = frozenset(
    {"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "DS", "IS", "OF", "OD"}
)
_TYPE_UID_KEYWORDS = frozenset(
    {
        "CodingSchemeUID",
        "ContextUID",
        "ContextGroupExtensionCreatorUID",
        "MappingResourceUID",
        "PrivateInformationCreatorUID",
        "CreatorVersionUID",
        "TemplateExtensionOrganizationUID",
        "TemplateExtensionCreatorUID",
        "RetrieveLocationUID",
        "RepositoryUniqueID",
        "HomeCommunityID",
    }
)

Element = DataElement | RawDataElement
_TYPE_UID_TAGS: dict[int, bool] = {}


class Mode(Enum):
    NORMAL = "normal"
    DUMMY = "dummy"  # inside a sequence replaced with a dummy value (D)
    CLEAN = "clean"  # inside a sequence that is cleaned (C)


def is_type_uid(keyword: str) -> bool:
    """A UID attribute that names a kind of thing (class, syntax, scheme), not an instance."""
    return "Class" in keyword or "TransferSyntax" in keyword or keyword in _TYPE_UID_KEYWORDS


def _vr(tag: int, elem: Element) -> str:
    vr = elem.VR
    if vr and vr != "UN":
        return str(vr)
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return "UN"


class Walk:
    """The pass over one source dataset; ``run()`` returns the new dataset."""

    def __init__(self, engine: Deidentifier, source: Dataset, sop_class: str, offset: int):
        self.engine = engine
        self.source = source
        self.sop_class = sop_class
        self.offset = offset
        self.identifying: list[str] = []
        self.deferred: list[tuple[Dataset, Dataset, int, str]] = []  # out, src, tag, what

    def run(self) -> Dataset:
        out = self.dataset(self.source, Mode.NORMAL, nested=False)
        self.finish()
        return out

    def dataset(self, src: Dataset, mode: Mode, *, nested: bool) -> Dataset:
        out = Dataset(parent_encoding=src._parent_encoding)
        implicit, little = src.original_encoding
        if implicit is not None and little is not None:
            out.set_original_encoding(implicit, little, src.original_character_set)
        into = out._dict
        for tag, elem in list(src._dict.items()):  # as read: raw elements stay raw
            if elem.value is None and isinstance(elem, RawDataElement):
                elem = src[tag]  # an empty value: pydicom's get_item converts it too
            new = self.element(int(tag), elem, src, out, mode, nested)
            if new is None:
                continue
            if tag & 0x10000 or new.VR == "SQ":
                out[tag] = new  # pydicom links private blocks and sequence items
            else:
                into[tag] = new
        return out

    def element(
        self, tag: int, elem: Element, src: Dataset, out: Dataset, mode: Mode, nested: bool
    ) -> Element | None:
        group = tag >> 16
        if tag & 0xFFFF == 0:
            return None  # group lengths: pydicom writes the ones still required
        if group & 1:
            return self.private(tag, elem, src, out)
        if self.engine.drop_overlays and 0x6000 <= group <= 0x601E:
            return None
        vr = _vr(tag, elem)
        action = self.engine.action(tag, self.sop_class, nested)
        if action is None:
            return self.unlisted(tag, vr, elem, src, out, mode)
        if action in ("X", "Z", "D") and vr in COLLECT_VRS:
            self.collect(tag, elem, src)
        if action == "X":
            return None
        if action == "Z":
            return DataElement(tag, vr, Sequence() if vr == "SQ" else None)
        if action == "K" or (action == "U" and vr == "SQ"):
            return self.sequence(src[tag], mode) if vr == "SQ" else elem
        if action == "U":
            return self.uid(tag, elem, src) if vr == "UI" else elem
        if action == "D":
            if vr == "SQ":
                return self.sequence(src[tag], Mode.DUMMY)
            if vr == "UI":
                return self.uid(tag, elem, src, force=True)
            return DataElement(tag, vr, dummy_value(vr))
        return self.clean(tag, vr, elem, src, out)

    def clean(self, tag: int, vr: str, elem: Element, src: Dataset, out: Dataset) -> Element:
        if vr == "SQ":
            return self.sequence(src[tag], Mode.CLEAN)
        if vr in ("DA", "DT"):
            return self.date(tag, vr, elem, src, Mode.CLEAN)
        if vr == "UI":
            return self.uid(tag, elem, src)
        if vr in BINARY_VRS:  # cannot be read for identifiers: blanked, length kept
            value = src[tag].value
            blank = bytes(len(value)) if isinstance(value, bytes) and value else None
            return DataElement(tag, vr, blank or dummy_value(vr))
        if vr in TEXT_VRS or vr == "CS":
            self.deferred.append((out, src, tag, "clean"))
        return elem

    def unlisted(
        self, tag: int, vr: str, elem: Element, src: Dataset, out: Dataset, mode: Mode
    ) -> Element | None:
        if vr == "SQ":
            return self.sequence(src[tag], mode)
        if vr == "UI":
            return elem if _is_type_uid_tag(tag) else self.uid(tag, elem, src)
        if vr in ("DA", "DT"):
            if mode is Mode.NORMAL and not self.engine.modified and not self.engine.full:
                self.collect(tag, elem, src)
                return DataElement(tag, vr, None)  # a date newer than the 2020 table
            return self.date(tag, vr, elem, src, mode)
        if vr == "UN":
            return None  # unknown to the dictionary: cannot tell what it holds
        if mode is Mode.DUMMY and (vr in TEXT_VRS or vr == "TM"):
            self.collect(tag, elem, src)
            return DataElement(tag, vr, dummy_value(vr))
        if mode is Mode.CLEAN and vr in TEXT_VRS:
            self.deferred.append((out, src, tag, "clean"))
        elif vr in SCRUB_VRS:
            self.deferred.append((out, src, tag, "scrub"))
        return elem

    def sequence(self, elem: DataElement, mode: Mode) -> DataElement:
        items = [self.dataset(item, mode, nested=True) for item in elem.value or []]
        return DataElement(elem.tag, "SQ", Sequence(items))

    def date(self, tag: int, vr: str, elem: Element, src: Dataset, mode: Mode) -> Element:
        if self.engine.modified:
            shift = shift_da if vr == "DA" else shift_dt
            return _map_ascii(tag, vr, elem, src, lambda s: shift(s, self.offset))
        if self.engine.full or mode is Mode.NORMAL:
            return elem
        return DataElement(tag, vr, dummy_value(vr))

    def uid(self, tag: int, elem: Element, src: Dataset, *, force: bool = False) -> Element:
        if self.engine.retain_uids and not force:
            return elem
        return _map_ascii(tag, "UI", elem, src, self.engine.uids.map)

    def private(self, tag: int, elem: Element, src: Dataset, out: Dataset) -> Element | None:
        if self.engine.profile.private == "X":
            return None
        if 0x0010 <= tag & 0xFFFF <= 0x00FF:
            return elem  # private creator
        if _vr(tag, elem) not in SAFE_PRIVATE_VRS:
            return None
        self.deferred.append((out, src, tag, "private"))  # a number may still be an ID
        return elem

    def collect(self, tag: int, elem: Element, src: Dataset) -> None:
        """Remember the value of an element the profile removes or replaces."""
        value: Any = elem.value
        if isinstance(value, bytes):
            text = value.decode(_codec(src), "replace")
            self.identifying.extend(v.strip(" \x00") for v in text.split("\\") if v.strip(" \x00"))
        elif isinstance(value, (MultiValue, list)):
            self.identifying.extend(str(v) for v in value if v)
        elif value:
            self.identifying.append(str(value))

    def finish(self) -> None:
        """Clean the ``C`` text and scrub the kept text with the collected values."""
        if not self.deferred:
            return
        known = tuple(sorted(set(self.identifying)))
        terms = quick_terms(known)  # both cached per value set: a series shares its values
        values = {v.strip().lower() for v in known}
        for out, src, tag, what in self.deferred:
            if what == "clean":
                pattern = identifying_values(known)
                cleaned = _map_strings(src[tag], pattern_cleaner(pattern))
                out[tag] = cleaned
                continue
            if what == "private":
                number = src[tag].value
                items = number if isinstance(number, (MultiValue, list)) else [number]
                if any(str(v).strip().lower() in values for v in items):
                    del out[tag]
                continue
            if not terms:
                continue
            raw = out.get_item(tag).value
            text = raw.decode(_codec(src), "replace") if isinstance(raw, bytes) else str(raw)
            lowered = text.lower()
            if any(term in lowered for term in terms):
                pattern = identifying_values(known)
                if pattern is not None:
                    out[tag] = _map_strings(src[tag], pattern_scrubber(pattern))


def pattern_cleaner(pattern: re.Pattern[str] | None) -> Callable[[str], str]:
    return lambda text: clean_text(text, pattern)


def pattern_scrubber(pattern: re.Pattern[str]) -> Callable[[str], str]:
    return lambda text: scrub_known(text, pattern)


def _codec(ds: Dataset) -> str:
    charset = ds._character_set
    names = [charset] if isinstance(charset, str) else list(charset)
    return "utf-8" if any("192" in n or "utf" in n.lower() for n in names) else "latin-1"


def _is_type_uid_tag(tag: int) -> bool:
    known = _TYPE_UID_TAGS.get(tag)
    if known is None:
        known = _TYPE_UID_TAGS[tag] = is_type_uid(keyword_for_tag(tag))
    return known


def _map_ascii(tag: int, vr: str, elem: Element, src: Dataset, fn: Callable[[str], str]) -> Element:
    """``fn`` applied to each value of a UI, DA or DT element; kept raw when it was raw.

    A raw value is decoded here (these VRs are ASCII) and the result encoded the way
    pydicom writes it (values joined by backslashes, padded to even length), so the
    element never goes through pydicom's conversion.
    """
    if not isinstance(elem, RawDataElement) or elem.value is None:
        return _map_strings(src[tag], fn)
    text = elem.value.decode("latin-1").strip(" \x00")
    if not text:
        return elem
    new = "\\".join(fn(v.strip(" \x00")) for v in text.split("\\"))
    if len(new) % 2:
        new += "\x00" if vr == "UI" else " "
    data = new.encode("latin-1")
    return RawDataElement(
        elem.tag, vr, len(data), data, 0, elem.is_implicit_VR, elem.is_little_endian
    )


def _map_strings(elem: DataElement, fn: Callable[[str], str]) -> DataElement:
    value = elem.value
    if value is None or value == "":
        return elem
    if isinstance(value, (MultiValue, list, tuple)):
        new: object = [fn(str(v)) for v in value]
    else:
        new = fn(str(value))
    return DataElement(elem.tag, elem.VR, new)
