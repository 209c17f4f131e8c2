"""The engine on realistic files: sequences, references, file meta, dates, codes, pixels."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from medfed.node.ingest.dicom.burned import Rectangles, load_rectangles
from medfed.node.ingest.dicom.dates import shift_da
from medfed.node.ingest.dicom.deid import Deidentifier, Quarantined
from medfed.node.ingest.dicom.profile import Option

CT = "1.2.840.10008.5.1.4.1.1.2"
XA = "1.2.840.10008.5.1.4.1.1.12.1"
US = "1.2.840.10008.5.1.4.1.1.6.1"
SECRET = "node-a-secret"


def item(**values: object) -> Dataset:
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def ct(
    sop: str = "1.2.826.0.1.99.1.1", patient: str = "MRN0012345", sop_class: str = CT
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = "1.2.826.0.1.99.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.99.1.0"
    ds.FrameOfReferenceUID = "1.2.826.0.1.99.9"
    ds.PatientName = "Doe^John"
    ds.PatientID = patient
    ds.PatientBirthDate = "19600212"
    ds.StudyDate = "20210315"
    ds.SeriesDate = "20210315"
    ds.StudyTime = "101112"
    ds.AccessionNumber = "ACC778899"
    ds.InstitutionName = "Saint Elsewhere Hospital"
    ds.StudyDescription = "CT THORAX Doe John 12345678"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    # identifiers nested two levels deep, in sequences the table does not list
    ds.ReferencedSeriesSequence = Sequence(
        [
            item(
                SeriesInstanceUID="1.2.826.0.1.99.1.0",
                ReferencedInstanceSequence=Sequence(
                    [
                        item(
                            ReferencedSOPClassUID=CT,
                            ReferencedSOPInstanceUID="1.2.826.0.1.99.1.7",
                            PatientID="MRN0012345",
                            OperatorsName="Nurse^Ratched",
                            AccessionNumber="ACC778899",
                            InstitutionName="Saint Elsewhere Hospital",
                        )
                    ]
                ),
            )
        ]
    )
    ds.add_new(0x00291010, "LO", "Doe^John private")
    ds.add_new(0x00290010, "LO", "ACME PRIVATE")
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)
    return ds


def test_identifiers_in_nested_sequences_are_handled() -> None:
    out = Deidentifier(SECRET).deidentify(ct()).dataset
    inner = out.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert not inner.PatientID and "PatientID" in inner  # Z
    assert not inner.AccessionNumber and "AccessionNumber" in inner  # Z
    assert inner.OperatorsName == "ANONYMIZED"  # X/Z/D, Type 1 where nested → D
    assert inner.InstitutionName == "ANONYMIZED"
    assert inner.ReferencedSOPClassUID == CT
    assert inner.ReferencedSOPInstanceUID.startswith("2.25.")
    assert out.ReferencedSeriesSequence[0].SeriesInstanceUID == out.SeriesInstanceUID
    assert not [e for e in out if e.tag.is_private]
    assert not [e for e in out if e.tag.group == 0x6000]  # the overlay goes whole
    text = str(out)
    for identifier in ("Doe", "MRN0012345", "ACC778899", "Elsewhere", "19600212", "20210315"):
        assert identifier not in text


def test_references_map_to_the_referenced_files_new_uid() -> None:
    engine = Deidentifier(SECRET)
    image = engine.deidentify(ct(sop="1.2.826.0.1.99.1.7")).dataset
    xa = ct(sop="1.2.826.0.1.99.2.1", sop_class=XA)
    xa.ReferencedImageSequence = Sequence(
        [item(ReferencedSOPClassUID=CT, ReferencedSOPInstanceUID="1.2.826.0.1.99.1.7")]
    )
    out = engine.deidentify(xa).dataset
    ref = out.ReferencedImageSequence[0]  # X/Z/U*, Type 1 in the XA IOD → U
    assert ref.ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == CT
    inner = out.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert inner.ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert out.StudyInstanceUID == image.StudyInstanceUID  # one study, one new UID


def test_file_meta_follows_the_dataset_and_class_uids_stay() -> None:
    src = ct()
    out = Deidentifier(SECRET).deidentify(src).dataset
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID != src.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPClassUID == CT == out.SOPClassUID
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert len(out.SOPInstanceUID) <= 64 and out.SOPInstanceUID.startswith("2.25.")
    assert src.PatientName == "Doe^John" and src.SOPInstanceUID == "1.2.826.0.1.99.1.1"


def test_same_secret_same_outputs_other_secret_other_outputs() -> None:
    a1 = Deidentifier(SECRET).deidentify(ct()).dataset
    a2 = Deidentifier(SECRET).deidentify(ct()).dataset
    b = Deidentifier("another-node").deidentify(ct()).dataset
    keys = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID")
    assert [a1.get(k) for k in keys] == [a2.get(k) for k in keys]
    assert all(a1.get(k) != b.get(k) for k in keys)
    assert a1.PatientName == a1.PatientID and a1.PatientID.startswith("P")


def test_basic_profile_marks_the_file() -> None:
    result = Deidentifier(SECRET).deidentify(ct())
    out = result.dataset
    assert out.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert {i.CodingSchemeDesignator for i in out.DeidentificationMethodCodeSequence} == {"DCM"}
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert "StudyDate" in out and not out.StudyDate  # Z
    assert "SeriesDate" not in out  # X/D, Type 3 in the CT IOD → X
    assert "StudyDescription" not in out and "InstitutionName" not in out


def test_modified_dates_shift_by_one_offset_per_patient() -> None:
    engine = Deidentifier(SECRET, [Option.RETAIN_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS])
    out = engine.deidentify(ct()).dataset
    offset = engine.date_offset("MRN0012345")
    assert 1 <= abs(offset) <= 365
    assert out.StudyDate == out.SeriesDate == shift_da("20210315", offset) != "20210315"
    assert out.StudyTime == "101112"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == [
        "113100",
        "113105",
        "113107",
    ]
    assert out.StudyDescription == "CT THORAX"  # name and number cleaned away
    other = engine.deidentify(ct(patient="MRN-OTHER")).dataset
    assert other.StudyDate == shift_da("20210315", engine.date_offset("MRN-OTHER"))


def test_retain_options_keep_what_they_name() -> None:
    options = [Option.RETAIN_UIDS, Option.RETAIN_FULL_DATES, Option.RETAIN_INSTITUTION_IDENTITY]
    out = Deidentifier(SECRET, options).deidentify(ct()).dataset
    assert out.SOPInstanceUID == "1.2.826.0.1.99.1.1"
    assert out.file_meta.MediaStorageSOPInstanceUID == "1.2.826.0.1.99.1.1"
    assert (
        out.StudyDate == "20210315" and out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    )
    assert out.InstitutionName == "Saint Elsewhere Hospital"
    assert "PatientBirthDate" in out and not out.PatientBirthDate  # not a longitudinal date


def test_kept_text_loses_values_removed_elsewhere() -> None:
    ds = ct()
    ds.StructureSetLabel = "MRN0012345 plan"  # not in the 2020 table: kept, but scrubbed
    out = Deidentifier(SECRET).deidentify(ds).dataset
    assert out.StructureSetLabel == "plan"
    assert out.Manufacturer == "ACME"


def ultrasound(with_annotation: str | None = None) -> Dataset:
    ds = ct(sop_class=US)
    ds.Modality = "US"
    ds.Manufacturer = "ACME Ultrasound"
    ds.ManufacturerModelName = "Vision 5"
    if with_annotation is not None:
        ds.BurnedInAnnotation = with_annotation
    ds.Rows, ds.Columns = 32, 48
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (np.arange(32 * 48) % 200 + 20).astype(np.uint8).tobytes()
    return ds


def test_burned_in_text_quarantines_without_rectangles() -> None:
    with pytest.raises(Quarantined, match="modality US"):
        Deidentifier(SECRET).deidentify(ultrasound())
    with pytest.raises(Quarantined, match="Burned In Annotation is YES"):
        Deidentifier(SECRET).deidentify(ultrasound("YES"))
    assert Deidentifier(SECRET).deidentify(ultrasound("NO")).pixels_cleaned is False


def test_rectangles_blank_pixels_and_add_clean_pixel_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rects.toml"
    rules.write_text(
        '[[device]]\nmanufacturer = "acme ultrasound"\nmodel = " Vision 5 "\n'
        "rectangles = [[0, 0, 48, 4], [40, 20, 100, 100]]\n"
    )
    engine = Deidentifier(SECRET, rectangles=load_rectangles(rules))
    src = ultrasound()
    result = engine.deidentify(src)
    out = result.dataset
    pixels = np.frombuffer(out.PixelData, np.uint8).reshape(32, 48)
    before = np.frombuffer(src.PixelData, np.uint8).reshape(32, 48)
    assert (pixels[:4, :] == 0).all() and (pixels[20:, 40:] == 0).all()
    assert (pixels[4:20, :] == before[4:20, :]).all() and (before[:4] != 0).any()
    assert out.BurnedInAnnotation == "NO" and result.pixels_cleaned
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    compressed = ultrasound()
    compressed.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    with pytest.raises(Quarantined, match="compressed"):
        engine.deidentify(compressed)
    other = Rectangles({("other", "device"): ((0, 0, 1, 1),)})
    with pytest.raises(Quarantined, match="no pixel-cleaning rectangles"):
        Deidentifier(SECRET, rectangles=other).deidentify(ultrasound())


def test_bad_rectangles_file_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "r.json"
    bad.write_text('[{"manufacturer": "a", "model": "b", "rectangles": [[0, 0, 0, 5]]}]')
    with pytest.raises(Exception, match="empty rectangle"):
        load_rectangles(bad)
    bad.write_text('{"device": [{"manufacturer": "a"}]}')
    with pytest.raises(Exception, match="needs manufacturer, model and rectangles"):
        load_rectangles(bad)


def test_not_a_composite_instance_is_quarantined() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^John"
    with pytest.raises(Quarantined, match="SOP"):
        Deidentifier(SECRET).deidentify(ds)
