"""Ingest and export through the real ``medfed node …`` commands, and into the catalogue.

A steward de-identifies DICOM and a clinical table with the CLI, the node serves the
ingested table, and the hub's catalogue shows the summary ingest computed (small counts
suppressed). An export package round-trips through ``export build`` / ``export open``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pydicom
import pytest
from sklearn.datasets import load_diabetes

from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

STRATEGY = """
[columns]
age = { rule = "generalize", bins = [0, 30, 40, 50, 60, 70], top = 70 }
sex = "keep"
bmi = { rule = "round", step = 1 }
bp = "keep"
s1 = "delete"
s2 = "delete"
s3 = "delete"
s4 = "delete"
s5 = "delete"
s6 = "delete"
target = "keep"

[k_anonymity]
quasi_identifiers = ["age", "sex"]
k = 11
on_violation = "suppress"

[summary]
sex = "sex"
age = "age"
"""


def medfed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=300,
    )


@pytest.fixture
def node_toml(tmp_path: Path) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(
        'hub_url = "http://127.0.0.1:9"\nsecret = "mfn_test-secret"\ndata_dir = "state"\n'
    )
    return path


def test_ingest_dicom_from_the_cli_is_clean_indexed_and_resumable(
    tmp_path: Path, node_toml: Path
) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom.data.get_testdata_file(name), src / name)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = tmp_path / "ct"
    args = ["node", "ingest", "dicom", str(src), "--dataset", "ct", "--config", str(node_toml)]
    bids = tmp_path / "bids"
    first = medfed(*args, "--out", str(out), "-j", "1", "-q", "--nifti", str(bids))
    assert first.returncode == 0, first.stdout + first.stderr
    volumes = sorted(bids.rglob("*.nii.gz"))
    assert len(volumes) == 2 and all(v.name.startswith("sub-") for v in volumes)
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 2
    sources = [pydicom.dcmread(p) for p in sorted(src.iterdir())]
    source_ids = {str(d.PatientID) for d in sources} | {str(d.PatientName) for d in sources}
    source_uids = {str(d.SOPInstanceUID) for d in sources}
    for path in written:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.PatientID) not in source_ids and str(ds.PatientName) not in source_ids
        assert str(ds.SOPInstanceUID) not in source_uids
        assert str(ds.SOPInstanceUID).startswith("2.25.")
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # sources untouched
    assert list(out.rglob("index.parquet"))
    again = medfed(*args, "--out", str(out), "-j", "1", "-q")
    assert again.returncode == 0 and "skipped" in again.stdout.lower()


def test_table_ingest_feeds_the_catalogue_and_export_round_trips(
    tmp_path: Path, node_toml: Path
) -> None:
    frame = load_diabetes(scaled=False, as_frame=True).frame
    raw = tmp_path / "diabetes.csv"
    frame.to_csv(raw, index=False)
    strategy = tmp_path / "strategy.toml"
    strategy.write_text(STRATEGY)
    out = tmp_path / "out"
    common = ["--strategy", str(strategy), "--config", str(node_toml)]
    done = medfed("node", "ingest", "table", str(raw), "-d", "diabetes", *common, "-o", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    table = out / "diabetes.parquet"
    assert table.exists() and (out / "diabetes.parquet.summary.json").exists()

    bad = tmp_path / "bad.toml"
    bad.write_text(STRATEGY.replace('target = "keep"\n', ""))
    refused = medfed("node", "ingest", "table", str(raw), "-d", "x", "--strategy", str(bad),
                     "--config", str(node_toml), "-o", str(tmp_path / "x"))  # fmt: skip
    assert refused.returncode == 1 and "target" in refused.stderr
    assert "Traceback" not in refused.stderr

    # one hospital: its policy must allow a sole release, and the hub a single node
    single = {"MEDFED_MIN_NODES": "1"}
    with Federation(
        tmp_path / "fed",
        {"hospital": {"diabetes": table}},
        hub_env=single,
        extra_policy="sole_release = true",
    ) as fed:
        listed = fed.researcher.datasets.list()
        assert listed[0].summary is not None
        count = fed.researcher.tasks.run("count", datasets=["diabetes"], progress=False)
        assert count.result.n == len(pd_read(table))

    keys = tmp_path / "recipient"
    assert medfed("node", "export", "keygen", "--out", str(keys)).returncode == 0
    terms = tmp_path / "terms.txt"
    terms.write_text("Use for the approved study only.")
    package = tmp_path / "package.tar"
    built = medfed("node", "export", "build", str(raw), *common, "--recipient",
                   f"{keys}.pub", "--terms", str(terms), "--out", str(package),
                   "--where", "age >= 30")  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    opened = medfed("node", "export", "open", str(package), "--key", f"{keys}.key",
                    "--out", str(tmp_path / "received"))  # fmt: skip
    assert opened.returncode == 0, opened.stdout + opened.stderr
    assert "approved study only" in opened.stdout
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(package) as source, tarfile.open(tampered, "w") as target:
        for member in source.getmembers():
            content = source.extractfile(member)
            data = content.read() if content is not None else b""
            if member.name.startswith("blobs/"):  # flip one byte of an encrypted file
                data = data[:10] + bytes([data[10] ^ 1]) + data[11:]
            target.addfile(member, io.BytesIO(data))
    refused_open = medfed("node", "export", "open", str(tampered), "--key", f"{keys}.key",
                          "--out", str(tmp_path / "nope"))  # fmt: skip
    assert refused_open.returncode == 1, refused_open.stdout
    assert "Traceback" not in refused_open.stderr
    assert not (tmp_path / "nope").exists()


def pd_read(path: Path) -> list[object]:
    import pandas as pd

    return list(pd.read_parquet(path).index)
