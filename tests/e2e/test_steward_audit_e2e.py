"""Real node processes: a differencing refusal reaches the steward's view and the ledger.

The node sends its keyed filter hash, one row-set fingerprint and the rule's category
with the outcome; the hub's ``run.finish`` entry holds the hashes (they match the node's
own log), the hospital's steward sees the refusal flagged (API and ``medfed audit
queries``), and the researcher sees only that one node withheld.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from medfed.sdk.client import Client
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

K = 5
HOSPITAL = "hospital-a"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, gbsg2: pd.DataFrame) -> Iterator[Federation]:
    root: Path = tmp_path_factory.mktemp("steward")
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    with Federation(root, shares) as federation:
        yield federation


def test_a_differencing_refusal_is_flagged_for_the_steward_with_the_hashes_in_the_ledger(
    fed: Federation, gbsg2: pd.DataFrame
) -> None:
    share = split_gbsg2(gbsg2)[HOSPITAL]
    older = share[share.age >= 40]
    assert min(len(older), len(share) - len(older)) >= K  # the first count splits it safely
    counts = older.age.value_counts()
    few = int(counts[(counts > 0) & (counts < K)].index.min())  # 1..k-1 patients at A
    client = fed.researcher
    first = client.tasks.wait(
        client.tasks.submit("count", datasets=["gbsg2"], where="age >= 40").id, progress=False
    )
    assert first.status.value == "completed" and first.withheld_nodes == 0
    second = client.tasks.wait(
        client.tasks.submit("count", datasets=["gbsg2"], where=f"age >= 40 and age != {few}").id,
        progress=False,
    )
    assert second.withheld_nodes >= 1  # A would release F minus a few patients: withheld
    assert "differencing" not in json.dumps(second.model_dump(mode="json"))

    org = next(o for o in fed.admin.organizations.list() if o.name == f"{HOSPITAL} hospital")
    fed.admin.users.create(
        "stella", "steward-password-1", organization_id=org.id, roles=["steward"]
    )
    steward = Client.login(fed.hub.url, "stella", "steward-password-1")
    entries = steward.ledger.queries(fed.project_id)
    assert {e.node_name for e in entries} == {HOSPITAL}  # only the steward's own data
    released = next(e for e in entries if e.task_id == first.id)
    assert released.decision == "released" and released.rule == "none" and not released.flagged
    assert released.filter_text == "age >= 40"
    refused = next(e for e in entries if e.task_id == second.id)
    assert refused.rule == "differencing" and refused.flagged
    assert refused.decision == "withheld" and refused.researcher == "researcher"
    assert refused.filter_text == f"age >= 40 and age != {few}"
    assert refused.filter_hash and refused.rowset_fingerprint
    assert refused.filter_hash != released.filter_hash

    finish = next(
        json.loads(e.body)
        for e in client.ledger.entries()
        if json.loads(e.body)["action"] == "run.finish"
        and json.loads(e.body)["objects"]["run"] == refused.run_id
    )
    assert finish["hashes"]["filter"] == refused.filter_hash
    assert finish["hashes"]["rowsets"] == refused.rowset_fingerprint
    assert "differencing" not in json.dumps(finish)
    entries = fed.nodes[HOSPITAL].run_log(
        lambda log: any(e.get("run_id") == refused.run_id for e in log)
    )
    line = next(e for e in entries if e.get("run_id") == refused.run_id)
    assert line["filter_hmac"] == refused.filter_hash[:32]
    assert line["rowset_fingerprint"] == refused.rowset_fingerprint
    assert line["rule"] == "differencing"

    env = {**os.environ, "MEDFED_URL": fed.hub.url, "MEDFED_TOKEN": steward.token or ""}
    shown = subprocess.run(
        [sys.executable, "-m", "medfed.cli.main", "audit", "queries", "--flagged"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "!differencing" in shown.stdout and str(second.id) in shown.stdout
