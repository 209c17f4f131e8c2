"""Opt-out reaches an ``[[omop]]`` dataset through the node agent's own store.

A real :class:`~medfed.node.agent.NodeAgent` opens GBSG2 mapped to an OMOP CDM
(``examples/omop/gbsg2.toml``); persons opted out in its real register file (as
``medfed node optout add`` writes it, OMOP ``person_id`` digits) vanish from the cohort
count and the person count at the next read, and come back when the opt-out is removed.
What the node registers (per-table counts, the data-quality summary) does not move when one
person opts out: the counts are sticky (:mod:`medfed.node.stores.registered`), with the
agent's own register as their memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from lifelines.datasets import load_gbsg2

from medfed.algorithms.cohorts.circe import parse_definition
from medfed.node.agent import NodeAgent
from medfed.node.config import NodeConfig
from medfed.node.omop_load import load_mapping, load_table
from medfed.node.quality import omop_quality
from medfed.node.stores.omop_cohort import generate_cohort

ROOT = Path(__file__).resolve().parents[2]
BREAST = 2000000100  # breast cancer; its descendants code every GBSG2 diagnosis (by grade)

DEFINITION: dict[str, Any] = {
    "ConceptSets": [
        {
            "id": 0,
            "name": "breast cancer",
            "expression": {
                "items": [{"concept": {"CONCEPT_ID": BREAST}, "includeDescendants": True}]
            },
        }
    ],
    "PrimaryCriteria": {
        "CriteriaList": [{"ConditionOccurrence": {"CodesetId": 0}}],
        "ObservationWindow": {"PriorDays": 0, "PostDays": 0},
        "PrimaryCriteriaLimit": {"Type": "First"},
    },
    "QualifiedLimit": {"Type": "First"},
    "ExpressionLimit": {"Type": "First"},
    "CollapseSettings": {"CollapseType": "ERA", "EraPad": 0},
}


def test_an_opted_out_person_leaves_the_agents_omop_cohort(tmp_path: Path) -> None:
    gbsg2 = load_gbsg2()
    cdm = tmp_path / "gbsg2.duckdb"
    load_table(mapping=load_mapping(ROOT / "examples" / "omop" / "gbsg2.toml"), table=gbsg2,
               cdm=cdm)  # fmt: skip
    config = NodeConfig.model_validate(
        {
            "hub_url": "http://127.0.0.1:9",
            "secret": "mfn_optout-omop-secret",
            "data_dir": str(tmp_path / "state"),
            "omop": [{"name": "cdm", "duckdb": str(cdm)}],
        }
    )
    agent = NodeAgent(config)
    agent.open_datasets()
    store = agent.omop["cdm"].store
    try:
        definition = parse_definition(DEFINITION)
        assert generate_cohort(store, definition).persons == len(gbsg2)
        agent.optout.add(["1", "2"])  # as the CLI writes them, while the node runs
        cohort = generate_cohort(store, definition)
        assert cohort.persons == len(gbsg2) - 2
        assert not {1, 2} & set(cohort.rows.subject_id)
        assert store.row_counts()["person"] == len(gbsg2) - 2
        agent.optout.remove(["1"])
        assert generate_cohort(store, definition).persons == len(gbsg2) - 1
    finally:
        store.close()


def _agent(tmp_path: Path, *, k: int) -> NodeAgent:
    """An agent over GBSG2 as a CDM with 12 observation periods ending before they start."""
    cdm = tmp_path / "gbsg2.duckdb"
    load_table(mapping=load_mapping(ROOT / "examples" / "omop" / "gbsg2.toml"),
               table=load_gbsg2(), cdm=cdm)  # fmt: skip
    con = duckdb.connect(str(cdm))
    con.execute(
        "UPDATE observation_period SET observation_period_end_date = "
        "observation_period_start_date - INTERVAL 1 DAY WHERE person_id <= 12"
    )
    con.close()
    config = NodeConfig.model_validate(
        {
            "hub_url": "http://127.0.0.1:9",
            "secret": "mfn_optout-omop-secret",
            "data_dir": str(tmp_path / "state"),
            "policy": {"min_cell_count": k},
            "omop": [{"name": "cdm", "duckdb": str(cdm)}],
        }
    )
    agent = NodeAgent(config)
    agent.open_datasets()
    return agent


def test_registered_omop_counts_do_not_move_when_one_person_opts_out(tmp_path: Path) -> None:
    k = 4  # 686 persons round to 688, 685 to 684: plain rounding would tell the opt-out
    agent = _agent(tmp_path, k=k)
    omop = agent.omop["cdm"]
    try:
        before = omop.registration(min_cell_count=k, rounding=k, memory=agent.optout)
        agent.optout.add(["7"])
        assert omop.store.row_counts()["person"] == len(load_gbsg2()) - 1
        after = omop.registration(min_cell_count=k, rounding=k, memory=agent.optout)
        plain_after = omop.registration(min_cell_count=k, rounding=k)
    finally:
        omop.close()
    assert plain_after.row_count == 684  # plain rounding crosses the step: 688 → 684
    assert after.row_count == before.row_count == 688
    assert after.summary == before.summary
    assert before.summary is not None
    tables = before.summary["omop"]["tables"]
    assert tables["person"] == 688 and tables["condition_occurrence"] is not None


def test_quality_summary_does_not_move_when_a_defect_carrying_patient_opts_out(
    tmp_path: Path,
) -> None:
    k = 4
    agent = _agent(tmp_path, k=k)
    omop = agent.omop["cdm"]
    try:
        before = omop_quality(omop.store, min_cell_count=k, rounding=k, memory=agent.optout)
        agent.optout.add(["1"])  # one of the 12 persons whose period ends before it starts
        after = omop_quality(omop.store, min_cell_count=k, rounding=k, memory=agent.optout)
        plain_after = omop_quality(omop.store, min_cell_count=k, rounding=k)
    finally:
        omop.close()
    assert before is not None and after is not None and plain_after is not None
    assert plain_after != before  # without the memory a count moves (persons: 688 → 684)
    assert after == before
    checks = {(c["name"], c["field"]): c for c in after["data_quality"]["checks"]}
    periods = checks["plausibleStartBeforeEnd", "observation_period.observation_period_end_date"]
    assert periods["failed"] == 12 and periods["status"] == "fail"  # 12, then 11 visible
    assert isinstance(periods["rows"], int) and periods["rows"] % k == 0
