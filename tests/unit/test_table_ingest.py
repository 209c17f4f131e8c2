"""Tabular ingest: the diabetes policy (age bands, sex kept, k > 10), every rule, refusals, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from typer.testing import CliRunner

from medfed.cli.ingest_table import app
from medfed.common.errors import BadRequest, Refused
from medfed.node.ingest.keys import derive_key
from medfed.node.ingest.tables.kanon import group_sizes
from medfed.node.ingest.tables.rules import apply_rules, date_offset_days, pseudonym
from medfed.node.ingest.tables.runner import ingest_table, read_table
from medfed.node.ingest.tables.strategy import load_strategy, parse_strategy

SECRET = "mfn_test-node-secret"
OTHER = "mfn_another-node-secret"
BINS = [0, 30, 40, 50, 60, 70]  # 0-29, 30-39, ..., 60-69, 70+


def diabetes_with_ids() -> pd.DataFrame:
    """sklearn's diabetes table plus a synthetic patient id (leading zeros) and visit date."""
    frame = load_diabetes(scaled=False, as_frame=True).frame
    rng = np.random.default_rng(20240605)
    patients = rng.choice(300, size=len(frame), replace=True)
    frame.insert(0, "patient_id", [f"{p:06d}" for p in patients])
    days = rng.integers(0, 2000, size=len(frame))
    frame.insert(1, "visit", (pd.Timestamp("2015-01-01") + pd.to_timedelta(days, "D")).date)
    return frame


STRATEGY = """
[columns]
patient_id = { rule = "pseudonymize", prefix = "P-" }
visit = { rule = "date_shift", patient = "patient_id" }
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

[summary]
sex = "sex"
age = "age"
patient = "patient_id"
"""


def write_strategy(path: Path, on_violation: str = "suppress") -> Path:
    path.write_text(STRATEGY.replace("{on_violation}", on_violation))
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "raw" / "diabetes.csv"
    path.parent.mkdir()
    diabetes_with_ids().to_csv(path, index=False)
    return path


def test_diabetes_policy(source: Path, tmp_path: Path) -> None:
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "out" / "diabetes.parquet"
    report = ingest_table(
        source, out, strategy=write_strategy(tmp_path / "s.toml"), secret=SECRET, min_cell_count=5
    )
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before  # source untouched

    raw = diabetes_with_ids()
    bands = pd.cut(raw["age"], [*BINS, np.inf], right=False, labels=[*"ABCDE", "F"])
    sizes = raw.groupby([bands, raw["sex"]], observed=True).size()
    small = sizes[sizes <= 10]
    assert len(small) > 0  # the policy really suppresses something on this data
    result = pd.read_parquet(out)
    assert report.rows_in == len(raw) == 442
    assert report.k_anonymity.suppressed_groups == len(small)
    assert report.k_anonymity.suppressed_rows == int(small.sum())
    assert report.rows_out == len(result) == 442 - int(small.sum())

    # age in bands, sex kept, k > 10 recomputed from the written output
    assert set(result["age"]) <= {"0-29", "30-39", "40-49", "50-59", "60-69", "70+"}
    assert sorted(result["sex"].unique()) == [1.0, 2.0]
    recomputed = group_sizes(result, ["age", "sex"])
    assert int(recomputed.min()) > 10
    assert report.k_anonymity.achieved_k == int(recomputed.min())
    assert int(recomputed.sum()) == len(result)
    assert "s6" not in result.columns
    assert list(result.columns) == [c for c in raw.columns if c != "s6"]
    assert set(result["bp"].dropna() % 5) == {0}
    assert result["patient_id"].str.fullmatch(r"P-[0-9a-f]{16}").all()
    assert not set(result["patient_id"]) & set(raw["patient_id"])

    saved = json.loads(Path(report.report).read_text())
    assert saved["k_anonymity"]["suppressed_rows"] == int(small.sum())
    assert saved["columns"]["age"]["rule"] == "generalize"
    assert saved["columns"]["s6"] == {"rule": "delete", "kept": False, "nulls": 0, "counts": {}}
    summary = json.loads(out.with_name("diabetes.parquet.summary.json").read_text())
    assert Path(report.summary or "").name == "diabetes.parquet.summary.json"
    assert summary["rows"] == len(result) and summary["kind"] == "table"
    assert summary["patients"] == result["patient_id"].nunique()
    assert set(summary["age_bands"]) == set(result["age"])
    assert sum(summary["sex"].values()) == summary["patients"]


def test_refuse_writes_nothing(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "d.parquet"
    with pytest.raises(Refused, match=r"fewer than k=11 rows.*refuse"):
        ingest_table(
            source,
            out,
            strategy=write_strategy(tmp_path / "s.toml", "refuse"),
            secret=SECRET,
            min_cell_count=5,
        )
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_unnamed_and_missing_columns_refused(source: Path, tmp_path: Path) -> None:
    text = write_strategy(tmp_path / "s.toml").read_text()
    (tmp_path / "a.toml").write_text(text.replace('target = "keep"\n', ""))
    with pytest.raises(BadRequest, match="not named in the strategy: 'target'"):
        ingest_table(
            source,
            tmp_path / "a.parquet",
            strategy=tmp_path / "a.toml",
            secret=SECRET,
            min_cell_count=5,
        )
    (tmp_path / "b.toml").write_text(text.replace('s1 = "keep"', 's1 = "keep"\nzip = "delete"'))
    with pytest.raises(BadRequest, match="missing from the data: 'zip'"):
        ingest_table(
            source,
            tmp_path / "b.parquet",
            strategy=tmp_path / "b.toml",
            secret=SECRET,
            min_cell_count=5,
        )
    assert not (tmp_path / "a.parquet").exists() and not (tmp_path / "b.parquet").exists()
    with pytest.raises(BadRequest, match="overwrite the source"):
        ingest_table(source, source, strategy=tmp_path / "s.toml", secret=SECRET, min_cell_count=5)


def test_pseudonyms_stable_and_keyed(source: Path, tmp_path: Path) -> None:
    strategy = write_strategy(tmp_path / "s.toml")
    runs = [
        ingest_table(source, tmp_path / name, strategy=strategy, secret=secret, min_cell_count=5)
        for name, secret in (("a.csv", SECRET), ("b.csv", SECRET), ("c.csv", OTHER))
    ]
    a, b, c = (read_table(Path(r.output), text_columns=["patient_id"]) for r in runs)
    pd.testing.assert_frame_equal(a, b)  # the whole output is deterministic
    assert (a["patient_id"] != c["patient_id"]).all()  # another node secret, other pseudonyms
    key = derive_key(SECRET, "pseudonym")
    expected = {pseudonym(key, p, prefix="P-") for p in diabetes_with_ids()["patient_id"]}
    assert set(a["patient_id"]) <= expected
    assert pseudonym(key, "000123") != pseudonym(key, "123")  # leading zeros matter
    assert pseudonym(key, 123.0) == pseudonym(key, "123") == pseudonym(key, 123)


def test_date_shift_per_patient(source: Path, tmp_path: Path) -> None:
    strategy = load_strategy(write_strategy(tmp_path / "s.toml"))
    columns = dict(strategy.columns)
    columns["age"] = parse_strategy(
        {"columns": {"age": "keep"}, "k_anonymity": {"quasi_identifiers": ["age"], "k": 2}}
    ).columns["age"]
    raw = diabetes_with_ids()
    raw["age"] = 1  # one group: nothing suppressed, every row comparable
    path = tmp_path / "one-group.csv"
    raw.to_csv(path, index=False)
    out = tmp_path / "shifted.parquet"
    relaxed = strategy.model_copy(update={"columns": columns})
    ingest_table(path, out, strategy=relaxed, secret=SECRET, min_cell_count=5)
    result = pd.read_parquet(out)
    shift = pd.to_datetime(result["visit"]) - pd.to_datetime(raw["visit"])
    key = derive_key(SECRET, "date-offset")
    expected = raw["patient_id"].map(lambda p: date_offset_days(key, p))
    assert (shift.dt.days == expected).all()
    per_patient = shift.groupby(raw["patient_id"]).nunique()
    assert (per_patient == 1).all() and per_patient.size == raw["patient_id"].nunique()
    assert expected.between(-365, 365).all() and (expected != 0).all()
    assert expected.nunique() > 100


def test_patient_keys_agree_with_the_dicom_engine() -> None:
    """Table dates and pseudonyms of a patient equal those the DICOM engine gives its files."""
    pytest.importorskip("pydicom")
    from medfed.node.ingest.dicom.deid import Deidentifier

    engine = Deidentifier(SECRET)
    strategy = parse_strategy(
        {
            "columns": {
                "pid": {"rule": "pseudonymize", "patient": True},
                "visit": {"rule": "date_shift", "patient": "pid"},
            },
            "k_anonymity": {"quasi_identifiers": ["pid"], "k": 2},
        }
    )
    ids = ["000123", "PAT-7", " 42 ", "000123", "PAT-7", " 42 "]
    frame = pd.DataFrame({"pid": ids, "visit": ["2020-03-01"] * 6})
    out, _ = apply_rules(frame, strategy, secret=SECRET)
    for pid, pseudo, date in zip(ids, out["pid"], out["visit"], strict=True):
        assert pseudo == engine.pseudonym(pid)
        assert (date - pd.Timestamp("2020-03-01")).days == engine.date_offset(pid)
    with pytest.raises(BadRequest, match="patient = true uses the DICOM pseudonym"):
        parse_strategy(
            {
                "columns": {"pid": {"rule": "pseudonymize", "patient": True, "prefix": "X"}},
                "k_anonymity": {"quasi_identifiers": ["pid"], "k": 2},
            }
        )


def test_year_generalize_top_bottom_round(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "age": [0, 5, 6, 10, 11, 89, 90, 104, None, 17],
            "dob": [
                "1950-03-01",
                "1999-12-31",
                None,
                "2001-01-01",
                "1950-03-01",
                "1960-07-04",
                "1960-07-04",
                "1970-01-01",
                "1980-02-29",
                "1990-06-15",
            ],
            "height": [170.4, 165.2, 181.0, 150.5, 172.49, 172.51, 160, 155, 190, 168],
            "bmi": [17.9, 18.0, 24.99, 25.0, 40.0, 41.5, 30.0, 22.0, None, 29.9],
        }
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    strategy = parse_strategy(
        {
            "columns": {
                "age": {"rule": "generalize", "bins": [0, 6, 11, 16], "top": 90},
                "dob": {"rule": "year"},
                "height": {"rule": "round", "step": 5},
                "bmi": {
                    "rule": "generalize",
                    "bins": [18.5, 25, 30],
                    "bottom": 18.5,
                    "top": 40,
                    "labels": ["normal", "overweight", "obese"],
                },
            },
            "k_anonymity": {"quasi_identifiers": ["dob"], "k": 2, "on_violation": "suppress"},
        }
    )
    out = tmp_path / "t.out.csv"
    report = ingest_table(path, out, strategy=strategy, secret=SECRET, min_cell_count=5)
    result = pd.read_csv(out, dtype={"age": str, "bmi": str})
    # only the two 1950 and the two 1960 births remain (k=2 over the year)
    assert list(result["dob"]) == [1950, 1950, 1960, 1960]
    assert list(result["age"]) == ["0-5", "11-15", "16-89", "90+"]
    assert list(result["height"]) == [170, 170, 175, 160]
    assert list(result["bmi"]) == ["<18.5", "40+", "40+", "obese"]
    assert report.columns["age"].counts == {"top_coded": 2, "bottom_coded": 0}
    assert report.columns["bmi"].counts["bottom_coded"] == 2
    assert report.k_anonymity.suppressed_groups == 6 and report.k_anonymity.suppressed_rows == 6


def test_rule_errors_name_the_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"age": [1, 200], "d": ["2020-01-01", "01/02/2020"]}).to_csv(path, index=False)

    def strategy(age: dict[str, object], d: dict[str, object]) -> object:
        return parse_strategy(
            {"columns": {"age": age, "d": d}, "k_anonymity": {"quasi_identifiers": ["age"], "k": 2}}
        )

    with pytest.raises(BadRequest, match=r"column 'age' \(generalize\): 1 values lie at or above"):
        ingest_table(
            path,
            tmp_path / "o.csv",
            strategy=strategy(  # type: ignore[arg-type]
                {"rule": "generalize", "bins": [0, 100]}, {"rule": "delete"}
            ),
            secret=SECRET,
            min_cell_count=5,
        )
    with pytest.raises(BadRequest, match=r"column 'd' \(year\): 1 values are not dates.*row 2"):
        ingest_table(
            path,
            tmp_path / "o.csv",
            strategy=strategy(  # type: ignore[arg-type]
                {"rule": "keep"}, {"rule": "year"}
            ),
            secret=SECRET,
            min_cell_count=5,
        )
    with pytest.raises(BadRequest, match=r"column 'age' \(generalize\): top \(5\) is below"):
        strategy({"rule": "generalize", "bins": [0, 10], "top": 5}, {"rule": "keep"})
    with pytest.raises(BadRequest, match=r"column 'age': unknown rule"):
        strategy({"rule": "hash"}, {"rule": "keep"})
    with pytest.raises(BadRequest, match=r"quasi-identifier 'age' is deleted"):
        strategy({"rule": "delete"}, {"rule": "keep"})
    (tmp_path / "bad.toml").write_text("[columns\n")
    with pytest.raises(BadRequest, match="not valid TOML"):
        load_strategy(tmp_path / "bad.toml")


def test_cli_table(source: Path, tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(
        f'hub_url = "http://127.0.0.1:1"\nsecret = "{SECRET}"\ndata_dir = "var"\n'
        "[policy]\nmin_cell_count = 5\n"
    )
    args = [
        "table",
        str(source),
        "--dataset",
        "diab",
        "--strategy",
        str(write_strategy(tmp_path / "s.toml")),
        "--config",
        str(tmp_path / "node.toml"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "var" / "datasets" / "diab" / "diab.parquet"
    assert out.is_file() and out.with_name("diab.parquet.report.json").is_file()
    assert "rows in 442" in result.output and "achieved k=" in result.output
    refused = CliRunner().invoke(app, [*args[:3], "bad name!", *args[4:]])
    assert isinstance(refused.exception, BadRequest)
