"""Export package: round trip, every tampering case refused with its reason, nothing written."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from typer.testing import CliRunner

from medfed.cli.export import app
from medfed.common.errors import BadRequest, Refused
from medfed.common.filter_text import parse_filter_text
from medfed.node.export import crypto
from medfed.node.export.package import build_package, open_package
from medfed.node.ingest.tables.kanon import group_sizes
from medfed.node.ingest.tables.runner import deidentify_frame, read_table, table_bytes
from medfed.node.ingest.tables.strategy import Strategy, load_strategy
from medfed.node.stores.tables import TableStore

SECRET = "mfn_export-test-secret"
STRATEGY = """
[columns]
patient_id = { rule = "pseudonymize", prefix = "P-" }
age = { rule = "generalize", bins = [0, 30, 40, 50, 60], top = 70 }
sex = "keep"
bmi = "keep"
bp = { rule = "round", step = 5 }
s1 = "keep"
s2 = "keep"
s3 = "keep"
s4 = "keep"
s5 = "keep"
s6 = "delete"
target = "keep"

[k_anonymity]
quasi_identifiers = ["age", "sex"]
k = 11
on_violation = "{on_violation}"
"""


def diabetes_with_ids() -> pd.DataFrame:
    frame = load_diabetes(scaled=False, as_frame=True).frame
    rng = np.random.default_rng(7)
    frame.insert(0, "patient_id", [f"{p:06d}" for p in rng.choice(400, len(frame))])
    return frame


def write_strategy(path: Path, on_violation: str = "suppress") -> Path:
    path.write_text(STRATEGY.replace("{on_violation}", on_violation))
    return path


TERMS = "Use for diabetes progression research only (DUO:DS, DUO:NPU). No re-identification.\n"
FILTER = "bmi >= 22"


class Keys:
    def __init__(self, root: Path) -> None:
        self.recipient_key, self.recipient_pub = crypto.write_keypair(root / "recipient")
        self.other_key, _ = crypto.write_keypair(root / "other")
        self.sign_key, self.sign_pub = crypto.write_keypair(root / "sender", "ed25519")
        self.stranger_key, self.stranger_pub = crypto.write_keypair(root / "stranger", "ed25519")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keys, Strategy, Path]:
    root = tmp_path_factory.mktemp("export")
    keys = Keys(root)
    source = root / "diabetes.csv"
    diabetes_with_ids().to_csv(source, index=False)
    strategy = load_strategy(write_strategy(root / "s.toml"))
    package = root / "pkg.tar"
    build_package(
        source=source,
        out=package,
        strategy=strategy,
        secret=SECRET,
        recipient=crypto.load_x25519_public(keys.recipient_pub),
        terms=TERMS,
        where=FILTER,
        sign_key=crypto.load_ed25519_private(keys.sign_key),
    )
    return root, keys, strategy, package


def test_round_trip(world: tuple[Path, Keys, Strategy, Path], tmp_path: Path) -> None:
    root, keys, strategy, package = world
    opened = open_package(
        package,
        tmp_path / "opened",
        key=crypto.load_x25519_private(keys.recipient_key),
        sender_key=crypto.load_ed25519_public(keys.sign_pub),
    )
    assert opened.terms == TERMS
    assert (tmp_path / "opened" / "TERMS.txt").read_text() == TERMS
    assert opened.files == ["data.parquet", "deid-report.json"]
    assert opened.signed_by == crypto.fingerprint(crypto.load_ed25519_public(keys.sign_pub))

    # the same steps by hand give byte-identical files
    raw = read_table(root / "diabetes.csv", text_columns=strategy.string_columns())
    store = TableStore(raw, name="diabetes.csv")
    cohort = store.select(list(raw.columns), parse_filter_text(FILTER))
    expected, _, kanon = deidentify_frame(cohort, strategy, secret=SECRET)
    data = (tmp_path / "opened" / "data.parquet").read_bytes()
    assert data == table_bytes(expected, "parquet")
    result = pd.read_parquet(io.BytesIO(data))
    assert len(cohort) == int((raw["bmi"] >= 22).sum()) and len(result) < len(cohort)
    assert int(group_sizes(result, ["age", "sex"]).min()) >= 11
    report = json.loads((tmp_path / "opened" / "deid-report.json").read_text())
    assert report["cohort"]["filter"] == FILTER
    assert report["k_anonymity"]["suppressed_rows"] == kanon.suppressed_rows > 0
    assert opened.cohort["rows"] == len(result)


def _members(package: Path) -> dict[str, bytes]:
    with tarfile.open(package) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _flip_blob(m: dict[str, bytes]) -> None:
    blob = bytearray(m["blobs/000.bin"])
    blob[len(blob) // 2] ^= 0x01
    m["blobs/000.bin"] = bytes(blob)


def _edit_terms(m: dict[str, bytes]) -> None:
    m["manifest.json"] = m["manifest.json"].replace(b"research only", b"any purpose!!")


def _unsigned_edit(m: dict[str, bytes]) -> None:
    del m["manifest.sig"]
    doc = json.loads(m["manifest.json"])
    doc["sender"] = None
    m["manifest.json"] = json.dumps(doc, indent=2, sort_keys=True).encode()


TAMPERING: dict[str, tuple[Callable[[dict[str, bytes]], None], str]] = {
    "flipped byte in a blob": (_flip_blob, r"'data.parquet' \(blobs/000.bin\) fails authentic"),
    "edited manifest": (_edit_terms, "manifest signature does not verify"),
    "edited manifest, signature stripped": (_unsigned_edit, r"manifest.json was altered"),
    "file removed": (lambda m: m.pop("blobs/001.bin"), r"'deid-report.json' .* is missing"),
    "file added": (lambda m: m.update({"blobs/002.bin": b"x"}), "unexpected member 'blobs/002"),
    "tag removed": (lambda m: m.pop("manifest.mac"), "manifest.mac is missing"),
    "signature removed": (lambda m: m.pop("manifest.sig"), "signature is required"),
    "not a manifest": (lambda m: m.update({"manifest.json": b"{"}), "not a valid manifest"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_package_refused(
    case: str, world: tuple[Path, Keys, Strategy, Path], tmp_path: Path
) -> None:
    _, keys, _, package = world
    tamper, reason = TAMPERING[case]
    members = _members(package)
    tamper(members)
    bad = _write(tmp_path / "bad.tar", members)
    sender = None if case == "edited manifest, signature stripped" else keys.sign_pub
    with pytest.raises(Refused, match=reason):
        open_package(
            bad,
            tmp_path / "opened",
            key=crypto.load_x25519_private(keys.recipient_key),
            sender_key=crypto.load_ed25519_public(sender) if sender else None,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar"]  # nothing written


def test_wrong_keys_refused(world: tuple[Path, Keys, Strategy, Path], tmp_path: Path) -> None:
    _, keys, _, package = world
    with pytest.raises(Refused, match=r"for recipient key .* not this key"):
        open_package(package, tmp_path / "o", key=crypto.load_x25519_private(keys.other_key))
    with pytest.raises(Refused, match=r"signed by key .* not the expected sender"):
        open_package(
            package,
            tmp_path / "o",
            key=crypto.load_x25519_private(keys.recipient_key),
            sender_key=crypto.load_ed25519_public(keys.stranger_pub),
        )
    assert not (tmp_path / "o").exists()
    with pytest.raises(BadRequest, match="not an X25519 private key"):
        crypto.load_x25519_private(keys.sign_key)


def test_export_refuses_violation_and_bad_input(
    world: tuple[Path, Keys, Strategy, Path], tmp_path: Path
) -> None:
    root, keys, _, _ = world
    refuse = load_strategy(write_strategy(tmp_path / "r.toml", "refuse"))
    common = {
        "source": root / "diabetes.csv",
        "secret": SECRET,
        "recipient": crypto.load_x25519_public(keys.recipient_pub),
    }
    with pytest.raises(Refused, match="k-anonymity"):
        build_package(out=tmp_path / "p.tar", strategy=refuse, terms=TERMS, **common)  # type: ignore[arg-type]
    strategy = load_strategy(write_strategy(tmp_path / "s.toml"))
    with pytest.raises(BadRequest, match="selects no rows"):
        build_package(
            out=tmp_path / "p.tar", strategy=strategy, terms=TERMS, where="bmi > 1000", **common
        )  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match="terms of use are empty"):
        build_package(out=tmp_path / "p.tar", strategy=strategy, terms=" ", **common)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml", "s.toml"]


def test_cli_keygen_build_open(world: tuple[Path, Keys, Strategy, Path], tmp_path: Path) -> None:
    root, _, _, _ = world
    runner = CliRunner()
    keygen = runner.invoke(app, ["keygen", "--out", str(tmp_path / "me")])
    assert keygen.exit_code == 0, keygen.output
    assert stat.S_IMODE((tmp_path / "me.key").stat().st_mode) == 0o600
    assert "fingerprint" in keygen.output
    again = runner.invoke(app, ["keygen", "--out", str(tmp_path / "me")])
    assert isinstance(again.exception, BadRequest)
    (tmp_path / "node.toml").write_text(
        f'hub_url = "http://127.0.0.1:1"\nsecret = "{SECRET}"\n'
        f'[[datasets]]\nname = "diab"\npath = "{root / "diabetes.csv"}"\n'
    )
    (tmp_path / "terms.txt").write_text(TERMS)
    build = runner.invoke(
        app,
        [
            "build",
            "diab",
            "--strategy",
            str(root / "s.toml"),
            "--recipient",
            str(tmp_path / "me.pub"),
            "--terms",
            str(tmp_path / "terms.txt"),
            "--out",
            str(tmp_path / "p.tar"),
            "--config",
            str(tmp_path / "node.toml"),
            "--where",
            "age >= 40",
            "--format",
            "csv",
        ],
    )
    assert build.exit_code == 0, build.output
    assert "data.csv" in build.output
    opened = runner.invoke(
        app,
        [
            "open",
            str(tmp_path / "p.tar"),
            "--key",
            str(tmp_path / "me.key"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert opened.exit_code == 0, opened.output
    assert "TERMS OF USE" in opened.output and "No re-identification." in opened.output
    assert pd.read_csv(tmp_path / "o" / "data.csv")["age"].isin(["40-49", "50-59", "60-69"]).all()
    members = _members(tmp_path / "p.tar")
    _flip_blob(members)
    _write(tmp_path / "bad.tar", members)
    bad = runner.invoke(
        app,
        [
            "open",
            str(tmp_path / "bad.tar"),
            "--key",
            str(tmp_path / "me.key"),
            "--out",
            str(tmp_path / "o2"),
        ],
    )
    assert isinstance(bad.exception, Refused) and "fails authentication" in bad.exception.message
    assert not (tmp_path / "o2").exists()
