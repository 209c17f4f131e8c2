"""Helpers for tests against a real hub: people, nodes and the small :class:`World`.

The world is built through the HTTP API only (as an administrator would): Org A (the hub
admin, researcher ``rita``, ``node-a``) and Org B (org admin ``bert``, researcher ``otto``,
``node-b``). Rita created project P and is its only member; each node registered a
dataset ``cohort`` with the columns in :data:`COLUMNS`.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

with warnings.catch_warnings():
    # Starlette nudges towards httpx2; its TestClient over httpx works the same.
    warnings.filterwarnings("ignore", message=".*httpx2", category=UserWarning)
    from starlette.testclient import TestClient

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "user-password-1"
COLUMNS = [
    {"name": "age", "type": "integer"},
    {"name": "grade", "type": "string"},
    {"name": "size", "type": "float"},
]

# Put on a module (``pytestmark = SQLITE_ONLY``) whose checks happen before storage: its
# tests then run on SQLite only, while tests/contract runs on every backend.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USERNAME",
    "COLUMNS",
    "PASSWORD",
    "SQLITE_ONLY",
    "NodeInfo",
    "Person",
    "TestClient",
    "World",
    "bearer",
    "build_world",
    "done",
    "grant_access",
    "make_person",
    "mean_output",
    "statements",
    "wait_listening",
]


@contextmanager
def statements(world: World) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block."""
    seen: list[str] = []

    def note(*args: Any) -> None:
        seen.append(str(args[2]))

    engine = world.app.state.engine
    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def ledger_claims(world: World, run_id: int) -> list[dict[str, Any]]:
    """The ledger's ``run.claim`` entries for run ``run_id``, in order."""
    with world.app.state.sessionmaker() as session:
        bodies = session.scalars(sa.text("SELECT body FROM ledger_entries ORDER BY idx"))
        return [
            entry
            for entry in map(json.loads, bodies)
            if entry["action"] == "run.claim" and entry["objects"]["run"] == run_id
        ]


def wait_listening(world: World) -> None:
    """On PostgreSQL, wait until the app's wake-up listener listens: connecting, it wakes
    every waiter and empties every bearer cache once (whatever it missed), which would race
    tests that look at hints or kept entries."""
    listener = getattr(world.app.state, "wake_listener", None)
    if listener is not None:
        assert listener.listening.wait(60)


@contextmanager
def nodes_answering(world: World, outputs: dict[int, dict[str, Any]]) -> Iterator[None]:
    """Node A and node B long-poll in a thread (their own TestClient) and answer each run
    with ``outputs[node id]``, until the block ends."""
    stop = threading.Event()

    def serve() -> None:
        client = TestClient(world.app)
        while not stop.is_set():
            for node in (world.node_a, world.node_b):
                got = client.get("/api/node/runs/next", params={"wait": 0.2}, headers=node.headers)
                if got.status_code == 200:
                    run = got.json()
                    client.post(
                        f"/api/node/runs/{run['run_id']}/outcome",
                        json=done(run, outputs[node.id]),
                        headers=node.headers,
                    )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mean_output(n: int, total: float) -> dict[str, Any]:
    """What a node's ``mean`` step sends for column ``age``: ``n`` values summing to ``total``."""
    return {"rows": n, "n": {"age": n}, "stats": {"age": {"sum": total}}}


def done(assignment: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    """An ``ok`` answer to ``assignment`` (echoing its lease)."""
    return {
        "lease_id": assignment["lease_id"],
        "status": "done",
        "output_status": "ok",
        "output": output,
    }


@dataclass(frozen=True)
class Person:
    id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@dataclass(frozen=True)
class NodeInfo:
    id: int
    name: str
    secret: str
    organization_id: int
    dataset_id: int

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.secret)


@dataclass
class World:
    """Ids and credentials of the world, with the app and the TestClient of one test."""

    app: FastAPI
    api: TestClient
    admin: Person
    org_a: int
    org_b: int
    researcher: Person
    outsider: Person
    org_admin: Person
    project_id: int
    node_a: NodeInfo
    node_b: NodeInfo

    def create_task(
        self,
        algorithm: str = "mean",
        *,
        datasets: list[int | str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A task in project P by the researcher (201 asserted); ``mean`` of age by default."""
        body = {
            "project_id": self.project_id,
            "algorithm": algorithm,
            "datasets": datasets if datasets is not None else ["cohort"],
            "params": params if params is not None else {"columns": ["age"]},
        }
        return _ok(self.api.post("/api/tasks", json=body, headers=self.researcher.headers))

    def task(self, task_id: int) -> dict[str, Any]:
        """The task as the researcher sees it."""
        return _ok(self.api.get(f"/api/tasks/{task_id}", headers=self.researcher.headers), 200)

    def all_runs(self, task_id: int) -> list[dict[str, Any]]:
        """Every run of every round, as the hub administrator sees them."""
        return _ok(self.api.get(f"/api/tasks/{task_id}/runs", headers=self.admin.headers), 200)

    def claim(self, node: NodeInfo) -> dict[str, Any] | None:
        """The node's next run (``wait=0``), or None when there is nothing to do (204)."""
        response = self.api.get("/api/node/runs/next", params={"wait": 0}, headers=node.headers)
        if response.status_code == 204:
            return None
        return _ok(response, 200)

    def post_outcome(self, node: NodeInfo, run_id: int, body: dict[str, Any]) -> Any:
        return self.api.post(f"/api/node/runs/{run_id}/outcome", json=body, headers=node.headers)

    def count(self, table: str) -> int:
        """Rows in ``table``, read through the app's own sessionmaker."""
        with self.app.state.sessionmaker() as session:
            return int(session.scalar(sa.text(f"SELECT COUNT(*) FROM {table}")) or 0)


def _ok(response: Any, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()
    return data


def make_person(
    api: TestClient, admin: dict[str, str], username: str, org: int, roles: list[str]
) -> Person:
    body = {"username": username, "password": PASSWORD, "organization_id": org, "roles": roles}
    user = _ok(api.post("/api/users", json=body, headers=admin))
    login = _ok(api.post("/api/auth/login", json={"username": username, "password": PASSWORD}))
    return Person(id=user["id"], username=username, token=login["token"])


def _node(api: TestClient, admin: dict[str, str], name: str, org: int) -> NodeInfo:
    node = _ok(api.post("/api/nodes", json={"name": name, "organization_id": org}, headers=admin))
    body = {"name": "cohort", "description": f"at {name}", "columns": COLUMNS, "row_count": 100}
    dataset = _ok(api.post("/api/node/datasets", json=body, headers=bearer(node["secret"])), 200)
    return NodeInfo(node["id"], name, node["secret"], org, dataset["id"])


def build_world(app: FastAPI, api: TestClient, admin_token: str) -> World:
    admin = bearer(admin_token)
    me = _ok(api.get("/api/me", headers=admin), 200)
    org_a = me["organization_id"]
    org_b = _ok(api.post("/api/organizations", json={"name": "Org B"}, headers=admin))["id"]
    researcher = make_person(api, admin, "rita", org_a, ["researcher"])
    project = _ok(api.post("/api/projects", json={"name": "Project P"}, headers=researcher.headers))
    outsider = make_person(api, admin, "otto", org_b, ["researcher"])
    org_admin = make_person(api, admin, "bert", org_b, ["admin"])
    node_a = _node(api, admin, "node-a", org_a)
    node_b = _node(api, admin, "node-b", org_b)
    for node in (node_a, node_b):  # nodes register drafts; the hub admin releases them
        _ok(api.post(f"/api/datasets/{node.dataset_id}/release", headers=admin), 200)
    for node in (node_a, node_b):  # one application per holding organization
        grant_access(api, admin, researcher, project["id"], [node.dataset_id])
    return World(
        app=app,
        api=api,
        admin=Person(me["id"], ADMIN_USERNAME, admin_token),
        org_a=org_a,
        org_b=org_b,
        researcher=researcher,
        outsider=outsider,
        org_admin=org_admin,
        project_id=project["id"],
        node_a=node_a,
        node_b=node_b,
    )


def grant_access(
    api: TestClient,
    dac: dict[str, str],
    applicant: Person,
    project_id: int,
    dataset_ids: list[int],
    days: int = 365,
) -> dict[str, Any]:
    """Apply for ``dataset_ids`` as ``applicant``, submit, and approve as ``dac``."""
    body = {
        "project_id": project_id,
        "datasets": dataset_ids,
        "purpose": "test analyses",
        "ethics_reference": "EC-TEST-1",
        "intended_use": {"codes": ["HMB"]},
        "duration_days": days,
    }
    application = _ok(api.post("/api/access/applications", json=body, headers=applicant.headers))
    path = f"/api/access/applications/{application['id']}"
    _ok(api.post(f"{path}/submit", headers=applicant.headers), 200)
    ends = (datetime.now(UTC) + timedelta(days=days - 1)).isoformat()
    return _ok(api.post(f"{path}/approve", json={"ends_at": ends}, headers=dac), 200)
