"""The fast encoder writes exactly the bytes pydicom's dcmwrite writes for ingest outputs.

De-identified outputs of pydicom's test files (explicit and implicit VR, big endian,
compressed and encapsulated pixel data, sequences, character sets, private elements under
Retain Safe Private) are encoded both ways and compared byte for byte; so are datasets
that must take pydicom's way (a VR the transfer syntax lies about, a private syntax).
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import DATA_ROOT
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from medfed.node.ingest.dicom.deid import Deidentifier
from medfed.node.ingest.dicom.encode import encode_file
from medfed.node.ingest.dicom.walk import Walk
from medfed.node.ingest.dicom.worker import _parse

TEST_FILES = sorted(Path(DATA_ROOT, "test_files").rglob("*.dcm"))
OPTION_SETS = [
    (),
    ("retain-safe-private", "retain-modified-dates", "clean-descriptors", "retain-uids"),
    ("retain-full-dates", "retain-device-identity", "retain-patient-characteristics"),
]


def _pydicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _outputs(options: tuple[str, ...]) -> list[tuple[str, Dataset]]:
    engine = Deidentifier("encode-test-secret", options)
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in TEST_FILES:
            try:
                ds = _parse(path.read_bytes())
                found.append((path.name, engine.deidentify(ds).dataset))
            except Exception:  # not DICOM, corrupt, burned-in text: no output
                continue
    return found


@pytest.mark.parametrize("options", OPTION_SETS, ids=["basic", "retain-mixed", "retain-other"])
def test_encoded_outputs_equal_dcmwrite_byte_for_byte(options: tuple[str, ...]) -> None:
    outputs = _outputs(options)
    assert len(outputs) >= 25  # enough variety: explicit, implicit, big endian, compressed
    syntaxes = {str(ds.file_meta.TransferSyntaxUID) for _, ds in outputs}
    assert len(syntaxes) >= 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, ds in outputs:
            expected = _pydicom_bytes(copy.deepcopy(ds))
            assert encode_file(ds) == expected, name


def test_encoded_file_reads_back_with_the_same_elements() -> None:
    _, ds = next((n, d) for n, d in _outputs(()) if n == "MR_small.dcm")
    back = pydicom.dcmread(io.BytesIO(encode_file(copy.deepcopy(ds))))
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert [int(t) for t in back._dict] == sorted(int(t) for t in ds._dict)
    assert back.PatientIdentityRemoved == "YES"
    assert back.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert back.PixelData == ds.PixelData


def _dataset(syntax: str, *, implicit: bool) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.StudyDate = "20240131"
    item = Dataset()
    item.CodeValue = "113100"
    ds.DeidentificationMethodCodeSequence = [item]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.set_original_encoding(implicit, True, "iso8859")
    return ds


def test_a_dataset_read_in_another_encoding_is_written_by_pydicom() -> None:
    # read as implicit VR but to be written as explicit VR: pydicom converts every element
    ds = _dataset(ExplicitVRLittleEndian, implicit=True)
    expected = _pydicom_bytes(copy.deepcopy(ds))
    assert encode_file(ds) == expected
    assert pydicom.dcmread(io.BytesIO(expected)).PatientName == "Doe^Jane"


def test_new_elements_and_items_match_dcmwrite_in_both_vr_encodings() -> None:
    for syntax, implicit in ((ExplicitVRLittleEndian, False), (ImplicitVRLittleEndian, True)):
        ds = _dataset(syntax, implicit=implicit)
        ds.OtherPatientIDs = ["A1", "B22"]  # multi-valued text
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.Rows = 4
        expected = _pydicom_bytes(copy.deepcopy(ds))
        assert encode_file(ds) == expected


def test_walk_keeps_unchanged_elements_raw_and_maps_uids_without_decoding() -> None:
    path = Path(DATA_ROOT, "test_files", "CT_small.dcm")
    source = _parse(path.read_bytes())
    engine = Deidentifier("encode-test-secret")
    out = Walk(engine, source, str(source.SOPClassUID), 0).run()
    series = out._dict[0x0020000E]  # a raw element: the UID was mapped from its bytes
    assert isinstance(series, pydicom.dataelem.RawDataElement)
    assert series.value is not None and len(series.value) % 2 == 0
    assert series.value.rstrip(b"\x00").decode() == engine.uids.map(str(source.SeriesInstanceUID))
