"""Opt-out reaches an ``[[omop]]`` dataset through the node agent's own store.

A real :class:`~medfed.node.agent.NodeAgent` opens GBSG2 mapped to an OMOP CDM
(``examples/omop/gbsg2.toml``); persons opted out in its real register file (as
``medfed node optout add`` writes it, OMOP ``person_id`` digits) vanish from the cohort
count and the person count at the next read, and come back when the opt-out is removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lifelines.datasets import load_gbsg2

from medfed.algorithms.cohorts.circe import parse_definition
from medfed.node.agent import NodeAgent
from medfed.node.config import NodeConfig
from medfed.node.omop_load import load_mapping, load_table
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
