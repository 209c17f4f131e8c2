"""A plan that tries to escape, run by real nodes in a real federation (sandbox on).

Two hospitals hold the breast-cancer data plus a column the training does not ask for.
Each node approves the hostile plans (as a steward might, fooled); the sandbox still
stops them: the runs fail with a fixed reason that carries no data, no update leaves a
node, and each node's own run log records what the plan tried.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from medfed.algorithms.learning.examples import TABULAR_LOGREG, breast_cancer_shares
from medfed.node.executors.plan_process import REASONS
from medfed.node.plans import PlanApprovals
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

FEATURES = [f"f{i}" for i in range(30)]
COLUMNS = [*FEATURES, "label"]
FAST = {"MEDFED_LEASE_SECONDS": "10", "MEDFED_SWEEP_SECONDS": "0.2"}
MARK = 987654.321  # the hidden column's value at every row


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    shares, _ = breast_cancer_shares(2, alpha=5.0, seed=0)
    tables = {f"site-{i}": {"cancer": share.assign(hidden=MARK)} for i, share in enumerate(shares)}
    root = tmp_path_factory.mktemp("sandbox")
    with Federation(root, tables, hub_env=FAST, heartbeat_seconds=0.5) as federation:
        yield federation


def _args(fed: Federation) -> dict[str, Any]:
    return {"features": 30, "mean": [0.0] * 30, "scale": [1.0] * 30, "holdout": 0.2}


def _run_hostile(fed: Federation, source: str) -> Any:
    """Start the training; the nodes hold it as pending; each steward approves it (as
    asked, envelope and all); the same training again then runs in the sandbox."""

    def start() -> Any:
        task = fed.researcher.learning.start(
            source,
            datasets=["cancer"],
            columns=COLUMNS,
            plan_args=_args(fed),
            rounds=1,
            local_epochs=1,
            batch_size=16,
            lr=0.1,
            seed=0,
        )
        return fed.researcher.tasks.wait(task.id, timeout=300, progress=False)

    first = start()
    assert first.status.value == "failed" and "not approved" in (first.error or "")
    for node in fed.nodes.values():
        approvals = PlanApprovals(node.folder / "state")
        for digest in list(approvals.pending()):
            approvals.decide(digest, "approved", reason="looks fine (it is not)")
    return start()


def _sandbox_entries(fed: Federation, final: Any) -> list[dict[str, Any]]:
    """Every node's sandbox entries, once each node that took part in ``final`` has
    logged its run of the task's last round (the training round, where the sandbox runs).

    ``final.runs`` lists each node's first-round run only, and a node logs a run once the
    hub has answered it: the task can end (its last answer taken) a moment before the
    last node's entry is on disk."""
    entries = []
    for node in fed.nodes.values():
        took_part = any(
            r.node_name == node.name and r.status.value in ("claimed", "done", "failed")
            for r in final.runs
        )

        def logged(log: list[dict[str, Any]], took_part: bool = took_part) -> bool:
            return not took_part or any(
                e.get("task_id") == final.id and e.get("round") == final.round for e in log
            )

        log = node.run_log(logged)
        entries += [e for e in log if e.get("rule") == "sandbox"]
    return entries


def test_a_plan_reading_the_nodes_config_and_calling_the_hub_fails_without_data(
    fed: Federation,
) -> None:
    node_toml = next(iter(fed.nodes.values())).folder / "node.toml"
    port = int(fed.hub.url.rsplit(":", 1)[1].strip("/"))
    source = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5).sendall(b'GET /')\n"
        "except OSError:\n"
        "    pass\n"
        f"SECRET = open({str(node_toml)!r}).read()\n" + TABULAR_LOGREG
    )
    final = _run_hostile(fed, source)
    assert final.status.value == "failed"
    assert REASONS["forbidden"] in (final.error or ""), final.error
    assert "mfn_" not in (final.error or "") and "hub_url" not in (final.error or "")
    assert not any(getattr(r, "output", None) for r in final.runs)  # no update left a node
    logged = _sandbox_entries(fed, final)
    assert len(logged) == 2
    assert all(
        "FileNotFoundError" in e["withheld"] and "node.toml" in e["withheld"] for e in logged
    )


def test_a_plan_reading_a_column_it_did_not_ask_for_gets_nothing(fed: Federation) -> None:
    source = TABULAR_LOGREG.replace(
        "def loss(model, batch):",
        "def loss(model, batch):\n    raise ValueError(str(_SEEN))",
    ).replace(
        "def train_set(frame, args):",
        "def train_set(frame, args):\n    global _SEEN\n    _SEEN = frame['hidden'].iloc[0]",
    )
    final = _run_hostile(fed, source)
    assert final.status.value == "failed"
    assert REASONS["exception"] in (final.error or ""), final.error
    logged = [e["withheld"] for e in _sandbox_entries(fed, final)]
    assert logged.count("KeyError: 'hidden'") == 2  # each node's log: the column is not there
    assert str(MARK) not in json.dumps([r.model_dump(mode="json") for r in final.runs])
