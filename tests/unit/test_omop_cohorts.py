"""OMOP CDM at the node: schema, mapping file, Circe cohorts, features, GLM and Cox.

The CDMs are built once per module from lifelines' GBSG2 through the shipped mapping
(examples/omop/gbsg2.toml): one pooled CDM and three node CDMs (medfed.testing.demo's
split). duckdb-cdm (duckcdm) compiles the cohorts, so every cohort result is compared
with an independent pandas computation on the flat table.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import statsmodels.api as sm
import statsmodels.formula.api as smf
from lifelines import CoxPHFitter

from circetools import (
    BREAST,
    GRADE3,
    HORMONAL,
    NODES,
    RECURRENCE,
    cohort,
    concept_set,
)
from medfed.algorithms.cohorts.circe import definition_hash, parse_definition
from medfed.algorithms.cohorts.features import FeatureSpec
from medfed.common.errors import BadRequest
from medfed.node.omop_load import load_mapping, load_table
from medfed.node.stores.omop import OmopStore
from medfed.node.stores.omop_cohort import generate_cohort, released_counts
from medfed.node.stores.omop_features import cohort_table, extract_features
from medfed.node.stores.omop_schema import cdm_ddl, create_cdm, validate_cdm
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.local import run_locally

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "examples" / "omop" / "gbsg2.toml"
INDEX = pd.Timestamp("2000-01-01")


def windowed(criteria: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    return {
        "Criteria": criteria,
        "StartWindow": {"Start": {"Days": start, "Coeff": 1}, "End": {"Days": end, "Coeff": 1}},
        "Occurrence": {"Type": 2, "Count": 1},
    }


def rule(name: str, *criteria: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "expression": {"Type": "ALL", "CriteriaList": list(criteria)}}


BREAST_ENTRY = {"ConditionOccurrence": {"CodesetId": 0}}
NODES_OVER_3 = {"Measurement": {"CodesetId": 1, "ValueAsNumber": {"Value": 3, "Op": "gt"}}}
ON_HORMONES = {"DrugExposure": {"CodesetId": 2}}
ATTRITION = cohort(
    BREAST_ENTRY,
    [
        concept_set(0, BREAST, True),
        concept_set(1, NODES, False),
        concept_set(2, HORMONAL, True),
    ],
    InclusionRules=[
        rule("more than 3 positive nodes within 30 days", windowed(NODES_OVER_3, 0, 30)),
        rule("hormone therapy from diagnosis", windowed(ON_HORMONES, 0, 0)),
    ],
)


def build(path: Path, table: pd.DataFrame) -> Path:
    load_table(mapping=load_mapping(MAPPING), table=table, cdm=path)
    return path


@pytest.fixture(scope="module")
def gbsg2() -> pd.DataFrame:
    return load_gbsg2()


@pytest.fixture(scope="module")
def shares(gbsg2: pd.DataFrame) -> list[pd.DataFrame]:
    return list(split_gbsg2(gbsg2).values())


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory, gbsg2: pd.DataFrame) -> Iterator[OmopStore]:
    path = build(tmp_path_factory.mktemp("omop") / "gbsg2.duckdb", gbsg2)
    store = OmopStore(duckdb_path=path, name="gbsg2")
    yield store
    store.close()


@pytest.fixture(scope="module")
def nodes(
    tmp_path_factory: pytest.TempPathFactory, shares: list[pd.DataFrame]
) -> Iterator[list[OmopStore]]:
    folder = tmp_path_factory.mktemp("nodes")
    stores = [
        OmopStore(duckdb_path=build(folder / f"node{i}.duckdb", share), name=f"node{i}")
        for i, share in enumerate(shares)
    ]
    yield stores
    for store in stores:
        store.close()


# -- schema and mapping -------------------------------------------------------------------


def test_create_cdm_validates_and_wrong_type_is_named(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "cdm.duckdb"))
    create_cdm(con)
    assert validate_cdm(con) == []
    con.execute("ALTER TABLE person ALTER year_of_birth TYPE VARCHAR")
    con.execute("ALTER TABLE measurement DROP COLUMN value_as_number")
    con.close()
    con = duckdb.connect(str(tmp_path / "cdm.duckdb"))
    problems = validate_cdm(con)
    con.close()
    assert "person.year_of_birth has type VARCHAR; OMOP CDM 5.4 says integer" in problems
    assert "missing column measurement.value_as_number (float)" in problems
    with pytest.raises(BadRequest, match=r"person\.year_of_birth has type VARCHAR"):
        OmopStore(duckdb_path=tmp_path / "cdm.duckdb", name="bad")


def test_mapping_round_trips_gbsg2(pooled: OmopStore, gbsg2: pd.DataFrame) -> None:
    counts = pooled.row_counts()
    assert counts["person"] == counts["observation_period"] == len(gbsg2)
    assert counts["drug_exposure"] == int((gbsg2.horTh == "yes").sum())
    assert counts["observation"] == int((gbsg2.menostat == "Post").sum())
    assert counts["condition_occurrence"] == len(gbsg2) + int(gbsg2.cens.sum())
    sizes = pooled.read(
        "measurement",
        ["person_id", "value_as_number"],
        concept_ids=[2000001001],
        concept_column="measurement_concept_id",
    ).sort_values("person_id")
    np.testing.assert_array_equal(sizes["value_as_number"].to_numpy(), gbsg2.tsize.to_numpy())
    people = pooled.read("person", ["person_id", "year_of_birth"]).sort_values("person_id")
    np.testing.assert_array_equal(people["year_of_birth"].to_numpy(), 2000 - gbsg2.age)
    assert pooled.vocabulary_version() == "medfed-test-vocabulary 2026-01"


def test_mapping_bad_value_is_named_and_nothing_written(tmp_path: Path) -> None:
    path = build(tmp_path / "cdm.duckdb", load_gbsg2().head(20))
    bad = load_gbsg2().head(5).assign(tgrade=["I", "II", "IV", "I", "I"])
    with pytest.raises(BadRequest, match=r"column 'tgrade' row 3 has a value not in its map"):
        build(path, bad)
    with OmopStore(duckdb_path=path).session() as store:
        assert store.frame("SELECT count(*) AS n FROM medfed_cdm.person")["n"][0] == 20


# -- cohorts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concept", "descendants", "expected"),
    [
        (BREAST, True, lambda g: len(g)),  # every grade is a descendant of breast cancer
        (BREAST, False, lambda g: 0),  # no record is coded with the parent itself
        (GRADE3, False, lambda g: int((g.tgrade == "III").sum())),
        (2000000001, True, lambda g: len(g)),  # two levels down (malignant neoplasm)
    ],
)
def test_entry_event_concept_set_with_descendants(
    pooled: OmopStore, gbsg2: pd.DataFrame, concept: int, descendants: bool, expected: Any
) -> None:
    definition = parse_definition(cohort(BREAST_ENTRY, [concept_set(0, concept, descendants)]))
    generated = generate_cohort(pooled, definition)
    assert generated.persons == expected(gbsg2)
    if generated.persons:
        assert (pd.to_datetime(generated.rows.cohort_start_date) == INDEX).all()


def test_inclusion_rules_attrition_equals_pandas(pooled: OmopStore, gbsg2: pd.DataFrame) -> None:
    generated = generate_cohort(pooled, parse_definition(ATTRITION))
    rule1 = gbsg2.pnodes > 3
    rule2 = rule1 & (gbsg2.horTh == "yes")
    assert generated.base_persons == len(gbsg2)
    assert [s.persons for s in generated.attrition] == [int(rule1.sum()), int(rule2.sum())]
    assert generated.persons == int(rule2.sum())
    # person ids are 1 + the row number (the mapping has no id column)
    assert sorted(generated.rows.subject_id) == sorted((gbsg2.index[rule2] + 1).tolist())


def test_attrition_at_each_node_sums_to_pooled(
    nodes: list[OmopStore], shares: list[pd.DataFrame], gbsg2: pd.DataFrame
) -> None:
    definition = parse_definition(ATTRITION)
    per_node = [generate_cohort(store, definition) for store in nodes]
    for generated, share in zip(per_node, shares, strict=True):
        rule1 = share.pnodes > 3
        expected = [int(rule1.sum()), int((rule1 & (share.horTh == "yes")).sum())]
        assert [s.persons for s in generated.attrition] == expected
    pooled_rule2 = int(((gbsg2.pnodes > 3) & (gbsg2.horTh == "yes")).sum())
    assert sum(g.persons for g in per_node) == pooled_rule2
    released = released_counts(per_node[0], min_cell_count=5, rounding=10)
    assert released["persons"] == round(per_node[0].persons / 10) * 10
    tiny = released_counts(per_node[0], min_cell_count=10**6, rounding=10)
    assert tiny == {
        "base_persons": None,
        "attrition": [{"rule": s.rule, "persons": None} for s in per_node[0].attrition],
        "persons": None,
    }


def test_observation_period_requirement(pooled: OmopStore, gbsg2: pd.DataFrame) -> None:
    definition = cohort(BREAST_ENTRY, [concept_set(0, BREAST, True)])
    definition["PrimaryCriteria"]["ObservationWindow"] = {"PriorDays": 0, "PostDays": 365}
    generated = generate_cohort(pooled, parse_definition(definition))
    assert generated.persons == int((gbsg2.time >= 365).sum())


def test_exit_by_drug_era(pooled: OmopStore, gbsg2: pd.DataFrame) -> None:
    definition = cohort(
        {"DrugExposure": {"CodesetId": 0}},
        [concept_set(0, HORMONAL, True)],
        EndStrategy={"CustomEra": {"DrugCodesetId": 0, "GapDays": 30, "Offset": 0}},
    )
    generated = generate_cohort(pooled, parse_definition(definition))
    treated = gbsg2[gbsg2.horTh == "yes"]
    rows = generated.rows.sort_values("subject_id")
    assert rows.subject_id.tolist() == (treated.index + 1).tolist()
    # the era ends with 5 years of tamoxifen, or earlier with the observation period
    expected = INDEX + pd.to_timedelta(np.minimum(1825, treated.time.to_numpy()), unit="D")
    np.testing.assert_array_equal(pd.to_datetime(rows.cohort_end_date).to_numpy(), expected)


def test_opted_out_persons_are_in_no_count_or_cohort(gbsg2: pd.DataFrame, tmp_path: Path) -> None:
    register: set[int] = {2, 3}  # rows 1 and 2: 7 and 9 positive nodes, both treated
    path = build(tmp_path / "cdm.duckdb", gbsg2)
    store = OmopStore(duckdb_path=path, excluded_persons=lambda: set(register))
    try:
        rule2 = int(((gbsg2.pnodes > 3) & (gbsg2.horTh == "yes")).sum())
        generated = generate_cohort(store, parse_definition(ATTRITION))
        assert generated.persons == rule2 - 2 and generated.base_persons == len(gbsg2) - 2
        assert not {2, 3} & set(generated.rows.subject_id)
        assert store.row_counts()["person"] == len(gbsg2) - 2
        register.clear()  # the register changed: the next read sees it
        assert generate_cohort(store, parse_definition(ATTRITION)).persons == rule2
    finally:
        store.close()


# -- bad input --------------------------------------------------------------------------


def test_unknown_construct_is_named() -> None:
    bad = copy.deepcopy(ATTRITION)
    bad["InclusionRules"][0]["expression"]["CriteriaList"][0]["StartWindw"] = {}
    with pytest.raises(BadRequest, match=r"InclusionRules\[0\]\.expression\.CriteriaList\[0\]"):
        parse_definition(bad)
    bad = copy.deepcopy(ATTRITION)
    bad["PrimaryCriteria"]["CriteriaList"] = [{"GenomicVariant": {"CodesetId": 0}}]
    with pytest.raises(BadRequest, match="GenomicVariant"):
        parse_definition(bad)
    with pytest.raises(BadRequest, match="not JSON"):
        parse_definition("{not json")


def test_concept_missing_from_vocabulary_is_named_and_nothing_generated(
    pooled: OmopStore,
) -> None:
    definition = parse_definition(cohort(BREAST_ENTRY, [concept_set(0, 2099999999, True)]))
    with pytest.raises(BadRequest, match="2099999999 are not in the vocabulary"):
        generate_cohort(pooled, definition)
    with pooled.session() as store:
        left = store.frame(
            "SELECT count(*) AS n FROM information_schema.tables "
            "WHERE table_schema = 'medfed_results'"
        )
    assert left["n"][0] == 0


def test_definition_hash_is_canonical() -> None:
    reordered = dict(reversed(list(ATTRITION.items())))
    assert definition_hash(ATTRITION) == definition_hash(reordered)
    assert len(definition_hash(ATTRITION)) == 64


# -- features and models ----------------------------------------------------------------

SPEC = FeatureSpec.model_validate(
    {
        "covariates": [
            {"name": m, "domain": "measurement", "concepts": [c], "window": [0, 0], "value": "last"}
            for m, c in [("tsize", 2000001001), ("pnodes", NODES), ("progrec", 2000001003)]
        ]
        + [
            {"name": "horTh", "domain": "drug", "concepts": [HORMONAL], "descendants": True},
            {"name": "post", "domain": "observation", "concepts": [2000003001]},
        ],
        "outcome": {"name": "recurrence", "domain": "condition", "concepts": [RECURRENCE]},
    }
)
EVERYONE = cohort(BREAST_ENTRY, [concept_set(0, BREAST, True)])


def reference_frame(flat: pd.DataFrame) -> pd.DataFrame:
    """The same variables straight from the flat table."""
    return pd.DataFrame(
        {
            "age": flat.age.astype(float),
            "tsize": flat.tsize.astype(float),
            "pnodes": flat.pnodes.astype(float),
            "progrec": flat.progrec.astype(float),
            "horTh": (flat.horTh == "yes").astype(int),
            "post": (flat.menostat == "Post").astype(int),
            "recurrence_event": flat.cens,
            "recurrence_time": flat.time.astype(float),
        }
    ).reset_index(drop=True)


def test_features_equal_the_flat_table(pooled: OmopStore, gbsg2: pd.DataFrame) -> None:
    frame = extract_features(pooled, generate_cohort(pooled, parse_definition(EVERYONE)), SPEC)
    assert (frame["female"] == 1).all()
    pd.testing.assert_frame_equal(
        frame.drop(columns="female"), reference_frame(gbsg2), check_dtype=False
    )


@pytest.fixture(scope="module")
def node_tables(nodes: list[OmopStore]) -> list[Any]:
    definition = parse_definition(EVERYONE)
    return [cohort_table(store, generate_cohort(store, definition), SPEC) for store in nodes]


def test_cox_on_cohort_features_equals_lifelines(
    node_tables: list[Any], shares: list[pd.DataFrame]
) -> None:
    covariates = ["age", "tsize", "pnodes", "progrec", "horTh", "post"]
    params = {"duration": "recurrence_time", "event": "recurrence_event", "covariates": covariates}
    tight = {"precision": 1e-14, "r_precision": 1e-16}
    result = run_locally("cox", params, node_tables, min_cell_count=1)
    pooled = pd.concat([reference_frame(s) for s in shares], ignore_index=True)
    ref = CoxPHFitter().fit(
        pooled[["recurrence_time", "recurrence_event", *covariates]],
        "recurrence_time",
        "recurrence_event",
        fit_options=tight,
    )
    np.testing.assert_allclose(result["coef"], ref.params_[covariates], rtol=1e-6)
    np.testing.assert_allclose(result["se"], ref.standard_errors_[covariates], rtol=1e-6)


def test_glm_on_cohort_features_with_where_equals_statsmodels(
    node_tables: list[Any], shares: list[pd.DataFrame]
) -> None:
    params = {
        "outcome": "recurrence_event",
        "covariates": ["age", "tsize", "pnodes", "horTh"],
        "family": "binomial",
        "where": {"column": "post", "op": "==", "value": 1},
    }
    result = run_locally("glm", params, node_tables)
    pooled = pd.concat([reference_frame(s) for s in shares], ignore_index=True)
    pooled = pooled[pooled.post == 1]
    ref = smf.glm(
        "recurrence_event ~ age + tsize + pnodes + horTh", pooled, family=sm.families.Binomial()
    ).fit(tol=1e-12)
    coefs = {c["name"]: c["estimate"] for c in result["coefficients"]}
    np.testing.assert_allclose([coefs[k] for k in ref.params.index], ref.params, rtol=1e-6)
    assert result["n"] == len(pooled)


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_cdm_validates_and_generates_like_duckdb(
    pooled: OmopStore, gbsg2: pd.DataFrame
) -> None:
    server = os.environ.get("MEDFED_TEST_DATABASE_URL")
    if not server:
        pytest.skip("MEDFED_TEST_DATABASE_URL is not set")
    from medfed.testing.faults import pg_database

    with pg_database(server, "medfed_omop_") as url:
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as conn:
            for statement in cdm_ddl(dialect="postgresql", schema="cdm"):
                conn.exec_driver_sql(statement)
        for table in (
            "person",
            "observation_period",
            "condition_occurrence",
            "measurement",
            "drug_exposure",
            "observation",
            "concept",
            "concept_ancestor",
            "vocabulary",
        ):
            with pooled.session():
                frame = pooled.frame(f"SELECT * FROM medfed_cdm.{table}")
            frame.to_sql(table, engine, schema="cdm", if_exists="append", index=False)
        store = OmopStore(url=url, schema="cdm", name="pg", excluded_persons=lambda: {2})
        try:
            assert store.vocabulary_version() == "medfed-test-vocabulary 2026-01"
            generated = generate_cohort(store, parse_definition(ATTRITION))
            expected = generate_cohort(pooled, parse_definition(ATTRITION))
            assert [s.persons for s in generated.attrition] == [
                s.persons - 1 for s in expected.attrition
            ]
        finally:
            store.close()
        with engine.begin() as conn:  # a second CDM, one column of the wrong type
            for statement in cdm_ddl(dialect="postgresql", schema="bad"):
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql("ALTER TABLE bad.death ALTER COLUMN death_date TYPE text")
        with pytest.raises(BadRequest, match=r"death\.death_date has type TEXT"):
            OmopStore(url=url, schema="bad", name="pg")
        engine.dispose()
