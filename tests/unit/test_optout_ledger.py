"""The register's keyed hash reaches the hub's audit log through the node's fact channel.

A real hub app (TestClient, the test database of ``tests/conftest.py``); the node side is
the real ``NodeHubClient.ledger_fact`` body. Only a 64-hex hash of a known kind passes.
"""

from __future__ import annotations

import json
from pathlib import Path

from hubtools import World
from medfed.node.stores.optout import OptOutRegister


def test_register_hash_is_recorded_and_only_a_hash_passes(world: World, tmp_path: Path) -> None:
    register = OptOutRegister(tmp_path / "optout.sqlite3", secret=world.node_a.secret)
    register.add(["1", "2", "3"])
    digest = register.digest()
    body = {"kind": "optout.register", "hash": digest}
    answer = world.api.post("/api/node/ledger/fact", json=body, headers=world.node_a.headers)
    assert answer.status_code == 200, answer.text
    entries = world.api.get("/api/ledger/entries", headers=world.admin.headers).json()
    items = entries["items"] if isinstance(entries, dict) else entries
    bodies = [json.loads(e["body"]) for e in items]
    (entry,) = [b for b in bodies if b["action"] == "node.optout.register"]
    assert entry["hashes"] == {"optout.register": digest}
    assert entry["actor"] == f"node:{world.node_a.id}"
    for bad in (
        {"kind": "optout.register", "hash": "3 persons"},
        {"kind": "optout.count", "hash": digest},
        {"kind": "optout.register", "hash": digest, "n": 3},
    ):
        refused = world.api.post("/api/node/ledger/fact", json=bad, headers=world.node_a.headers)
        assert refused.status_code == 422, bad
    user = world.api.post("/api/node/ledger/fact", json=body, headers=world.researcher.headers)
    assert user.status_code in (401, 403)
