"""The audit log across real processes: nodes cosign, the CLI verifies, logs agree."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from medfed.sdk import audit
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, gbsg2: pd.DataFrame) -> Iterator[Federation]:
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    root: Path = tmp_path_factory.mktemp("audit")
    with Federation(root, shares, hub_env={"MEDFED_CHECKPOINT_SECONDS": "0.3"}) as federation:
        client = federation.researcher
        client.tasks.run("mean", datasets=["gbsg2"], columns=["age"], progress=False)
        client.tasks.run("count", datasets=["gbsg2"], progress=False)
        yield federation


def medfed(fed: Federation, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDFED_URL": fed.hub.url, "MEDFED_TOKEN": fed.researcher.token or ""}
    return subprocess.run(
        [sys.executable, "-m", "medfed.cli.main", "audit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_every_node_cosigns_the_hubs_checkpoints(fed: Federation) -> None:
    size = fed.researcher.ledger.checkpoint().size
    deadline = time.monotonic() + 20
    cosigners: set[str] = set()
    while time.monotonic() < deadline:
        head = fed.researcher.ledger.checkpoint()
        cosigners = set(head.cosignatures)
        if head.size >= size and len(cosigners) == 3:
            break
        time.sleep(0.2)
    assert len(cosigners) == 3, cosigners
    report = audit.verify(fed.researcher.ledger)
    assert report.ok, report.problems
    assert report.cosignatures_checked >= 3


def test_audit_verify_trail_and_compare_from_the_cli(fed: Federation) -> None:
    verified = medfed(fed, "verify")
    assert verified.returncode == 0, verified.stderr
    assert "the log verifies" in verified.stdout
    dataset = fed.researcher.datasets.list()[0]
    trail = audit.trail(fed.researcher.ledger, dataset.id)
    actions = [item.action for item in trail]
    assert "dataset.register" in actions and "run.finish" in actions
    assert all(item.proven for item in trail)
    shown = medfed(fed, "trail", "--dataset", str(dataset.id))
    assert shown.returncode == 0 and "run.finish" in shown.stdout
    for node in fed.admin.nodes.list():
        log = fed.nodes[node.name].folder / "state" / "runs.jsonl"
        # both runs' entries are on disk (a node logs a run just after the hub accepts it)
        fed.nodes[node.name].run_log(lambda entries: sum("accepted" in e for e in entries) >= 2)
        compared = audit.compare(fed.researcher.ledger, log, node.id)
        assert compared.ok and len(compared.matched) == 2, compared
        done = medfed(fed, "compare", "--node-log", str(log), "--node", str(node.id))
        assert done.returncode == 0, done.stdout + done.stderr
