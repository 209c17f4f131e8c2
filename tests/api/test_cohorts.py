"""Saved cohorts at the hub: import, versions, refusal, and tasks that name a cohort.

Real app (TestClient) on SQLite and PostgreSQL (the ``world`` fixture). The definitions
are Circe JSON as ATLAS exports it; the hash is checked against
:func:`medfed.algorithms.cohorts.circe.definition_hash` of the parsed definition.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import sqlalchemy as sa

from hubtools import World, _ok, done
from medfed.algorithms.cohorts.circe import definition_hash, parse_definition
from omoptools import omop_datasets

BREAST = 2000000100


def definition(days: int = 30) -> dict[str, Any]:
    item = {"concept": {"CONCEPT_ID": BREAST}, "includeDescendants": True}
    window = {"Start": {"Days": 0, "Coeff": 1}, "End": {"Days": days, "Coeff": 1}}
    rule = {
        "name": "more than 3 positive nodes",
        "expression": {
            "Type": "ALL",
            "CriteriaList": [
                {
                    "Criteria": {
                        "Measurement": {
                            "CodesetId": 1,
                            "ValueAsNumber": {"Value": 3, "Op": "gt"},
                        }
                    },
                    "StartWindow": window,
                    "Occurrence": {"Type": 2, "Count": 1},
                }
            ],
        },
    }
    nodes = {"concept": {"CONCEPT_ID": 2000001002}, "includeDescendants": False}
    return {
        "ConceptSets": [
            {"id": 0, "name": "breast cancer", "expression": {"items": [item]}},
            {"id": 1, "name": "positive nodes", "expression": {"items": [nodes]}},
        ],
        "PrimaryCriteria": {
            "CriteriaList": [{"ConditionOccurrence": {"CodesetId": 0}}],
            "ObservationWindow": {"PriorDays": 0, "PostDays": 0},
            "PrimaryCriteriaLimit": {"Type": "First"},
        },
        "QualifiedLimit": {"Type": "First"},
        "ExpressionLimit": {"Type": "First"},
        "InclusionRules": [rule],
        "CollapseSettings": {"CollapseType": "ERA", "EraPad": 0},
    }


def save(world: World, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = world.api.post("/api/cohorts", json=body, headers=world.researcher.headers)
    return _ok(response, status)


def test_import_versions_and_visibility(world: World) -> None:
    body = {"project_id": world.project_id, "name": "nodes", "definition": definition()}
    first = save(world, body)
    assert (first["version"], first["created"]) == (1, True)
    assert first["definition_hash"] == definition_hash(parse_definition(definition()))
    # ATLAS's wrapper object around the expression, keys in another order: unchanged
    wrapped = {"name": "x", "expression": dict(reversed(list(definition().items())))}
    again = save(world, {**body, "definition": wrapped}, 200)
    assert (again["id"], again["version"], again["created"]) == (first["id"], 1, False)
    second = save(world, {**body, "definition": definition(days=60)})
    assert (second["id"], second["version"]) == (first["id"], 2)
    assert second["definition_hash"] != first["definition_hash"]

    listed = world.api.get(
        f"/api/projects/{world.project_id}/cohorts", headers=world.researcher.headers
    ).json()
    assert [(c["name"], c["version"]) for c in listed] == [("nodes", 2)]
    old = world.api.get(
        f"/api/cohorts/{first['id']}", params={"version": 1}, headers=world.researcher.headers
    ).json()
    assert old["definition"] == parse_definition(definition())
    assert [v["version"] for v in old["versions"]] == [1, 2]
    assert old["versions"][0]["inclusion_rules"] == ["more than 3 positive nodes"]
    assert old["versions"][0]["concept_ids"] == [BREAST, 2000001002]
    outsider = world.api.get(f"/api/cohorts/{first['id']}", headers=world.outsider.headers)
    assert outsider.status_code == 404
    with world.app.state.sessionmaker() as session:
        bodies = [
            json.loads(b) for b in session.scalars(sa.text("SELECT body FROM ledger_entries"))
        ]
    versions = [b for b in bodies if b.get("action") == "cohort.version"]
    assert [v["hashes"]["definition"] for v in versions] == [
        first["definition_hash"],
        second["definition_hash"],
    ]


def test_unknown_construct_is_named_and_nothing_stored(world: World) -> None:
    bad = definition()
    bad["InclusionRules"][0]["expression"]["CriteriaList"][0]["StartWindw"] = {}
    body = {"project_id": world.project_id, "name": "bad", "definition": bad}
    response = world.api.post("/api/cohorts", json=body, headers=world.researcher.headers)
    assert response.status_code == 422
    assert "InclusionRules[0].expression.CriteriaList[0].StartWindw" in response.text
    genomic = copy.deepcopy(definition())
    genomic["PrimaryCriteria"]["CriteriaList"] = [{"GenomicVariant": {"CodesetId": 0}}]
    response = world.api.post(
        "/api/cohorts", json={**body, "definition": genomic}, headers=world.researcher.headers
    )
    assert response.status_code == 422 and "GenomicVariant" in response.text
    assert world.count("cohorts") == 0 and world.count("cohort_versions") == 0
    other = world.api.post(
        "/api/cohorts",
        json={**body, "definition": definition()},
        headers=world.outsider.headers,  # not a member of the project
    )
    assert other.status_code in (403, 404)
    assert world.count("cohorts") == 0


def test_tasks_name_a_cohort_and_nodes_get_its_definition(world: World) -> None:
    saved = save(world, {"project_id": world.project_id, "name": "n", "definition": definition()})
    cdm = omop_datasets(world)
    features = {
        "covariates": [
            {"name": "pnodes", "domain": "measurement", "concepts": [2000001002], "value": "last"}
        ],
        "outcome": {"name": "recurrence", "domain": "condition", "concepts": [2000000150]},
    }
    task = world.create_task(
        "cox",
        datasets=cdm,
        params={
            "cohort": {"id": saved["id"]},
            "features": features,
            "duration": "recurrence_time",
            "event": "recurrence_event",
            "covariates": ["age", "pnodes"],
        },
    )
    assert task["params"]["cohort"]["hash"] == saved["definition_hash"]
    assert task["params"]["cohort"]["version"] == 1
    run = world.claim(world.node_a)
    assert run is not None
    assert definition_hash(run["params"]["cohort"]["definition"]) == saved["definition_hash"]
    assert run["params"]["features"]["outcome"]["name"] == "recurrence"

    def refused(algorithm: str, datasets: list[Any], params: dict[str, Any], text: str) -> None:
        body = {
            "project_id": world.project_id,
            "algorithm": algorithm,
            "datasets": datasets,
            "params": params,
        }
        response = world.api.post("/api/tasks", json=body, headers=world.researcher.headers)
        assert response.status_code == 422, response.text
        assert text in response.text

    cohort = {"hash": saved["definition_hash"]}
    refused(
        "cox",
        cdm,
        {
            "cohort": cohort,
            "features": features,
            "duration": "recurrence_time",
            "event": "recurrence_event",
            "covariates": ["tsize"],
        },
        "tsize",
    )
    refused("cohort_counts", cdm, {}, "name a saved cohort")
    refused("mean", cdm, {"columns": ["age"]}, "is an OMOP CDM")
    refused("mean", ["cohort"], {"cohort": cohort, "columns": ["age"]}, "is not an OMOP CDM")
    refused("cohort_counts", cdm, {"cohort": {"id": saved["id"], "version": 9}}, "not found")
    refused("cohort_counts", cdm, {"cohort": cohort, "features": {"age": "x"}}, "features")


def test_cohort_counts_aggregate_per_node(world: World) -> None:
    saved = save(world, {"project_id": world.project_id, "name": "n", "definition": definition()})
    cdm = omop_datasets(world)
    task = world.create_task("cohort_counts", datasets=cdm, params={"cohort": {"id": saved["id"]}})
    outputs = {
        world.node_a.id: {"rules": ["r"], "base_persons": 340, "attrition": [150], "persons": 150},
        world.node_b.id: {
            "rules": ["r"],
            "base_persons": 340,
            "attrition": [None],
            "persons": None,
        },
    }
    for node in (world.node_a, world.node_b):
        run = world.claim(node)
        assert run is not None
        response = world.post_outcome(node, run["run_id"], done(run, outputs[node.id]))
        assert response.status_code == 200, response.text
    result = world.task(task["id"])
    assert result["status"] == "completed", result
    counts = result["result"]
    assert counts["rules"] == ["r"]
    assert counts["total_base_persons"] == 680
    assert counts["total_attrition"] == [None] and counts["total_persons"] is None
    by_node = {n["node_id"]: n for n in counts["nodes"]}
    assert by_node[world.node_a.id]["attrition"] == [150]
