"""Data quality: seeded defects in a real CDM are found with the right counts, and the
summary that leaves the node shows small counts only as "<k" and the others rounded, its
pass/fail taken from those released numbers.

The CDM is a real DuckDB file (``create_cdm``) filled from lifelines' GBSG2 (one person
per row, a measurement of tumour size mapped to a "body weight" concept so that its
plausible range applies), then defects are seeded at known rows.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2

from medfed.node.quality import CheckResult, gated_summary, run_checks
from medfed.node.stores.omop_schema import create_cdm

WEIGHT = 3025315  # plausible 0.5-500 kg
SODIUM = 3019550  # plausible 100-200 mmol/L


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str, str], CheckResult]:
    frame = load_gbsg2()
    n = len(frame)
    con = duckdb.connect(":memory:")
    create_cdm(con)
    con.executemany(
        "INSERT INTO concept (concept_id, concept_name, domain_id, vocabulary_id, "
        "concept_class_id, standard_concept, concept_code, valid_start_date, valid_end_date) "
        "VALUES (?, ?, ?, 'LOINC', 'Lab Test', ?, ?, DATE '1970-01-01', DATE '2099-12-31')",
        [
            (WEIGHT, "Body weight", "Measurement", "S", "29463-7"),
            (SODIUM, "Sodium", "Measurement", "S", "2951-2"),
            (45000001, "old code", "Measurement", None, "x-1"),
        ],
    )
    start = date(2000, 1, 1)
    persons = pd.DataFrame(
        {
            "person_id": range(1, n + 1),
            "gender_concept_id": 8532,
            "year_of_birth": 2000 - frame.age,
            "race_concept_id": 0,
            "ethnicity_concept_id": 0,
        }
    )
    periods = pd.DataFrame(
        {
            "observation_period_id": range(1, n + 1),
            "person_id": range(1, n + 1),
            "observation_period_start_date": start,
            "observation_period_end_date": [start + timedelta(days=int(t)) for t in frame.time],
            "period_type_concept_id": 32817,
        }
    )
    weights = pd.DataFrame(
        {
            "measurement_id": range(1, n + 1),
            "person_id": range(1, n + 1),
            "measurement_concept_id": WEIGHT,
            "measurement_date": start,
            "measurement_type_concept_id": 32817,
            "value_as_number": frame.tsize.astype(float),
        }
    )
    for table, data in (("person", persons), ("observation_period", periods)):
        con.register("rows", data)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM rows")
        con.unregister("rows")
    con.register("rows", weights)
    con.execute("INSERT INTO measurement BY NAME SELECT * FROM rows")
    con.unregister("rows")
    # seeded defects, each at a known number of rows
    con.execute("UPDATE person SET year_of_birth = NULL WHERE person_id <= 3")  # 3 missing
    con.execute("UPDATE measurement SET value_as_number = 900 WHERE measurement_id <= 12")
    con.execute(
        "UPDATE measurement SET measurement_date = DATE '1990-01-01' "
        "WHERE measurement_id BETWEEN 13 AND 20"
    )
    con.execute(
        "UPDATE measurement SET measurement_concept_id = 45000001 WHERE measurement_id = 21"
    )
    con.execute(
        "UPDATE measurement SET measurement_concept_id = 0 WHERE measurement_id BETWEEN 22 AND 27"
    )
    con.execute(
        "UPDATE observation_period SET observation_period_end_date = DATE '1999-01-01' "
        "WHERE person_id BETWEEN 30 AND 31"
    )
    con.execute("DELETE FROM observation_period WHERE person_id = 40")
    con.execute(
        "INSERT INTO death (person_id, death_date, death_type_concept_id) VALUES "
        "(50, DATE '1900-01-01', 32817), (51, DATE '2001-01-01', 32817)"
    )
    con.execute(
        "INSERT INTO measurement (measurement_id, person_id, measurement_concept_id, "
        "measurement_date, measurement_type_concept_id, value_as_number) VALUES "
        f"(10001, 99999, {SODIUM}, DATE '2000-01-01', 32817, 140)"
    )
    found = run_checks(lambda sql: con.execute(sql).df())
    con.close()
    return {(r.name, r.table, r.field): r for r in found}


def test_seeded_defects_are_found_with_their_counts(
    results: dict[tuple[str, str, str], CheckResult],
) -> None:
    n = len(load_gbsg2())
    assert results["isRequired", "person", "year_of_birth"].failed == 3
    high = results["plausibleValueHigh (body weight kg)", "measurement", "value_as_number"]
    assert (high.failed, high.rows) == (12, n - 7)  # 7 rows no longer carry that concept
    during = results["plausibleDuringLife", "measurement", "measurement_date"]
    # 8 before the period, 2 of persons whose period now ends before it, 1 person without one,
    # 1 of a person that does not exist
    assert during.failed == 8 + 2 + 1 + 1
    assert results["isStandardValidConcept", "measurement", "measurement_concept_id"].failed == 1
    unmapped = results["standardConceptRecordCompleteness", "measurement", "measurement_concept_id"]
    assert unmapped.failed == 6 and unmapped.passed  # 6 of 687: under the 5 % threshold
    period = results["plausibleStartBeforeEnd", "observation_period", "observation_period_end_date"]
    assert period.failed == 2
    assert results["measurePersonCompleteness", "person", "person_id"].failed == 1
    assert results["plausibleTemporalAfter", "death", "death_date"].failed == 1
    assert results["isForeignKey", "measurement", "person_id"].failed == 1
    assert results["isRequired", "measurement", "measurement_date"].failed == 0


def test_gated_summary_hides_small_counts(
    results: dict[tuple[str, str, str], CheckResult],
) -> None:
    summary = gated_summary(list(results.values()), min_cell_count=5, rounding=10)
    checks = {(c["name"], c["field"]): c for c in summary["data_quality"]["checks"]}
    missing = checks["isRequired", "person.year_of_birth"]
    assert missing["failed"] == "<5" and missing["pct"] is None and missing["status"] == "fail"
    high = checks["plausibleValueHigh (body weight kg)", "measurement.value_as_number"]
    assert high["failed"] == 10 and high["rows"] % 10 == 0  # 12, rounded
    assert checks["isRequired", "measurement.measurement_date"]["failed"] == 0
    released = [c for c in checks.values() if isinstance(c["failed"], int)]
    assert all(c["failed"] % 10 == 0 for c in released)  # 0, or rounded
    assert all(c["rows"] is None or c["rows"] % 10 == 0 for c in checks.values())
    unmapped = checks["standardConceptRecordCompleteness", "measurement.measurement_concept_id"]
    assert unmapped["failed"] == "<10" and unmapped["status"] == "pass"  # 6: at most 9 of 690
    text = repr(summary)
    for value in (1, 2, 3, 4):  # no exact small count anywhere in what leaves
        assert f"'failed': {value}," not in text
    for check in summary["data_quality"]["checks"]:  # pass/fail as the released numbers say
        if isinstance(check["failed"], int) and check["failed"]:
            pct = 100.0 * check["failed"] / check["rows"]
            assert check["status"] == ("pass" if pct <= check["threshold_pct"] else "fail")
    assert summary["data_quality"]["checks_failed"] == sum(
        1 for c in summary["data_quality"]["checks"] if c["status"] == "fail"
    )
