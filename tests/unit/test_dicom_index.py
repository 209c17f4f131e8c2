"""Imaging index, NIfTI conversion and catalogue summary on pydicom's own test files.

The index is written as Parquet and opened with the node's TableStore (the path algorithms
use); NIfTI files are read back with nibabel and each slice's position is checked against
its DICOM ImagePositionPatient; summaries never show a count under the threshold.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from sklearn.datasets import load_diabetes

from medfed.common.errors import BadRequest, Refused
from medfed.common.filter_text import parse_filter_text
from medfed.common.schemas import ColumnType
from medfed.node.agent import read_summary
from medfed.node.config import DatasetConfig
from medfed.node.ingest.dicom.index import INDEX_COLUMNS, index_row, write_index
from medfed.node.ingest.dicom.nifti import convert_index, series_volume, write_series
from medfed.node.ingest.dicom.summary import summarize, summarize_table, write_summary
from medfed.node.stores.tables import TableStore

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
CT_SERIES = sorted((TEST_FILES / "dicomdirtests/98892001/CT5N").glob("*"))
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def data_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not installed"
    return Path(path)


def rows_for(paths: list[Path]) -> list[dict[str, Any]]:
    return [index_row(pydicom.dcmread(p), p) for p in paths]


@pytest.fixture(scope="module")
def index_rows() -> list[dict[str, Any]]:
    names = ["CT_small.dcm", "MR_small.dcm", "eCT_Supplemental.dcm", "emri_small.dcm"]
    return rows_for([data_file(n) for n in names] + CT_SERIES)


def test_index_opens_as_a_typed_table(index_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    json.dumps(index_rows)  # rows travel through the runner's JSON state
    (parquet,) = write_index(index_rows, tmp_path / "index.parquet")
    store = TableStore.open(parquet)
    expected = {"string": ColumnType.string, "integer": ColumnType.integer}
    expected |= {"float": ColumnType.float, "date": ColumnType.date}
    assert [(c.name, c.type) for c in store.columns] == [
        (name, expected[kind]) for name, kind in INDEX_COLUMNS.items()
    ]
    assert store.row_count == 4 + len(CT_SERIES)
    frame = store.select(list(INDEX_COLUMNS)).set_index("sop_instance_uid")
    ct = frame.loc[str(pydicom.dcmread(data_file("CT_small.dcm")).SOPInstanceUID)]
    assert (ct["modality"], ct["rows"], ct["columns"], ct["number_of_frames"]) == (
        "CT",
        128,
        128,
        1,
    )
    assert ct["pixel_spacing_row"] == pytest.approx(0.661468)
    assert (
        ct["slice_thickness"] == pytest.approx(5.0) and ct["manufacturer"] == "GE MEDICAL SYSTEMS"
    )
    assert ct["image_orientation"] == "1\\0\\0\\0\\1\\0"
    assert ct["image_position_z"] == pytest.approx(-75.7, abs=1e-4)
    assert (
        ct["patient_pseudonym"] == "1CT1"
        and ct["file_size"] == data_file("CT_small.dcm").stat().st_size
    )
    enhanced = frame[frame["modality"] == "CT"].sort_values("number_of_frames").iloc[-1]
    assert enhanced["number_of_frames"] == 2  # eCT_Supplemental: geometry from functional groups
    assert enhanced["pixel_spacing_col"] == pytest.approx(0.388672)
    assert enhanced["slice_thickness"] == pytest.approx(10.0)
    assert store.count(parse_filter_text("acquisition_date >= '2000-01-01'")) == store.row_count - 1


def test_index_joins_clinical_tables_on_the_pseudonym(
    index_rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    (index_path,) = write_index(index_rows, tmp_path / "index.parquet")
    patients = sorted({r["patient_pseudonym"] for r in index_rows} - {None})
    clinical = pd.DataFrame({"patient_pseudonym": patients, "age": range(len(patients))})
    clinical.to_parquet(tmp_path / "clinical.parquet", index=False)
    images = TableStore.open(index_path).select(["patient_pseudonym", "modality"])
    table = TableStore.open(tmp_path / "clinical.parquet").select(["patient_pseudonym", "age"])
    joined = images.merge(table, on="patient_pseudonym", how="inner")
    assert len(joined) == sum(r["patient_pseudonym"] is not None for r in index_rows)
    mr = TableStore.open(index_path).count(parse_filter_text("modality == 'MR'"))
    assert mr == 2


def test_index_paths_are_relative_and_csv_is_optional(tmp_path: Path) -> None:
    out = tmp_path / "dataset" / "p1" / "a.dcm"
    ds = pydicom.dcmread(data_file("MR_small.dcm"))
    row = index_row(ds, out)  # before the file is in place: its size comes later
    assert row["file_size"] is None and index_row(ds, out, size=7)["file_size"] == 7
    out.parent.mkdir(parents=True)
    out.write_bytes(data_file("MR_small.dcm").read_bytes())
    written = write_index([row], tmp_path / "dataset" / "index.parquet", csv=True)
    assert [p.name for p in written] == ["index.parquet", "index.csv"]
    frame = TableStore.open(written[0]).select(["path", "file_size"])
    assert frame.to_dict("list") == {"path": ["p1/a.dcm"], "file_size": [out.stat().st_size]}
    assert list(TableStore.open(written[1]).select(["path", "rows"]).columns) == ["path", "rows"]


def test_index_row_without_geometry_has_gaps() -> None:
    ds = Dataset()
    ds.PatientID, ds.Modality = "P1", "SR"
    row = index_row(ds, "nowhere.dcm")
    assert set(row) == set(INDEX_COLUMNS)
    assert row["rows"] is None and row["pixel_spacing_row"] is None and row["file_size"] is None


def test_ct_series_to_nifti_with_slice_positions(tmp_path: Path) -> None:
    datasets = [pydicom.dcmread(p) for p in CT_SERIES]
    shuffled = datasets[:]
    random.Random(3).shuffle(shuffled)
    volume = series_volume(shuffled)
    assert volume.data.shape == (16, 16, 5)
    assert volume.zooms == pytest.approx((0.488281, 0.488281, 2.5))
    by_z = sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
    for k, ds in enumerate(by_z):  # slice k sits at its own position, rows and columns swapped
        corner = volume.affine @ np.array([0, 0, k, 1.0])
        assert corner[:3] == pytest.approx(LPS_TO_RAS * np.array(ds.ImagePositionPatient, float))
        expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(volume.data[:, :, k], expected.T)
    target = write_series(shuffled, tmp_path, session=2)
    sub = datasets[0].PatientID
    assert target == tmp_path / f"sub-{sub}/ses-2/anat/sub-{sub}_ses-2_ct.nii.gz"
    image: Any = nib.load(str(target))
    assert image.shape == (16, 16, 5)
    assert np.allclose(image.affine, volume.affine, atol=1e-4)
    assert np.array_equal(np.asarray(image.dataobj), volume.data)


@pytest.mark.parametrize(
    ("name", "shape", "zooms"),
    [
        ("CT_small.dcm", (128, 128, 1), (0.661468, 0.661468, 5.0)),
        ("MR_small.dcm", (64, 64, 1), (0.3125, 0.3125, 0.8)),
        ("eCT_Supplemental.dcm", (512, 512, 2), (0.388672, 0.388672, 10.0)),
    ],
)
def test_single_and_multi_frame_files_to_nifti(
    name: str, shape: tuple[int, ...], zooms: tuple[float, ...], tmp_path: Path
) -> None:
    ds = pydicom.dcmread(data_file(name))
    target = write_series([ds], tmp_path)
    image: Any = nib.load(str(target))
    assert image.shape == shape
    assert image.header.get_zooms() == pytest.approx(zooms, rel=1e-5)
    sidecar = json.loads(target.with_name(target.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Modality"] == ds.Modality and sidecar["Dimensions"] == list(shape)
    text = json.dumps(sidecar)
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SOPInstanceUID", "StudyDate"):
        value = str(ds.get(keyword) or "")
        assert keyword not in text and (not value or value not in text)


def test_convert_index_lays_out_bids_sessions(tmp_path: Path) -> None:
    rows = rows_for([*CT_SERIES, data_file("CT_small.dcm"), data_file("rtplan.dcm")])
    result = convert_index(rows, tmp_path / "bids")
    assert result["skipped"] == {} and len(result["written"]) == 2
    for written in result["written"]:
        assert nib.load(written).ndim == 3 and Path(written).relative_to(tmp_path / "bids")


def test_irregular_series_is_refused() -> None:
    datasets = [
        pydicom.dcmread(p) for p in sorted((TEST_FILES / "dicomdirtests/98892001/CT2N").glob("*"))
    ]
    with pytest.raises(BadRequest, match="orientation"):
        series_volume(datasets)
    twice = [pydicom.dcmread(CT_SERIES[0]), pydicom.dcmread(CT_SERIES[0])]
    with pytest.raises(BadRequest, match="share one position"):
        series_volume(twice)


def imaging_rows() -> list[dict[str, Any]]:
    """12 patients: 9 F, 2 M, 1 unknown; 6, 5 and 1 in three age bands; CT all, MR two."""
    rows = []
    for p in range(12):
        sex = "F" if p < 9 else ("M" if p < 11 else None)
        for s, modality in enumerate(["CT", "MR"] if p < 2 else ["CT"]):
            for i in range(3):
                rows.append(
                    {
                        "patient_pseudonym": f"P{p}",
                        "patient_sex": sex,
                        "patient_age": 35 if p < 6 else 47 if p < 11 else 91,
                        "study_uid": f"2.25.{p}",
                        "series_uid": f"2.25.{p}.{s}",
                        "sop_instance_uid": f"2.25.{p}.{s}.{i}",
                        "modality": modality,
                        "body_part_examined": "CHEST",
                        "file_size": 1000,
                    }
                )
    return rows


def no_small_counts(value: Any, k: int) -> bool:
    if isinstance(value, dict):
        return all(
            no_small_counts(v, k)
            for key, v in value.items()
            if key not in ("bytes", "columns", "min_cell_count", "age_band_width", "age_top")
        )
    return not (isinstance(value, int) and 0 < value < k)


def test_imaging_summary_suppresses_small_counts(tmp_path: Path) -> None:
    summary = summarize(imaging_rows(), min_cell_count=5)
    assert summary["patients"] == 12 and summary["studies"] == 12
    assert summary["series"] == 14 and summary["instances"] == 42 and summary["bytes"] == 42000
    assert summary["modalities"] == {"CT": 12, "MR": "<5"}
    assert summary["body_parts"] == {"CHEST": 12}
    # two small parts of a partition: each suppressed, neither derivable from the total
    assert summary["sex"] == {"F": 9, "M": "<5", "unknown": "<5"}
    # one small part (90+: 1): the next smallest (40-49: 5) is hidden too
    assert summary["age_bands"] == {"30-39": 6, "40-49": "suppressed", "90+": "<5"}
    assert no_small_counts(summary, 5)
    target = write_summary(summary, tmp_path / "ct-index.parquet")
    config = DatasetConfig(name="ct", path=tmp_path / "ct-index.parquet")
    assert target == config.summary_path() and read_summary(target) == summary


def test_summary_of_a_tiny_dataset_shows_no_numbers() -> None:
    summary = summarize(imaging_rows()[:3], min_cell_count=5)
    assert summary["patients"] == summary["instances"] == "<5"
    assert summary["sex"] == {"F": "<5"} and no_small_counts(summary, 5)


def test_write_summary_refuses_unsuppressed_counts(tmp_path: Path) -> None:
    with pytest.raises(Refused, match=r"modalities\.MR = 2"):
        write_summary({"min_cell_count": 5, "modalities": {"MR": 2}}, tmp_path / "d.csv")
    assert not (tmp_path / "d.csv.summary.json").exists()


def test_table_summary_on_diabetes() -> None:
    frame = load_diabetes(scaled=False, as_frame=True).frame
    summary = summarize_table(frame, min_cell_count=11, sex_column="sex", age_column="age")
    assert summary["rows"] == 442 and summary["columns"] == 11
    assert summary["sex"] == {"1": 235, "2": 207}
    bands = summary["age_bands"]
    assert sum(v for v in bands.values() if isinstance(v, int)) <= 442
    assert no_small_counts(summary, 11) and "<11" in bands.values()
    banded = frame.assign(age=[f"{int(a) // 10 * 10}-{int(a) // 10 * 10 + 9}" for a in frame.age])
    again = summarize_table(banded, min_cell_count=11, sex_column="sex", age_column="age")
    assert again["age_bands"] == bands
    with pytest.raises(BadRequest, match="'height'"):
        summarize_table(frame, min_cell_count=11, age_column="height")
