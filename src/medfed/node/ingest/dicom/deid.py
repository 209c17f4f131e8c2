"""De-identify one DICOM dataset by the PS3.15 Annex E table (Basic Profile + options).

How it runs: a :class:`Deidentifier` is made once per process from the node secret, the
options and the steward's pixel-cleaning rectangles. ``deidentify(ds)`` never changes
``ds``: it builds a new dataset element by element in one pass (:mod:`.walk`; kept
elements are shared, undecoded, changed ones are new, sequences are rebuilt item by item),
so the caller still holds the untouched source for verification. Per element, by its tag:

- listed in the table → the table's code with the options applied; a combined code is
  resolved by the attribute's Type in the file's IOD (:func:`.profile.resolve`);
  ``D`` dummy value of the VR (a sequence keeps its items, every text, name and date in
  them replaced by dummies unless the table says otherwise), ``Z`` zero length, ``X``
  removed, ``K`` kept (a sequence's items are processed), ``C`` cleaned (text: see
  :mod:`.clean`; dates under Modified Dates: shifted; a sequence: its items processed
  with their text cleaned; a binary value cannot be read for identifiers and
  is blanked: zeros, its length kept, so an overlay stays valid but empty), ``U`` keyed
  UID (:mod:`.uids`);
- private (odd group) → removed; under Retain Safe Private only private creators and
  numeric values (US, SS, UL, SL, FL, FD, ...) are kept;
- overlays (60xx): the whole group goes with Overlay Data (X), curves (50xx) by the mask;
- not listed → kept, except: dates (attributes newer than the 2020 table) are shifted under
  Modified Dates, kept under Full Dates, else zero-length; UIDs other than those naming a
  kind of thing (SOP Class, Transfer Syntax, coding scheme, ...) are replaced; elements
  unknown to the dictionary (VR UN) are removed; group lengths are dropped; kept text
  (LO, SH, ST, LT, UT, UC, PN) loses any value the profile removed elsewhere in the file
  (:func:`.clean.scrub_known`).

Then Patient ID and Patient's Name become the keyed pseudonym, and Patient Identity
Removed, De-identification Method (+ Code Sequence, CID 7050) and Longitudinal Temporal
Information Modified are set. A file whose pixels may carry burned-in text raises
:class:`Quarantined` unless rectangles for its device are given (see :mod:`.burned`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from medfed.node.ingest.dicom.burned import (
    PixelCleaningError,
    Rectangles,
    blank_rectangles,
    burned_in_reason,
)
from medfed.node.ingest.dicom.dates import patient_offset
from medfed.node.ingest.dicom.iodtypes import iod_type
from medfed.node.ingest.dicom.profile import (
    BASIC_CODE,
    CLEAN_PIXEL_CODE,
    OPTION_CODES,
    Option,
    Profile,
    build_profile,
    parse_options,
    resolve,
)
from medfed.node.ingest.dicom.uids import UidMapper
from medfed.node.ingest.dicom.walk import Walk
from medfed.node.ingest.keys import derive_key, patient_pseudonym

__all__ = ["DeidResult", "Deidentifier", "Quarantined"]

METHOD = "PS3.15 E.1 Basic Profile (medfed; table 2020-04)"
_OVERLAY_DATA = 0x60003000


class Quarantined(Exception):
    """The file cannot be released as is; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class DeidResult:
    dataset: Dataset
    pseudonym: str
    codes: list[str] = field(default_factory=list)
    pixels_cleaned: bool = False


class Deidentifier:
    """The node's de-identification engine for one profile; reusable across files."""

    def __init__(
        self,
        secret: str,
        options: Iterable[Option | str] = (),
        *,
        rectangles: Rectangles | None = None,
    ) -> None:
        self.options = parse_options(options)
        self.profile: Profile = build_profile(self.options)
        self.uids = UidMapper(derive_key(secret, "dicom-uid"))
        self.rectangles = rectangles
        self._patient_key = derive_key(secret, "patient-pseudonym")
        self._date_key = derive_key(secret, "date-offset")
        self._codes: dict[tuple[str, bool], dict[int, str | None]] = {}
        self.drop_overlays = self.profile.code_for(_OVERLAY_DATA) == "X"
        self.retain_uids = Option.RETAIN_UIDS in self.options
        self.modified = Option.RETAIN_MODIFIED_DATES in self.options
        self.full = Option.RETAIN_FULL_DATES in self.options

    def pseudonym(self, patient_id: str) -> str:
        """The keyed pseudonym that replaces Patient ID (and Patient's Name)."""
        return patient_pseudonym(self._patient_key, patient_id)

    def date_offset(self, patient_id: str) -> int:
        return patient_offset(self._date_key, patient_id.strip())

    def action(self, tag: int, sop_class: str, nested: bool) -> str | None:
        """The single action (D, Z, X, K, C, U) for ``tag`` in this IOD, or None if unlisted."""
        cache = self._codes.setdefault((sop_class, nested), {})
        if tag not in cache:
            code = self.profile.code_for(tag)
            if code is not None and "/" in code:
                code = resolve(code, iod_type(tag, sop_class, nested=nested))
            cache[tag] = code
        return cache[tag]

    def deidentify(self, ds: Dataset) -> DeidResult:
        if not ds.get("SOPClassUID") or not ds.get("SOPInstanceUID"):
            raise Quarantined("no SOP Class UID or SOP Instance UID: not a composite instance")
        rects = None
        reason = burned_in_reason(ds)
        if reason is not None:
            rects = self.rectangles.for_dataset(ds) if self.rectangles else None
            if rects is None:
                device = f"{ds.get('Manufacturer', '')!s} / {ds.get('ManufacturerModelName', '')!s}"
                raise Quarantined(f"{reason}; no pixel-cleaning rectangles for device {device!r}")
        patient_id = str(ds.get("PatientID", "") or "")
        sop_class = str(ds.get("SOPClassUID", "") or "")
        out = Walk(self, ds, sop_class, self.date_offset(patient_id)).run()
        pseudonym = self.pseudonym(patient_id)
        out.PatientID = pseudonym
        out.PatientName = pseudonym
        syntax = _transfer_syntax(ds)
        if rects is not None:
            try:
                blank_rectangles(out, rects, syntax)
            except PixelCleaningError as exc:
                raise Quarantined(str(exc)) from None
        codes = self._mark(out, pixels_cleaned=rects is not None)
        # the output keeps the encoding the source was read with (Walk sets it): pydicom then
        # writes kept elements byte for byte, or re-encodes them all when the transfer
        # syntax says otherwise (a file that claims explicit VR but is implicit)
        out.file_meta = self._file_meta(ds, out, syntax)
        return DeidResult(out, pseudonym, codes, pixels_cleaned=rects is not None)

    def _mark(self, out: Dataset, *, pixels_cleaned: bool) -> list[str]:
        used = [BASIC_CODE] + ([CLEAN_PIXEL_CODE] if pixels_cleaned else [])
        used += [OPTION_CODES[o] for o in sorted(self.options)]
        used.sort()
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = (
            [METHOD]
            + [o.value for o in sorted(self.options)]
            + (["clean-pixel-data"] if pixels_cleaned else [])
        )
        items = []
        implicit, little = out.original_encoding
        charset = out._character_set
        for value, meaning in used:
            item = Dataset(parent_encoding=charset)
            if implicit is not None and little is not None:  # written like the rest of out
                item.set_original_encoding(implicit, little, charset)
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        out.DeidentificationMethodCodeSequence = Sequence(items)
        out.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.modified else "UNMODIFIED" if self.full else "REMOVED"
        )
        return [value for value, _ in used]

    def _file_meta(self, src: Dataset, out: Dataset, syntax: UID) -> FileMetaDataset:
        source_meta = getattr(src, "file_meta", None) or FileMetaDataset()
        meta = FileMetaDataset()
        sop_class = source_meta.get("MediaStorageSOPClassUID") or out.get("SOPClassUID")
        if sop_class:
            meta.MediaStorageSOPClassUID = UID(str(sop_class))
        instance = out.get("SOPInstanceUID") or self.uids.map(
            str(source_meta.get("MediaStorageSOPInstanceUID", ""))
        )
        if instance:
            meta.MediaStorageSOPInstanceUID = UID(str(instance))
        meta.TransferSyntaxUID = syntax
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        return meta


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return UID(str(syntax))
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian
