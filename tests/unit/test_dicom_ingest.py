"""``ingest_dicom`` and ``medfed node ingest dicom`` on real files: pydicom's test files,
pydicom-data, generated studies; read-only sources, quarantine, resume, determinism, leaks.

pydicom's ``get_testdata_files`` tries to download missing files (it retries for minutes
without a network), so the corpus is taken straight from the installed folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pydicom
import pytest
from pydicom.data import DATA_ROOT
from typer.testing import CliRunner

from medfed.cli.ingest_dicom import app
from medfed.common.errors import BadRequest
from medfed.node.ingest.dicom.deid import Deidentifier
from medfed.node.ingest.dicom.runner import IngestSummary, ingest_dicom

SECRET = "mfn_node_secret_for_tests"
PYDICOM_FILES = sorted(Path(DATA_ROOT, "test_files").glob("*.dcm"))
CT_SMALL = Path(DATA_ROOT, "test_files", "CT_small.dcm")


def pydicom_data_files() -> list[Path]:
    import data_store  # the pydicom-data package

    folder = Path(data_store.__file__).parent / "data"
    return sorted(
        f for f in folder.iterdir() if f.suffix == ".dcm" and f.stat().st_size < 1_100_000
    )


def sha(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_only(folder: Path) -> None:
    for path in folder.rglob("*"):
        path.chmod(stat.S_IREAD | (stat.S_IXUSR if path.is_dir() else 0))
    folder.chmod(stat.S_IREAD | stat.S_IXUSR)


def writable(folder: Path) -> None:
    folder.chmod(stat.S_IRWXU)
    for path in folder.rglob("*"):
        path.chmod(stat.S_IRWXU)


def outputs(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dcm"))


def study(folder: Path, files: int, patient: str = "MRN-77", first: int = 0) -> None:
    """One CT study: ``files`` instances in two series, instance k referencing k-1."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(first, first + files):
        ds = pydicom.dcmread(CT_SMALL)
        ds.PatientID, ds.PatientName = patient, "Roe^Richard"
        ds.StudyInstanceUID = "1.2.826.0.1.55.1"
        ds.SeriesInstanceUID = f"1.2.826.0.1.55.1.{k % 2}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.55.1.9.{k}"
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = f"1.2.826.0.1.55.1.9.{k - 1 if k else 999}"
        series = pydicom.Dataset()
        series.SeriesInstanceUID = ds.SeriesInstanceUID
        series.ReferencedInstanceSequence = [ref]
        ds.ReferencedSeriesSequence = [series]
        ds.save_as(folder / f"img{k:03d}.dcm")


def test_real_corpus_deidentifies_read_only_and_resumes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pydicom").mkdir(parents=True)
    (src / "pydicom-data").mkdir()
    data_files = pydicom_data_files()
    assert len(data_files) >= 30
    for f in PYDICOM_FILES:
        (src / "pydicom" / f.name).write_bytes(f.read_bytes())
    for f in data_files:
        (src / "pydicom-data" / f.name).write_bytes(f.read_bytes())
    (src / "notes.txt").write_text("not an image")
    (src / "truncated.dcm").write_bytes(CT_SMALL.read_bytes()[:700])
    before = sha(src)
    read_only(src)  # any attempt to write a source fails loudly
    out = tmp_path / "out"
    try:
        summary = ingest_dicom(src, out, secret=SECRET, workers=2, progress=False)
        again = ingest_dicom(src, out, secret=SECRET, workers=1, progress=False)
    finally:
        writable(src)
    assert sha(src) == before
    total = len(PYDICOM_FILES) + len(data_files) + 2
    assert summary.done + len(summary.quarantined) + len(summary.leaks) == total
    assert summary.ok, summary.leaks
    assert summary.done >= 20
    kinds = {
        "Burned In Annotation",  # absent for US/SC/OT, no rectangles given
        "duplicate SOP Instance UID",  # pydicom ships one instance in many encodings
        "no SOP Class UID or SOP Instance UID",
        "not DICOM or corrupt",
    }
    assert {r for _, r in summary.quarantined if not r.startswith(tuple(kinds))} == set()
    assert all(reason for _, reason in summary.quarantined)
    reasons = dict((Path(s).name, r) for s, r in summary.quarantined)
    assert reasons["notes.txt"].startswith("not DICOM or corrupt")
    assert reasons["truncated.dcm"].startswith(("not DICOM or corrupt", "cannot de-identify"))
    assert "US" in reasons["US1_UNCR.dcm"]  # burned-in text risk, no rectangles
    quarantine = summary.quarantine
    assert (quarantine / "notes.txt.reason.txt").read_text().startswith("source: ")
    assert (quarantine / "notes.txt").read_text() == "not an image"  # a copy, source kept
    for name in outputs(out):
        ds = pydicom.dcmread(out / name)
        assert all(elem.value is not None or elem.VR for elem in ds)  # every element decodes
        assert ds.PatientIdentityRemoved == "YES"
        assert name.split("/")[0] == ds.PatientID and name.endswith(f"{ds.SOPInstanceUID}.dcm")
    # resumable: the second run finds everything done (or quarantined) and skips it
    assert again.done == 0 and again.skipped == total and again.ok
    assert len(again.index_rows) == summary.done == len(outputs(out))


def test_two_runs_and_two_batches_give_the_same_uids_and_pseudonyms(tmp_path: Path) -> None:
    study(tmp_path / "all", 6)
    study(tmp_path / "batch1", 3)
    study(tmp_path / "batch2", 3, first=3)
    options = ["retain-modified-dates"]
    run = {"secret": SECRET, "options": options, "workers": 1, "progress": False}
    ingest_dicom(tmp_path / "all", tmp_path / "out-a", **run)  # type: ignore[arg-type]
    ingest_dicom(tmp_path / "all", tmp_path / "out-b", **run)  # type: ignore[arg-type]
    ingest_dicom(tmp_path / "batch1", tmp_path / "out-c", **run)  # type: ignore[arg-type]
    ingest_dicom(tmp_path / "batch2", tmp_path / "out-c", **run)  # type: ignore[arg-type]
    paths = outputs(tmp_path / "out-a")
    assert len(paths) == 6 and len({p.split("/")[0] for p in paths}) == 1
    assert paths == outputs(tmp_path / "out-b") == outputs(tmp_path / "out-c")
    for name in paths:
        a = pydicom.dcmread(tmp_path / "out-a" / name)
        c = pydicom.dcmread(tmp_path / "out-c" / name)
        assert a.StudyDate == c.StudyDate != "20040119"
        assert a.ReferencedSeriesSequence == c.ReferencedSeriesSequence
    # references in batch 2 point at the new UIDs of instances ingested in batch 1
    mapper = Deidentifier(SECRET).uids
    by_uid = {pydicom.dcmread(tmp_path / "out-c" / n).SOPInstanceUID for n in paths}
    assert by_uid == {mapper.map(f"1.2.826.0.1.55.1.9.{k}") for k in range(6)}
    targets = set()
    for name in paths:
        ref = pydicom.dcmread(tmp_path / "out-c" / name).ReferencedSeriesSequence[0]
        targets.add(ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)
    assert targets - by_uid == {mapper.map("1.2.826.0.1.55.1.9.999")}  # outside the study
    assert len(targets & by_uid) == 5
    other = ingest_dicom(tmp_path / "all", tmp_path / "out-d", **{**run, "secret": "other"})  # type: ignore[arg-type]
    assert other.done == 6
    assert not set(p.split("/")[0] for p in outputs(tmp_path / "out-d")) & {paths[0].split("/")[0]}
    assert not {Path(p).name for p in outputs(tmp_path / "out-d")} & {Path(p).name for p in paths}


def node_toml(tmp_path: Path) -> Path:
    config = tmp_path / "node.toml"
    config.write_text(
        f'hub_url = "http://127.0.0.1:9"\nsecret = "{SECRET}"\ndata_dir = "var"\n'
        "[policy]\nmin_cell_count = 1\n"
    )
    return config


def test_cli_ingests_resumes_and_refuses_bad_input(tmp_path: Path) -> None:
    study(tmp_path / "src", 4)
    config = node_toml(tmp_path)
    args = ["dicom", str(tmp_path / "src"), "--dataset", "ct", "--config", str(config)]
    args += ["--workers", "1", "--quiet", "--option", "retain-modified-dates"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "4 done" in first.output
    dataset = tmp_path / "var" / "datasets" / "ct"
    assert len(outputs(dataset)) == 4
    assert (dataset / "index.parquet").exists()
    catalogue = json.loads((dataset / "index.parquet.summary.json").read_text())
    assert catalogue["instances"] == 4 and catalogue["patients"] == 1
    assert json.loads((dataset / "verification" / "verification.json").read_text())["ok"]
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "0 done, 4 skipped" in second.output
    bad = runner.invoke(app, [*args, "--option", "retain-everything"])
    assert isinstance(bad.exception, BadRequest)
    assert "unknown de-identification option" in bad.exception.message
    missing = runner.invoke(
        app, ["dicom", str(tmp_path / "nope"), "--dataset", "x", "--config", str(config)]
    )
    assert isinstance(missing.exception, BadRequest)


def test_a_leak_fails_ingest_and_leaves_no_output(tmp_path: Path) -> None:
    study(tmp_path / "src", 2)
    planted = pydicom.dcmread(tmp_path / "src" / "img000.dcm")
    planted.PatientID = "4455667"
    planted.AcquisitionNumber = "4455667"  # the patient's ID in a number the table keeps
    planted.save_as(tmp_path / "src" / "img000.dcm")
    config = node_toml(tmp_path)
    out = tmp_path / "out"
    args = ["dicom", str(tmp_path / "src"), "--dataset", "ct", "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--workers", "1", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "leak" in result.output
    assert len(outputs(out)) == 1  # the clean file; the leaking one was moved away
    leaks = list((tmp_path / "out.quarantine" / "leaks").rglob("*.dcm"))
    assert len(leaks) == 1
    report = leaks[0].with_name(leaks[0].name + ".reason.txt").read_text()
    assert "patient_id 4******[7]" in report and "4455667" not in report  # masked
    again: IngestSummary = ingest_dicom(
        tmp_path / "src", out, secret=SECRET, workers=1, progress=False
    )
    assert not again.ok and again.skipped == 1  # a leak is never recorded as done


def test_source_and_output_must_not_overlap(tmp_path: Path) -> None:
    study(tmp_path / "src", 1)
    with pytest.raises(BadRequest, match="must not contain"):
        ingest_dicom(tmp_path / "src", tmp_path, secret=SECRET, workers=1, progress=False)
    inside = tmp_path / "src" / "out"
    summary = ingest_dicom(tmp_path / "src", inside, secret=SECRET, workers=1, progress=False)
    assert summary.done == 1 and os.path.exists(inside / summary.index_files[0].name)


def test_real_ultrasound_needs_rectangles_then_is_cleaned(tmp_path: Path) -> None:
    import data_store

    us = Path(data_store.__file__).parent / "data" / "US1_UNCR.dcm"  # LOGIQ 700, RGB
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "us.dcm").write_bytes(us.read_bytes())
    plain = ingest_dicom(tmp_path / "src", tmp_path / "a", secret=SECRET, workers=1, progress=False)
    assert plain.done == 0 and "modality US" in plain.quarantined[0][1]
    rules = tmp_path / "rects.toml"
    rules.write_text(
        '[[device]]\nmanufacturer = "G.E. Medical Systems"\nmodel = "LOGIQ 700"\n'
        "rectangles = [[0, 0, 640, 40]]\n"
    )
    config = node_toml(tmp_path)
    args = ["dicom", str(tmp_path / "src"), "--dataset", "us", "--config", str(config)]
    args += ["--rectangles", str(rules), "--out", str(tmp_path / "b"), "-j", "1", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (name,) = outputs(tmp_path / "b")
    out = pydicom.dcmread(tmp_path / "b" / name)
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    pixels, before = out.pixel_array, pydicom.dcmread(us).pixel_array
    assert (pixels[:40] == 0).all() and (before[:40] != 0).any()
    assert (pixels[40:] == before[40:]).all()


def test_a_file_whose_transfer_syntax_lies_is_rewritten_correctly(tmp_path: Path) -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.dcmread(CT_SMALL)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # says explicit ...
    fp = DicomBytesIO()
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    fp.is_implicit_VR, fp.is_little_endian = True, True  # ... but is implicit
    write_dataset(fp, ds)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "liar.dcm").write_bytes(fp.getvalue())
    summary = ingest_dicom(
        tmp_path / "src", tmp_path / "out", secret=SECRET, workers=1, progress=False
    )
    assert summary.done == 1 and summary.ok
    (name,) = outputs(tmp_path / "out")
    out = pydicom.dcmread(tmp_path / "out" / name)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.pixel_array.shape == (128, 128) and out.Rows == 128
