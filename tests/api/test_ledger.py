"""The hub's audit log on a real database: one entry per state change, in its transaction.

Tampering with one stored entry is caught and named; proofs served by the hub verify with
the independent RFC 9162 reference in ``tests/rfc9162.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from hubtools import World, done, mean_output
from medfed.common.errors import Conflict
from medfed.hub.services import accounts
from medfed.hub.services import ledger as ledger_service
from medfed.ledger.merkle import leaf_hash
from medfed.sdk import audit
from medfed.sdk.client import Client
from rfc9162 import mth, reference_verify_inclusion


def entries(world: World) -> list[dict[str, Any]]:
    with world.app.state.sessionmaker() as session:
        rows = session.execute(sa.text("SELECT body FROM ledger_entries ORDER BY idx"))
        return [json.loads(body) for (body,) in rows]


def checkpoint(world: World) -> int:
    with world.app.state.sessionmaker() as session:
        row = ledger_service.make_checkpoint(session, key=world.app.state.ledger_key)
        session.commit()
        return row.size if row is not None else ledger_service.size(session)


def sdk(world: World) -> Client:
    return Client("http://testserver", world.admin.token, http_client=world.api)


def run_mean_task(world: World) -> int:
    task = world.create_task()
    for node in (world.node_a, world.node_b):
        run = world.claim(node)
        assert run is not None
        response = world.post_outcome(node, run["run_id"], done(run, mean_output(10, 400.0)))
        assert response.status_code == 200, response.text
    assert world.task(task["id"])["status"] == "completed"
    return int(task["id"])


def test_every_state_change_has_its_entry_and_every_entry_its_change(world: World) -> None:
    task_id = run_mean_task(world)
    log = entries(world)
    actions = [e["action"] for e in log]
    for action in (
        "user.create",
        "auth.login",
        "organization.create",
        "project.create",
        "node.create",
        "dataset.register",
        "task.create",
        "run.claim",
        "run.finish",
        "result.release",
    ):
        assert action in actions, action
    assert actions.count("run.finish") == 2
    tables = {
        "organization": "organizations",
        "user": "users",
        "project": "projects",
        "node": "nodes",
        "dataset": "datasets",
        "task": "tasks",
        "run": "runs",
        "token": "api_tokens",
    }
    with world.app.state.sessionmaker() as session:
        for entry in log:
            assert entry["actor"].split(":")[0] in {"hub", "user", "node"}
            for kind, table in tables.items():
                if kind in entry["objects"]:
                    found = session.scalar(
                        sa.text(f"SELECT COUNT(*) FROM {table} WHERE id = :id"),
                        {"id": entry["objects"][kind]},
                    )
                    assert found == 1, (entry, kind)
    released = [e for e in log if e["action"] == "result.release"]
    assert released[-1]["objects"]["task"] == task_id
    # no personal data: the user names never appear in the log
    text = json.dumps(log)
    assert "rita" not in text and "otto" not in text


def test_a_failed_action_leaves_no_entry(world: World) -> None:
    before = entries(world)
    duplicate = world.api.post(
        "/api/projects", json={"name": "Project P"}, headers=world.researcher.headers
    )
    assert duplicate.status_code == 409
    bad_task = world.api.post(
        "/api/tasks",
        json={
            "project_id": world.project_id,
            "algorithm": "mean",
            "datasets": ["cohort"],
            "params": {"columns": ["nosuch"]},
        },
        headers=world.researcher.headers,
    )
    assert bad_task.status_code == 422
    # a change that recorded its entry and then failed in the same transaction
    with world.app.state.sessionmaker() as session:
        accounts.create_organization(session, actor=None, name="Rolled Back")
        with pytest.raises(Conflict):
            accounts.create_organization(session, actor=None, name="Rolled Back")
        session.rollback()
    assert entries(world) == before
    with world.app.state.sessionmaker() as session:
        assert ledger_service.size(session) == len(before)
        assert (
            session.scalar(sa.text("SELECT COUNT(*) FROM organizations WHERE name = 'Rolled Back'"))
            == 0
        )


def test_hub_proofs_verify_with_the_independent_reference(world: World) -> None:
    run_mean_task(world)
    size = checkpoint(world)
    client = sdk(world)
    head = client.ledger.checkpoint()
    assert head.size == size
    bodies = [e.body.encode() for e in client.ledger.entries()]
    assert mth(bodies[:size]).hex() == head.root
    for index in range(size):
        proof = client.ledger.inclusion(index, size)
        assert proof.leaf == leaf_hash(bodies[index]).hex()
        hashes = [bytes.fromhex(h) for h in proof.proof]
        assert reference_verify_inclusion(
            leaf_hash(bodies[index]), index, size, hashes, bytes.fromhex(head.root)
        )
    report = audit.verify(client.ledger)
    assert report.ok, report.problems


def _tamper(world: World, statements: list[tuple[str, dict[str, Any]]]) -> None:
    with world.app.state.sessionmaker() as session:
        for sql, params in statements:
            session.execute(sa.text(sql), params)
        session.commit()


def _body(world: World, index: int) -> str:
    with world.app.state.sessionmaker() as session:
        return str(
            session.scalar(sa.text("SELECT body FROM ledger_entries WHERE idx = :i"), {"i": index})
        )


@pytest.mark.parametrize("kind", ["edit", "delete", "reorder"])
def test_tampering_with_one_stored_entry_is_caught_and_named(world: World, kind: str) -> None:
    run_mean_task(world)
    size = checkpoint(world)
    bad = size // 2
    if kind == "edit":
        body = _body(world, bad).replace('"actor":"', '"actor":"x', 1)
        _tamper(
            world, [("UPDATE ledger_entries SET body = :b WHERE idx = :i", {"b": body, "i": bad})]
        )
    elif kind == "delete":
        _tamper(world, [("DELETE FROM ledger_entries WHERE idx = :i", {"i": bad})])
    else:
        first, second = _body(world, bad), _body(world, bad + 3)
        _tamper(
            world,
            [
                ("UPDATE ledger_entries SET body = :b WHERE idx = :i", {"b": second, "i": bad}),
                ("UPDATE ledger_entries SET body = :b WHERE idx = :i", {"b": first, "i": bad + 3}),
            ],
        )
    report = audit.verify(sdk(world).ledger)
    assert not report.ok
    assert report.first_bad_index == bad, report.problems
