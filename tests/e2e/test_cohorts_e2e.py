"""Saved cohorts end to end: a real hub and two real node processes, each with an OMOP CDM.

Each node's CDM is built from half of lifelines' GBSG2 (even and odd rows) through the
shipped mapping (examples/omop/gbsg2.toml) and declared in its node.toml as ``[[omop]]``.
The researcher imports ATLAS definitions with the SDK and asks for (1) the counts and
attrition at each node, which must equal pandas on the node's rows, gated (under
min_cell_count withheld) and rounded like discovery counts; (2) a Cox model on the
cohort's features, which must equal lifelines on the pooled flat table; (3) a second
cohort whose persons differ from a released one by a single person, which the node
holding that person must withhold (row-set memory: differencing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from circetools import BREAST, HORMONAL, NODES, RECURRENCE, cohort, concept_set
from medfed.algorithms.cohorts.counts import CohortCountsResult, gate_count
from medfed.algorithms.survival.results import CoxResult
from medfed.testing.federation import Federation
from omoptools import halves, omop_federation

pytestmark = pytest.mark.e2e

K, ROUNDING = 3, 10  # the nodes' min_cell_count; count_rounding is the default 10
COVARIATES = ["age", "tsize", "pnodes", "progrec", "horTh", "post"]


def rule(name: str, criteria: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    window = {"Start": {"Days": start, "Coeff": 1}, "End": {"Days": end, "Coeff": 1}}
    return {
        "name": name,
        "expression": {
            "Type": "ALL",
            "CriteriaList": [
                {"Criteria": criteria, "StartWindow": window, "Occurrence": {"Type": 2, "Count": 1}}
            ],
        },
    }


SETS = [concept_set(0, BREAST, True), concept_set(1, NODES, False), concept_set(2, HORMONAL, True)]
ATTRITION = cohort(
    {"ConditionOccurrence": {"CodesetId": 0}},
    SETS,
    InclusionRules=[
        rule(
            "more than 3 positive nodes",
            {"Measurement": {"CodesetId": 1, "ValueAsNumber": {"Value": 3, "Op": "gt"}}},
            0,
            30,
        ),
        rule("hormone therapy", {"DrugExposure": {"CodesetId": 2}}, 0, 0),
    ],
)
EVERYONE = cohort({"ConditionOccurrence": {"CodesetId": 0}}, [concept_set(0, BREAST, True)])
FEATURES = {
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


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, gbsg2: pd.DataFrame
) -> Iterator[Federation]:
    shares = dict(zip(["node-a", "node-b"], halves(gbsg2), strict=True))
    with omop_federation(tmp_path_factory.mktemp("cohorts"), shares, min_cell_count=K) as fed:
        yield fed


def node_of(fed: Federation) -> dict[int, str]:
    """Hub dataset id → node name."""
    nodes = {n.id: n.name for n in fed.admin.nodes.list()}
    return {d.id: nodes[d.node_id] for d in fed.admin.datasets.list()}


def test_registration_and_counts_equal_pandas(federation: Federation, gbsg2: pd.DataFrame) -> None:
    datasets = federation.researcher.datasets.list()
    assert sorted(d.name for d in datasets) == ["cdm", "cdm"]
    for d in datasets:
        omop = (d.summary or {})["omop"]
        assert omop["vocabulary_version"] == "medfed-test-vocabulary 2026-01"
        assert d.row_count == gate_count(len(gbsg2) // 2, min_cell_count=K, rounding=K)
    saved = federation.researcher.cohorts.import_atlas(
        json.dumps(ATTRITION), name="nodes and hormones"
    )
    assert saved.version == 1 and saved.created
    task = federation.researcher.cohorts.counts(saved.id, datasets=["cdm"], progress=False)
    result = task.result
    assert isinstance(result, CohortCountsResult)
    assert result.rules == ["more than 3 positive nodes", "hormone therapy"]
    where = node_of(federation)
    shares = dict(zip(["node-a", "node-b"], halves(gbsg2), strict=True))
    for node in result.nodes:
        share = shares[where[node.dataset_id]]
        rule1 = share.pnodes > 3
        rule2 = rule1 & (share.horTh == "yes")
        expected = [len(share), int(rule1.sum()), int(rule2.sum()), int(rule2.sum())]
        gated = [gate_count(n, min_cell_count=K, rounding=ROUNDING) for n in expected]
        assert [node.base_persons, *node.attrition, node.persons] == gated


def test_cox_on_the_cohort_equals_lifelines(federation: Federation, gbsg2: pd.DataFrame) -> None:
    saved = federation.researcher.cohorts.import_atlas(EVERYONE, name="everyone")
    task = federation.researcher.tasks.run(
        "cox",
        datasets=["cdm"],
        progress=False,
        cohort={"id": saved.id, "version": saved.version},
        features=FEATURES,
        duration="recurrence_time",
        event="recurrence_event",
        covariates=COVARIATES,
    )
    result = task.result
    assert isinstance(result, CoxResult)
    pooled = pd.DataFrame(
        {
            "recurrence_time": gbsg2.time.astype(float),
            "recurrence_event": gbsg2.cens,
            "age": gbsg2.age.astype(float),
            "tsize": gbsg2.tsize.astype(float),
            "pnodes": gbsg2.pnodes.astype(float),
            "progrec": gbsg2.progrec.astype(float),
            "horTh": (gbsg2.horTh == "yes").astype(int),
            "post": (gbsg2.menostat == "Post").astype(int),
        }
    )
    ref = CoxPHFitter().fit(
        pooled,
        "recurrence_time",
        "recurrence_event",
        fit_options={"precision": 1e-14, "r_precision": 1e-16},
    )
    np.testing.assert_allclose(result.coef, ref.params_[COVARIATES], rtol=1e-6)
    np.testing.assert_allclose(result.se, ref.standard_errors_[COVARIATES], rtol=1e-6)


def test_differencing_two_cohorts_by_one_person_is_refused(
    federation: Federation, gbsg2: pd.DataFrame
) -> None:
    client = federation.researcher
    everyone = client.cohorts.import_atlas(EVERYONE, name="everyone")
    first = client.cohorts.counts(everyone.id, datasets=["cdm"], progress=False)
    assert first.withheld_nodes == 0  # both nodes released the whole cohort
    # the youngest woman of node-a is the only one of her age there: leave her out
    share = halves(gbsg2)[0]
    youngest = int(share.age.min())
    assert int((share.age == youngest).sum()) == 1
    # an older half released first, so the attack splits an earlier released set whatever
    # the module's other tests released before (that history decides the rule's name)
    middle = int(share.age.median())
    older = cohort(
        {"ConditionOccurrence": {"CodesetId": 0, "Age": {"Value": middle, "Op": "gt"}}},
        [concept_set(0, BREAST, True)],
    )
    half = client.cohorts.import_atlas(older, name="older half")
    halved = client.cohorts.counts(half.id, datasets=["cdm"], progress=False)
    assert halved.withheld_nodes == 0
    but_one = cohort(
        {"ConditionOccurrence": {"CodesetId": 0, "Age": {"Value": youngest, "Op": "gt"}}},
        [concept_set(0, BREAST, True)],
    )
    attack = client.cohorts.import_atlas(but_one, name="everyone but one")
    task = client.tasks.submit("cohort_counts", datasets=["cdm"], cohort={"id": attack.id})
    ended = client.tasks.wait(task.id, timeout=300, progress=False)
    # node-a withheld its answer; with one node left the hub releases nothing at all
    assert ended.status == "failed" and ended.result is None
    assert (ended.withheld_nodes, ended.contributing_nodes) == (1, 1)
    ids = {r.run_id for r in ended.runs}
    entries = federation.nodes["node-a"].run_log(
        lambda log: any(e.get("run_id") in ids and "rule" in e for e in log)
    )
    refused = [e for e in entries if e.get("run_id") in ids and "rule" in e][-1]
    assert refused["rule"] == "differencing"
    assert refused["cohort"]["sha256"] == attack.definition_hash
