"""The node refuses runs whose signed entitlement is missing, bad, expired, revoked or stale.

Assignments are crafted here and handed to a real ``NodeAgent.check_policy`` (no hub
needed: the hub key is pinned in the node's config, as ``node.toml`` allows).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medfed.common.access_resources import EntitlementStatement, SignedEntitlement
from medfed.common.resources import RunAssignment
from medfed.ledger.checkpoint import derive_key, public_b64
from medfed.node.agent import NodeAgent
from medfed.node.config import NodeConfig, Policy
from medfed.node.entitlements import round_discovery

HUB = derive_key("hub secret for the test")
NODE_ID = 7


def _now() -> datetime:
    """The time a test runs (never collection time: a slow suite must not age statements)."""
    return datetime.now(UTC)


def _sign(key: Any = HUB, **overrides: Any) -> SignedEntitlement:
    now = _now()
    values: dict[str, Any] = {
        "entitlement_id": 1,
        "project_id": 3,
        "dataset_id": 11,
        "dataset_name": "cohort",
        "node_id": NODE_ID,
        "manifest_root": None,
        "not_before": (now - timedelta(days=1)).isoformat(),
        "not_after": (now + timedelta(days=30)).isoformat(),
        "revoked": False,
        "issued_at": now.isoformat(),
    }
    values.update(overrides)
    statement = EntitlementStatement(**values)
    signature = base64.b64encode(key.sign(statement.text())).decode()
    return SignedEntitlement(statement=statement, signature=signature)


@pytest.fixture
def agent(tmp_path: Path) -> NodeAgent:
    path = tmp_path / "cohort.csv"
    pd.DataFrame({"age": list(range(40))}).to_csv(path, index=False)
    config = NodeConfig(
        hub_url="http://127.0.0.1:9",
        secret="mfn_test",
        data_dir=tmp_path / "node",
        hub_key=public_b64(HUB),
        policy=Policy(count_rounding=10),
        datasets=[{"name": "cohort", "path": path}],  # type: ignore[list-item]
    )
    node = NodeAgent(config)
    node.open_datasets()
    node.node_id = NODE_ID
    return node


def _run(entitlement: SignedEntitlement | None, **overrides: Any) -> RunAssignment:
    values: dict[str, Any] = {
        "run_id": 1,
        "task_id": 1,
        "project_id": 3,
        "round": 0,
        "algorithm": "count",
        "algorithm_version": "1",
        "params": {},
        "state": {},
        "dataset_id": 11,
        "dataset_name": "cohort",
        "lease_id": "x",
        "lease_expires_at": _now() + timedelta(seconds=30),
        "attempt": 1,
        "entitlement": entitlement,
        "task_nodes": 3,
    }
    values.update(overrides)
    return RunAssignment(**values)


def _refusal(agent: NodeAgent, run: RunAssignment) -> str:
    from medfed.algorithms.registry import get_algorithm

    run = run.model_copy(update={"algorithm_version": get_algorithm(run.algorithm).version})
    return agent.check_policy(run) or ""


def test_a_valid_statement_passes(agent: NodeAgent) -> None:
    assert _refusal(agent, _run(_sign())) == ""


# each case builds its statement when the test runs, so the clock is read then
_BAD: list[tuple[Callable[[datetime], SignedEntitlement | None], str]] = [
    (lambda now: None, "carries no signed entitlement"),
    (lambda now: _sign(not_after=(now - timedelta(seconds=1)).isoformat()), "expired at"),
    (lambda now: _sign(not_before=(now + timedelta(days=1)).isoformat()), "not valid before"),
    (lambda now: _sign(revoked=True), "revoked"),
    (lambda now: _sign(key=derive_key("another hub")), "signature does not verify"),
    (lambda now: _sign(issued_at=(now - timedelta(hours=2)).isoformat()), "older than 600 s"),
    (lambda now: _sign(issued_at=(now + timedelta(hours=2)).isoformat()), "issued in the future"),
    (lambda now: _sign(node_id=8), "issued for node 8"),
    (lambda now: _sign(project_id=4), "issued for project 4"),
    (lambda now: _sign(dataset_id=12), "issued for dataset 12"),
    (lambda now: _sign(manifest_root="0" * 64), "differs from the entitled version"),
]


@pytest.mark.parametrize(("make", "needle"), _BAD, ids=[needle for _, needle in _BAD])
def test_bad_statements_are_refused(
    agent: NodeAgent, make: Callable[[datetime], SignedEntitlement | None], needle: str
) -> None:
    assert needle in _refusal(agent, _run(make(_now())))


def test_a_tampered_statement_is_refused(agent: NodeAgent) -> None:
    now = _now()
    signed = _sign(not_after=(now - timedelta(days=1)).isoformat())  # signed as expired
    forged = signed.statement.model_copy(
        update={"not_after": (now + timedelta(days=365)).isoformat()}
    )
    tampered = SignedEntitlement(statement=forged, signature=signed.signature)
    assert "signature does not verify" in _refusal(agent, _run(tampered))
    revoked = _sign(revoked=True)
    unrevoked = SignedEntitlement(
        statement=revoked.statement.model_copy(update={"revoked": False}),
        signature=revoked.signature,
    )
    assert "signature does not verify" in _refusal(agent, _run(unrevoked))


def test_discovery_runs_follow_the_node_policy(agent: NodeAgent) -> None:
    assert _refusal(agent, _run(None, discovery=True)) == ""
    assert "may only use 'count'" in _refusal(agent, _run(None, discovery=True, algorithm="mean"))
    agent.config.policy.allow_discovery = False
    assert "does not answer discovery" in _refusal(agent, _run(None, discovery=True))


def test_discovery_counts_are_rounded_never_below_the_threshold() -> None:
    policy = Policy(min_cell_count=5, count_rounding=10)
    assert round_discovery({"n": 44}, policy) == {"n": 40}
    assert round_discovery({"n": 46}, policy) == {"n": 50}
    assert round_discovery({"n": 5}, policy) == {"n": 10}
    assert round_discovery({"n": 0}, policy) == {"n": 0}
    assert round_discovery(None, policy) is None
    # the default policy rounds to 10 (as the config example says)
    assert Policy().count_rounding == 10
    assert round_discovery({"n": 7}, Policy(min_cell_count=5)) == {"n": 10}
    assert round_discovery({"n": 14}, Policy(min_cell_count=5)) == {"n": 10}
    # a steward may turn rounding off; the threshold rule alone then applies
    assert round_discovery({"n": 7}, Policy(min_cell_count=5, count_rounding=1)) == {"n": 7}
    # the floor is the threshold rounded up to a step: never a count under the threshold
    assert round_discovery({"n": 1}, Policy(min_cell_count=15, count_rounding=10)) == {"n": 20}
