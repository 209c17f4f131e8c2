"""The independent verifier: it finds every planted leak, nothing in a clean output, and is
not blind on pydicom's own test files (a file scanned against itself shows every identifier).

Sources are built with plain pydicom; the "de-identification" here is a deliberately naive
one written in the test (blank names, shift dates, replace UIDs, drop private tags and the
obviously identifying elements), so the verifier is checked against something other than
medfed's own engine.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medfed.node.ingest.dicom.verify import (
    FileScan,
    Finding,
    identifying_values,
    scan,
    scan_pair,
    write_reports,
)

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
NAME, FAMILY, GIVEN = "Moorcroft^Eleanor^Jane", "Moorcroft", "Eleanor"
SOP_UID = "1.2.826.0.1.3680043.10.999.1.1"
STUDY_UID = "1.2.826.0.1.3680043.10.999.2.1"
REF_IMAGE_UID = "1.2.826.0.1.3680043.10.999.1.7"
REF_STUDY_UID = "1.2.826.0.1.3680043.10.999.2.9"
TYPE_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID"}
DROP = {
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "StationName",
    "DeviceSerialNumber",
    "ImageComments",
    "OtherPatientIDsSequence",
    "RequestedProcedureID",
    "LocalNamespaceEntityID",
}


def item(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def make_source() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = SOP_UID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "RADPACS01"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, SOP_UID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, "1.2.826.0.1.3680043.10.999.3.1"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.999.4.1"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, "PID-778899", "19610304"
    ds.PatientSex, ds.PatientAge = "F", "062Y"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20230315"
    ds.AccessionNumber, ds.StudyID = "ACC55012", "ST7781"
    ds.InstitutionName, ds.InstitutionAddress = "St Hildegard Hospital", "12 Lindenweg, Musterstadt"
    ds.ReferringPhysicianName = "Okonkwo^Chidi"
    ds.PatientAddress, ds.PatientTelephoneNumbers = "Rosenstrasse 5^Kleinburg", "+49 30 1234 5678"
    ds.StationName, ds.DeviceSerialNumber = "CTSCAN-07", "SN99812"
    ds.Modality, ds.Manufacturer = "CT", "ACME"
    ds.StudyDescription, ds.SeriesDescription = "CT thorax", "axial 5mm"
    ds.ImageComments = "follow-up, prior study 14.02.2023"
    ds.OtherPatientIDsSequence = Sequence([item(PatientID="ALT-3321", TypeOfPatientID="TEXT")])
    ds.ReferencedImageSequence = Sequence(
        [item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=REF_IMAGE_UID)]
    )
    ref_study = item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=REF_STUDY_UID)
    issuer = item(LocalNamespaceEntityID="NS-HILDEGARD")
    ds.RequestAttributesSequence = Sequence(
        [
            item(
                RequestedProcedureID="RP-4471",
                ReferencedStudySequence=Sequence([ref_study]),
                IssuerOfAccessionNumberSequence=Sequence([issuer]),
            )
        ]
    )
    observer = item(ValueType="PNAME", PersonName="Varga^Istvan")
    ds.ContentSequence = Sequence(
        [item(ValueType="CONTAINER", ContentSequence=Sequence([observer]))]
    )
    block = ds.private_block(0x0029, "ACME_PRIVATE", create=True)
    block.add_new(0x10, "LO", "Moorcroft E 1961")
    block.add_new(0x11, "LO", "routine")
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(128)
    return ds


def new_uid(uid: str) -> str:
    return "2.25." + str(int(hashlib.sha256(uid.encode()).hexdigest()[:30], 16))


def shifted(value: str) -> str:
    day = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) - dt.timedelta(days=1000)
    return day.strftime("%Y%m%d") + value[8:]


def naive_clean(source: Dataset) -> Dataset:
    """A plain-pydicom de-identification: what the verifier must accept as clean."""
    out = copy.deepcopy(source)
    out.remove_private_tags()

    def fix(ds: Dataset, elem: DataElement) -> None:
        if elem.keyword in DROP:
            del ds[elem.tag]
        elif elem.VR == "PN":
            elem.value = ""
        elif elem.VR in ("DA", "DT") and elem.value:
            elem.value = shifted(str(elem.value))
        elif elem.VR == "UI" and elem.keyword not in TYPE_UIDS and elem.value:
            elem.value = new_uid(str(elem.value))

    out.walk(fix)
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    del out.file_meta.SourceApplicationEntityTitle
    out.PatientID, out.PatientAge = "PSEUDO0042", source.PatientAge
    return out


def file_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def put_private(ds: Dataset, value: str) -> None:
    ds.private_block(0x0029, "ACME_PRIVATE", create=True).add_new(0x10, "LO", value)


Leak = Callable[[Dataset], None]


def put(keyword: str, value: object, where: str = "") -> Leak:
    """Set ``keyword`` in the output, or in the item at ``where`` (``"Seq[0].Seq[0]"``)."""

    def leak(out: Dataset) -> None:
        target = out
        for step in filter(None, where.split(".")):
            name, index = step.rstrip("]").split("[")
            target = getattr(target, name)[int(index)]
        setattr(target, keyword, value)

    return leak


REQUEST, CONTENT = "RequestAttributesSequence[0]", "ContentSequence[0].ContentSequence[0]"
LEAKS: dict[str, tuple[Leak, str, str]] = {
    "uid two sequences deep": (
        put("ReferencedSOPInstanceUID", REF_STUDY_UID, f"{REQUEST}.ReferencedStudySequence[0]"),
        "uid",
        "(0040,0275)[0].(0008,1110)[0].(0008,1155)",
    ),
    "id two sequences deep": (
        put("UniversalEntityID", "NS-HILDEGARD", f"{REQUEST}.IssuerOfAccessionNumberSequence[0]"),
        "id",
        "(0040,0275)[0].(0008,0051)[0].(0040,0032)",
    ),
    "person name two sequences deep": (
        put("PersonName", "Varga^I", CONTENT),
        "person_name",
        "(0040,A730)[0].(0040,A730)[0].(0040,A123)",
    ),
    "referenced image uid": (
        put("ReferencedSOPInstanceUID", REF_IMAGE_UID, "ReferencedImageSequence[0]"),
        "uid",
        "(0008,1140)[0].(0008,1155)",
    ),
    "private tag with the name": (
        lambda o: put_private(o, "scan for MOORCROFT"),
        "patient_name",
        "(0029,1010)",
    ),
    "private tag in a sequence": (
        lambda o: put_private(o.ReferencedImageSequence[0], "PID-778899"),
        "patient_id",
        "(0008,1140)[0].(0029,1010)",
    ),
    "study description with the name": (
        put("StudyDescription", f"CT thorax {GIVEN} {FAMILY}"),
        "patient_name",
        "(0008,1030)",
    ),
    "file meta instance uid": (
        lambda o: setattr(o.file_meta, "MediaStorageSOPInstanceUID", SOP_UID),
        "uid",
        "(0002,0003)",
    ),
    "file meta source AE title": (
        lambda o: setattr(o.file_meta, "SourceApplicationEntityTitle", "RADPACS01"),
        "device",
        "(0002,0016)",
    ),
    "date left as it was": (put("AcquisitionDate", "20230315"), "date", "(0008,0022)"),
    "date as YYYY-MM-DD": (put("ImageComments", "scanned 2023-03-15"), "date", "(0020,4000)"),
    "birth date as DD.MM.YYYY": (put("PatientComments", "born 04.03.1961"), "date", "(0010,4000)"),
    "date from the source's free text": (
        put("SeriesDescription", "prior 20230214"),
        "date",
        "(0008,103E)",
    ),
    "other patient id": (
        put("OtherPatientIDsSequence", Sequence([item(PatientID="ALT-3321")])),
        "patient_id",
        "(0010,1002)[0].(0010,0020)",
    ),
    "accession number": (put("AccessionNumber", "ACC55012"), "id", "(0008,0050)"),
    "institution": (put("InstitutionName", "ST HILDEGARD HOSPITAL"), "institution", "(0008,0080)"),
    "phone number as digits": (put("PatientComments", "call 493012345678"), "phone", "(0010,4000)"),
    "address component": (put("ImageComments", "lives in Kleinburg"), "address", "(0020,4000)"),
    "referring physician": (
        put("ReferringPhysicianName", "Okonkwo^Chidi"),
        "person_name",
        "(0008,0090)",
    ),
    "device serial number": (put("DeviceSerialNumber", "SN99812"), "device", "(0018,1000)"),
    "name only in undecoded bytes": (
        lambda o: o.add_new(0x00291020, "OW", b"xx MOORCROFT xx"),
        "patient_name",
        "raw",
    ),
}


@pytest.fixture(scope="module")
def source() -> Dataset:
    return make_source()


def test_clean_output_has_no_findings(source: Dataset) -> None:
    out = naive_clean(source)
    assert scan_pair(source, out, output_bytes=file_bytes(out)) == []


@pytest.mark.parametrize("case", sorted(LEAKS))
def test_each_planted_leak_is_found(source: Dataset, case: str) -> None:
    leak, kind, path = LEAKS[case]
    out = naive_clean(source)
    leak(out)
    findings = scan_pair(source, out, output_bytes=file_bytes(out))
    found = [(f.kind, "raw" if f.path.startswith("raw@") else f.path) for f in findings]
    assert found == [(kind, path)], [str(f) for f in findings]


def test_identifiers_of_the_source(source: Dataset) -> None:
    idents = identifying_values(source)
    by_value = {i.value: i.kind for i in idents}
    assert by_value[NAME] == "patient_name"
    assert by_value["PID-778899"] == "patient_id"
    assert by_value["ALT-3321"] == "patient_id"
    assert by_value["20230315"] == by_value["19610304"] == by_value["20230214"] == "date"
    assert by_value[REF_STUDY_UID] == by_value[SOP_UID] == "uid"
    assert by_value["Moorcroft E 1961"] == "private"  # a private value holding the name
    assert CTImageStorage not in by_value  # well-known UIDs are not identifiers
    assert "TEXT" not in by_value and "routine" not in by_value
    forms = {f.text for i in idents if i.value == "20230315" for f in i.forms}
    assert {"20230315", "2023-03-15", "15.03.2023", "03/15/2023"} <= forms
    name_forms = {f.text for i in idents if i.value == NAME for f in i.forms}
    assert {"moorcroft", "eleanor", "jane"} <= name_forms


def test_short_and_generic_values_are_skipped() -> None:
    ds = item(PatientName="ANONYMOUS", PatientID="NA", StudyID="12", AccessionNumber="none")
    ds.InstitutionName, ds.PatientBirthDate = "Unknown", "19000101"
    assert identifying_values(ds) == []
    ds.ReferringPhysicianName = "Li^Wu"  # components under 3 letters: only the whole name
    (ident,) = identifying_values(ds)
    assert [f.text for f in ident.forms] == ["li^wu"]


def test_kept_kinds_can_be_ignored(source: Dataset) -> None:
    out = naive_clean(source)
    out.StationName = "CTSCAN-07"  # kept with Retain Device Identity
    assert [f.kind for f in scan_pair(source, out)] == ["device"]
    assert scan_pair(source, out, ignore_kinds={"device"}) == []


def test_findings_mask_the_value(source: Dataset, tmp_path: Path) -> None:
    out = naive_clean(source)
    out.StudyDescription = f"{FAMILY} study"
    out.AccessionNumber = "ACC55012"
    findings = scan_pair(source, out)
    assert {f.kind for f in findings} == {"patient_name", "id"}
    summary = write_reports({"a/1.dcm": FileScan(str(out.SeriesInstanceUID), findings)}, tmp_path)
    assert summary["ok"] is False and summary["findings"] == 2
    text = " ".join(p.read_text() for p in tmp_path.glob("*.json"))
    text += " ".join(str(f) + repr(f) for f in findings)
    assert FAMILY not in text and "ACC55012" not in text
    assert "(0008,1030)" in text and "(0008,0050)" in text


def test_reports_merge_per_series_and_summarise(tmp_path: Path) -> None:
    leak = Finding("date", "(0008,0020)", "DA", "2*******[8]", "(0008,0020)")
    write_reports({"s1/a.dcm": FileScan("1.2.3"), "s2/b.dcm": FileScan("1.2.4")}, tmp_path)
    summary = write_reports({"s1/c.dcm": FileScan("1.2.3", [leak])}, tmp_path)
    assert summary["series"] == 2 and summary["files_scanned"] == 3
    assert summary["by_kind"] == {"date": 1} and summary["series_with_findings"] == ["1.2.3"]
    report = json.loads((tmp_path / "series-1.2.3.json").read_text())
    assert sorted(report["files"]) == ["s1/a.dcm", "s1/c.dcm"] and report["ok"] is False
    summary = write_reports({"s1/c.dcm": FileScan("1.2.3")}, tmp_path)  # re-scanned clean
    assert summary["ok"] is True and summary["files_scanned"] == 3


def readable_test_files() -> list[tuple[str, Dataset, bytes]]:
    out = []
    for path in sorted(PYDICOM_FILES.rglob("*")):  # incl. DICOMDIR sets and charset files
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        data = path.read_bytes()
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception:
            continue
        out.append((path.name, ds, data))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_scanner_is_not_blind_on_pydicom_test_files() -> None:
    files = readable_test_files()
    assert len(files) > 150
    with_identifiers = 0
    for name, ds, data in files:
        idents = identifying_values(ds)
        if not idents:
            continue
        with_identifiers += 1
        assert scan(ds, idents, output_bytes=data), name
    assert with_identifiers > 150


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm"])
def test_every_identifier_is_found_in_its_own_file(name: str) -> None:
    path = get_testdata_file(name, download=False)
    assert path is not None
    data = Path(path).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    idents = identifying_values(ds)
    assert idents
    for ident in idents:
        assert scan(ds, [ident]), (name, ident.kind, ident.source)
    kinds = {i.kind for i in idents}
    assert {"patient_name", "date", "uid"} <= kinds


def test_a_common_date_shift_is_not_a_leak(source: Dataset) -> None:
    src = copy.deepcopy(source)
    src.ContentDate = "20230316"  # the day after the study: shifted by +1, it meets it
    out = naive_clean(src)
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "PatientBirthDate"):
        setattr(out, keyword, shift_days(str(getattr(src, keyword)), 1))
    out.ContentDate = "20230317"
    out.ContentSequence[0].ContentSequence[0].PersonName = ""
    assert scan_pair(src, out) == []
    out.ContentDate = "20230316"  # left as it was: the shift is no longer common
    assert [(f.kind, f.path) for f in scan_pair(src, out)] == [("date", "(0008,0023)")]


def test_uid_roots_and_derived_uids(source: Dataset) -> None:
    src = copy.deepcopy(source)
    src.InstanceCreatorUID = "1.2.826.0.1.3680043.8.498"  # a root, not a person's UID
    out = naive_clean(src)
    out.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    assert scan_pair(src, out, output_bytes=file_bytes(out)) == []
    out.SOPInstanceUID = SOP_UID + ".1"  # derived from the source UID: a leak
    found = scan_pair(src, out, output_bytes=file_bytes(out))
    assert [(f.kind, f.path) for f in found] == [("uid", "(0008,0018)")]


def shift_days(value: str, days: int) -> str:
    day = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) + dt.timedelta(days=days)
    return day.strftime("%Y%m%d")
