"""Cohort generation and a Cox fit on a cohort at one node, vs the same SQL in DuckDB.

Synthetic OMOP CDM (no real data): ``--persons`` persons, each with one diagnosis
(a descendant of the test vocabulary's breast-cancer concept), an observation period,
and ``--events`` clinical events in total spread as measurements (positive nodes, tumour
size) and a recurrence condition for about half. The cohort: entry = the diagnosis
(concept set with descendants), one inclusion rule (positive nodes > 3 within 30 days).
Measured: (1) ``generate_cohort`` through ``OmopStore`` (opt-out views, result tables
in memory) and ``extract_features`` + a Cox fit (medfed's federated Cox, run locally on
the one node); (2) the same compiled Circe SQL run directly on a DuckDB connection to
the file. Peak RSS is the process's (ru_maxrss, cumulative) after each step: the direct
SQL runs first, so ``rss_after_direct_mb`` is its peak and the later ones add medfed's steps.

    .venv/bin/python benchmarks/cohorts.py --persons 1000000 --events 20000000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import duckdb

from medfed.algorithms.cohorts.circe import compile_cohort, parse_definition
from medfed.algorithms.cohorts.features import FeatureSpec
from medfed.node.omop_load import load_test_vocabulary
from medfed.node.stores.omop import OmopStore
from medfed.node.stores.omop_cohort import generate_cohort
from medfed.node.stores.omop_features import cohort_table
from medfed.node.stores.omop_schema import create_cdm
from medfed.testing.local import run_locally

GRADES = (2000000101, 2000000102, 2000000103)
NODES, TSIZE, RECURRENCE = 2000001002, 2000001001, 2000000150


def definition() -> dict[str, object]:
    window = {"Start": {"Days": 0, "Coeff": 1}, "End": {"Days": 30, "Coeff": 1}}
    criteria = {"Measurement": {"CodesetId": 1, "ValueAsNumber": {"Value": 3, "Op": "gt"}}}
    sets = [
        {
            "id": 0,
            "name": "breast",
            "expression": {
                "items": [{"concept": {"CONCEPT_ID": 2000000100}, "includeDescendants": True}]
            },
        },
        {"id": 1, "name": "nodes", "expression": {"items": [{"concept": {"CONCEPT_ID": NODES}}]}},
    ]
    return parse_definition(
        {
            "ConceptSets": sets,
            "PrimaryCriteria": {
                "CriteriaList": [{"ConditionOccurrence": {"CodesetId": 0}}],
                "ObservationWindow": {"PriorDays": 0, "PostDays": 0},
                "PrimaryCriteriaLimit": {"Type": "First"},
            },
            "QualifiedLimit": {"Type": "First"},
            "ExpressionLimit": {"Type": "First"},
            "InclusionRules": [
                {
                    "name": "nodes > 3",
                    "expression": {
                        "Type": "ALL",
                        "CriteriaList": [
                            {
                                "Criteria": criteria,
                                "StartWindow": window,
                                "Occurrence": {"Type": 2, "Count": 1},
                            }
                        ],
                    },
                }
            ],
            "CollapseSettings": {"CollapseType": "ERA", "EraPad": 0},
        }
    )


def build(path: Path, persons: int, events: int) -> None:
    con = duckdb.connect(str(path))
    create_cdm(con)
    load_test_vocabulary(con)
    con.execute(f"""
        INSERT INTO person (person_id, gender_concept_id, year_of_birth, race_concept_id,
                            ethnicity_concept_id)
        SELECT i, 8532, 1930 + (hash(i) % 50), 0, 0 FROM range(1, {persons} + 1) t(i)""")
    con.execute(f"""
        INSERT INTO observation_period SELECT i, i, DATE '2000-01-01',
            DATE '2000-01-01' + CAST(100 + hash(i * 7) % 3000 AS INTEGER), 32817
        FROM range(1, {persons} + 1) t(i)""")
    con.execute(f"""
        INSERT INTO condition_occurrence (condition_occurrence_id, person_id,
            condition_concept_id, condition_start_date, condition_type_concept_id)
        SELECT i, i, {GRADES[0]} + hash(i) % 3, DATE '2000-01-01', 32817
        FROM range(1, {persons} + 1) t(i)
        UNION ALL
        SELECT {persons} + i, i, {RECURRENCE},
            DATE '2000-01-01' + CAST(50 + hash(i * 3) % 2000 AS INTEGER), 32817
        FROM range(1, {persons} + 1) t(i) WHERE hash(i * 5) % 2 = 0""")
    con.execute(f"""
        INSERT INTO measurement (measurement_id, person_id, measurement_concept_id,
            measurement_date, measurement_type_concept_id, value_as_number)
        SELECT j, 1 + j % {persons}, CASE WHEN j < {persons} THEN {NODES} ELSE {TSIZE} END,
            DATE '2000-01-01' + CAST((j // {persons}) % 30 AS INTEGER), 32817,
            CAST(hash(j) % 40 AS DOUBLE)
        FROM range(0, {max(events - persons * 3 // 2, persons)}) t(j)""")
    con.close()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cohorts.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="medfed-cohorts-"))
    path = folder / "cdm.duckdb"
    t0 = time.perf_counter()
    build(path, args.persons, args.events)
    figures: dict[str, float | int] = {
        "persons": args.persons,
        "events": args.events,
        "build_s": time.perf_counter() - t0,
    }
    cohort = definition()
    statements = compile_cohort(cohort, dialect="duckdb", cdm_schema="cdm.main", results_schema="r")
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH '{path}' AS cdm (READ_ONLY)")
    con.execute("CREATE SCHEMA r")
    from medfed.node.stores.omop_cohort import _RESULT_TABLES

    for table, columns in _RESULT_TABLES.items():
        con.execute(f"CREATE TABLE r.{table} ({columns})")
    t0 = time.perf_counter()
    for statement in statements:
        con.execute(statement).fetchall()
    figures["direct_sql_s"] = time.perf_counter() - t0
    figures["direct_persons"] = int(con.execute("SELECT count(*) FROM r.cohort").fetchall()[0][0])
    con.close()
    figures["rss_after_direct_mb"] = rss_mb()
    store = OmopStore(duckdb_path=path, name="bench")
    t0 = time.perf_counter()
    generated = generate_cohort(store, cohort)
    figures["generate_s"] = time.perf_counter() - t0
    figures["persons_in_cohort"] = generated.persons
    figures["rss_after_generate_mb"] = rss_mb()
    spec = FeatureSpec.model_validate(
        {
            "covariates": [
                {
                    "name": "tsize",
                    "domain": "measurement",
                    "concepts": [TSIZE],
                    "window": [0, 30],
                    "value": "last",
                }
            ],
            "outcome": {"name": "recurrence", "domain": "condition", "concepts": [RECURRENCE]},
            "sex": False,
        }
    )
    t0 = time.perf_counter()
    table = cohort_table(store, generated, spec)
    figures["features_s"] = time.perf_counter() - t0
    figures["rss_after_features_mb"] = rss_mb()
    t0 = time.perf_counter()
    params = {
        "duration": "recurrence_time",
        "event": "recurrence_event",
        "covariates": ["age", "tsize"],
    }
    run_locally("cox", params, [table], min_cell_count=5)
    figures["cox_s"] = time.perf_counter() - t0
    figures["peak_rss_mb"] = rss_mb()
    store.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
