"""What the verifier counts as identifying: its own rules, independent of the Annex E table.

How it runs: pure functions, no state. :func:`classify` looks at one source element
(keyword, VR, private or not) and names the kind of identifier it holds, if any;
:func:`value_forms` turns one value into the spellings the scanner searches for (a date in
eight notations, a person name and its components, a phone number and its digits) with the
boundary rule each spelling needs; :func:`free_text_identifiers` pulls dates, labelled IDs,
e-mail addresses and phone numbers out of free text. The rules are deliberately written
from the kinds of value a person can be recognised by (names, IDs, dates, UIDs, places,
contacts, devices), not from the de-identification profile, so that the verifier is a
second opinion rather than a copy of the code it checks.

Values skipped as too short or generic to be meaningful: anything under 3 characters after
trimming, the words in :data:`GENERIC`, numeric IDs of fewer than 6 digits in the raw-byte
search (they are still searched in decoded text elements; so are spellings under 5
characters, which turn up by chance in binary data), placeholder dates in
:data:`PLACEHOLDER_DATES`, and well-known UIDs (under ``1.2.840.10008.`` or in pydicom's
UID dictionary).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import NamedTuple

from pydicom._dicom_dict import DicomDictionary

__all__ = [
    "GENERIC",
    "KIND_PRIORITY",
    "PLACEHOLDER_DATES",
    "Finding",
    "Form",
    "Identifier",
    "classify",
    "free_text_identifiers",
    "is_type_uid",
    "make_form",
    "mask",
    "value_forms",
]

# kinds, most sensitive first: a value that is both a Patient ID and a Study ID is reported
# as a Patient ID
KIND_PRIORITY = (
    "patient_name",
    "patient_id",
    "date",
    "uid",
    "person_name",
    "id",
    "address",
    "phone",
    "institution",
    "device",
    "private",
)

GENERIC = frozenset(
    {
        *("anonymous", "anonymized", "anonymised", "anon", "unknown", "none", "null", "nil"),
        *("n/a", "test", "phantom", "patient", "yes", "no", "other", "male", "female", "name"),
        *("dr", "mr", "mrs", "ms", "miss", "prof", "jr", "sr", "md", "phd", "the", "and"),
        *("van", "von", "der", "den", "del", "dos", "das", "les", "ter", "ten", "removed"),
        *("deidentified", "redacted", "dummy", "not", "applicable", "unnamed", "default"),
        *("text", "enter", "first", "last", "given", "family", "middle"),
    }
)
PLACEHOLDER_DATES = frozenset({"00000000", "00010101", "19000101", "18991230", "99991231"})

_PATIENT_NAMES = {"PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName"}
_PATIENT_IDS = {"PatientID", "OtherPatientIDs", "MedicalRecordLocator"}
_IDS = {
    "AccessionNumber",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberProcedure",
    "PlacerOrderNumberProcedure",
    "InsurancePlanIdentification",
}
_NOT_IDS = {"TypeOfPatientID", "ImplementationVersionName", "SoftwareVersions", "StackID"}
_ID_SUFFIXES = ("ID", "IDs", "Identifier", "Number", "Numbers")
_ID_VRS = {"SH", "LO", "UC", "UT", "ST"}
_DEVICE = {
    "StationName",
    "PerformedStationName",
    "ScheduledStationName",
    "DeviceSerialNumber",
    "DeviceID",
    "DeviceUID",
    "DeviceLabel",
    "DetectorID",
    "GantryID",
    "PlateID",
    "CassetteID",
    "SecondaryCaptureDeviceID",
    "XRayDetectorID",
}
_INSTITUTION = {"InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName"}
_PLACES = {
    "RegionOfResidence",
    "PatientInstitutionResidence",
    "CurrentPatientLocation",
    "PerformedLocation",
    "ScheduledProcedureStepLocation",
    "AssignedLocation",
}
# UIDs that name a kind of thing (SOP class, transfer syntax, software, coding scheme), not
# an instance: they identify no one and de-identification keeps them
_TYPE_UIDS = {
    "SOPClassUID",
    "MediaStorageSOPClassUID",
    "ReferencedSOPClassUID",
    "ReferencedSOPClassUIDInFile",
    "AffectedSOPClassUID",
    "RequestedSOPClassUID",
    "RelatedGeneralSOPClassUID",
    "OriginalSpecializedSOPClassUID",
    "TransferSyntaxUID",
    "ReferencedTransferSyntaxUIDInFile",
    "ImplementationClassUID",
    "CodingSchemeUID",
    "MappingResourceUID",
    "ContextUID",
    "ContextGroupExtensionCreatorUID",
    "TemplateExtensionOrganizationUID",
    "TemplateExtensionCreatorUID",
    "PrivateInformationCreatorUID",
    "CreatorVersionUID",
}
_STRING_VRS = {"SH", "LO", "UC", "UT", "ST", "LT", "CS", "UR"}
_FREE_TEXT_VRS = {"UT", "ST", "LT"}
_FREE_TEXT_WORDS = (
    *("Description", "Comment", "History", "Note", "Reason", "Remark", "Alert", "Allerg"),
    *("Diagnos", "Impression", "Finding", "Text", "Protocol", "Occupation", "Label"),
)


class Form(NamedTuple):
    """One spelling to search for, lower-cased, with its boundary rule.

    ``mode``: ``word`` (no letter or digit on either side), ``number`` (no digit, and no
    decimal point that continues a number, on either side), ``date`` (like ``number`` on
    the left, anything on the right so that a date inside a date-time is found) or ``uid``
    (no digit or dot before, no digit after, so a UID with a suffix appended is found).
    ``raw``: also searched in the raw bytes and in binary values; short spellings are not,
    as they turn up by chance in binary data and in the text of measurements.
    """

    text: str
    mode: str
    raw: bool


def make_form(text: str, mode: str) -> Form:
    short = len(text) < (6 if mode == "number" and text.isdigit() else 5)
    return Form(text.lower(), mode, not short)


def mask(value: str) -> str:
    """A value as reports show it: first character, stars, length (``'D***[8]'``)."""
    if not value:
        return "[0]"
    return f"{value[0]}{'*' * min(len(value) - 1, 8)}[{len(value)}]"


@dataclass(frozen=True, slots=True)
class Identifier:
    """One identifying value of a source file and the spellings searched for it."""

    kind: str
    value: str = field(repr=False)
    source: str  # tag path in the source
    forms: tuple[Form, ...] = field(repr=False, compare=False)

    @property
    def masked(self) -> str:
        return mask(self.value)


@dataclass(frozen=True, slots=True)
class Finding:
    """An identifier of the source seen in the output."""

    kind: str  # the identifier's kind (patient_name, date, uid, ...)
    path: str  # tag path in the output, e.g. (0008,1140)[0].(0008,1155); raw@<offset>
    value_kind: str  # VR of the output element it was found in; "raw" for raw bytes
    masked: str  # the identifier, masked
    source: str  # where the identifier is in the source

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.path} [{self.value_kind}]"
        return f"{self.kind} {self.masked} (source {self.source}) in {where}"


_TYPE_UID_TAGS = frozenset(
    tag for tag, entry in DicomDictionary.items() if entry[0] == "UI" and entry[4] in _TYPE_UIDS
)


def is_type_uid(tag: int) -> bool:
    """Whether ``tag`` holds a UID that names a kind of thing (SOP class, syntax, software)."""
    return tag in _TYPE_UID_TAGS


@lru_cache(maxsize=8192)
def classify(keyword: str, vr: str, private: bool) -> str | None:
    """The identifier kind of a source element, or None.

    Two more answers name where identifiers may be written inside a value: ``text`` (free
    text, private and unknown values: dates, labelled IDs, e-mails, phone numbers) and
    ``other`` (any other string, a model name or a code: dates and e-mails only).
    """
    if vr == "PN":
        return "patient_name" if keyword in _PATIENT_NAMES else "person_name"
    if vr == "UI":
        if keyword in _TYPE_UIDS:
            return None
        return "device" if keyword in _DEVICE else "uid"
    if vr in ("DA", "DT"):
        return "date"
    if vr == "AE":
        return "device"
    if vr not in _STRING_VRS:
        return "text" if vr == "UN" or private else None
    if keyword in _PATIENT_IDS:
        return "patient_id"
    if keyword in _DEVICE or keyword.endswith("SerialNumber"):
        return "device"
    if keyword in _INSTITUTION:
        return "institution"
    if "Address" in keyword or keyword in _PLACES:
        return "address"
    if "Telephone" in keyword or "Telecom" in keyword or keyword == "OrderCallbackPhoneNumber":
        return "phone"
    if keyword in _IDS or (
        vr in _ID_VRS and keyword.endswith(_ID_SUFFIXES) and keyword not in _NOT_IDS
    ):
        return "id"
    if private or vr in _FREE_TEXT_VRS or any(w in keyword for w in _FREE_TEXT_WORDS):
        return "text"
    return "other"


def _meaningful(value: str) -> bool:
    value = value.strip()
    return sum(c.isalnum() for c in value) >= 3 and value.lower() not in GENERIC


def _date_forms(value: str) -> list[Form]:
    """``YYYYMMDD`` plus the notations people write it in."""
    if value in PLACEHOLDER_DATES:
        return []
    try:
        day = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return [make_form(value, "word")] if _meaningful(value) else []
    y, m, d = f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}"
    spelled = [f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}.{m}.{d}", f"{d}.{m}.{y}"]
    spelled += [f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}-{m}-{y}"]
    return [make_form(value, "date"), *(make_form(s, "number") for s in spelled)]


def _name_forms(value: str) -> list[Form]:
    """A person name: the whole value and every component of 3+ characters."""
    forms = [make_form(value, "word")] if _meaningful(value) else []
    for group in value.split("="):
        for part in group.split("^"):
            part = part.strip()
            if part != value and _meaningful(part):
                forms.append(make_form(part, "word"))
            words = re.split(r"[\s\-]+", part)
            if len(words) > 1:
                forms += [make_form(w, "word") for w in words if len(w) >= 4 and _meaningful(w)]
    return forms


def _plain_forms(value: str) -> list[Form]:
    if not _meaningful(value):
        return []
    if value.isdigit():
        return [make_form(value, "number")]
    return [make_form(value, "word")]


@lru_cache(maxsize=16384)
def value_forms(kind: str, value: str) -> tuple[Form, ...]:
    """The spellings searched for one identifying ``value`` of ``kind`` (may be empty).

    Cached: the files of one series share most of their identifiers.
    """
    return tuple(_value_forms(kind, value))


def _value_forms(kind: str, value: str) -> list[Form]:
    value = value.strip().strip("\x00").strip()
    if not value:
        return []
    if kind == "date":
        digits = value.split("-")[0].strip()[:8]  # DA, DA range or DT: the date part
        return _date_forms(digits) if len(digits) == 8 else _plain_forms(value)
    if kind in ("patient_name", "person_name"):
        return _name_forms(value)
    if kind == "uid":
        return [make_form(value, "uid")] if len(value) >= 8 else []
    if kind == "phone":
        forms = _plain_forms(value)
        digits = re.sub(r"\D", "", value)
        if len(digits) >= 7 and digits != value:
            forms.append(make_form(digits, "number"))
        return forms
    if kind == "address":
        forms = _plain_forms(value)
        parts = [p.strip() for p in re.split(r"[\^,;\r\n]+", value)]
        forms += [make_form(p, "word") for p in parts if p != value and len(p) >= 5]
        return forms
    return _plain_forms(value)


# Each pattern is tried only where a cheap candidate search (a C-speed scan for a run of
# digits, a separator or an @) found something, so free text costs little to read.
_DIGIT_RUN = re.compile(r"[+\d][\d ()./\-]{5,}\d")
_DATE_IN_TEXT = re.compile(
    r"(?<![\d.])(?:(?P<y1>(?:19|20)\d\d)(?P<s1>[-/.]?)(?P<m1>[01]\d)(?P=s1)(?P<d1>[0-3]\d)"
    r"|(?P<a2>[0-3]?\d)(?P<s2>[./-])(?P<b2>[0-3]?\d)(?P=s2)(?P<y2>(?:19|20)\d\d))(?![\d])"
)
_PHONE = re.compile(r"(?<![\w.])\+?\d[\d ()\-]{6,}\d(?![\w.])")
_SEPARATOR = re.compile(r"[:#=]")
_ID_LABEL = re.compile(
    r"(?:\bMRN|\bPID|\bpatient\s*id|\bID|\bacc(?:ession)?(?:\s*(?:no|number))?|\bcase)\.?\s*$",
    re.IGNORECASE,
)
_ID_AFTER = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9\-/]{2,})")
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")


def _valid(y: str, m: str, d: str) -> str | None:
    try:
        return dt.date(int(y), int(m), int(d)).strftime("%Y%m%d")
    except ValueError:
        return None


def free_text_identifiers(text: str, *, contacts: bool = True) -> Iterator[tuple[str, str, int]]:
    """``(kind, value, offset)`` for the dates, labelled IDs, e-mails and phones in ``text``.

    ``contacts=False`` (model names, codes, binary values read as Latin-1): only dates and
    e-mails are taken; runs of digits there are part numbers, not phone numbers.
    """
    for run in _DIGIT_RUN.finditer(text):
        dates = set()
        for match in _DATE_IN_TEXT.finditer(text, run.start(), run.end()):
            if match["y1"]:
                candidates = [_valid(match["y1"], match["m1"], match["d1"])]
            else:  # DD.MM.YYYY or MM/DD/YYYY: both readings that make a date
                candidates = [
                    _valid(match["y2"], match["b2"], match["a2"]),
                    _valid(match["y2"], match["a2"], match["b2"]),
                ]
            for value in candidates:
                if value is not None:
                    dates.add(match.start())
                    yield "date", value, match.start()
        if contacts:
            for match in _PHONE.finditer(text, run.start(), run.end()):
                if match.start() not in dates and sum(c.isdigit() for c in match[0]) >= 7:
                    yield "phone", match[0], match.start()
    if "@" in text:
        for match in _EMAIL.finditer(text):
            yield "address", match[0], match.start()
    if not contacts:
        return
    for sep in _SEPARATOR.finditer(text):
        at = sep.start()
        if _ID_LABEL.search(text, max(0, at - 24), at):
            after = _ID_AFTER.match(text, at + 1)
            if after is not None:
                yield "id", after[1], at + 1
