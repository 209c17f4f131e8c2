"""The hub's state contract, run on every backend (SQLite always, PostgreSQL when given).

Accounts, projects, nodes and datasets; the life of a task and its runs (claim, lease,
answer once, lease expiry, attempts, the ``min_nodes`` rule); unique names; and the
Alembic migrations against the models. Everything goes through the real app and its
services on a real database.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import FastAPI

from hubtools import COLUMNS, World, done, mean_output
from medfed.common.resources import DatasetRegister, Role
from medfed.common.security import verify_password
from medfed.hub.db.migrate import alembic_config, upgrade
from medfed.hub.db.models import Base, Organization, Run, Task
from medfed.hub.db.session import make_engine
from medfed.hub.dispatch import commit
from medfed.hub.services import accounts, datasets, nodes, projects, runs


def expire(app: FastAPI) -> int:
    """One pass of lease expiry, as the sweeper does it (its own session, committed)."""
    with app.state.sessionmaker() as session:
        expired = runs.expire_leases(session, settings=app.state.settings)
        commit(session, app.state.notifier)
        return expired


def run_row(app: FastAPI, run_id: int) -> Run:
    with app.state.sessionmaker() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


# ------------------------------------------------------------------- accounts & catalogue


def test_accounts_projects_members_nodes_datasets_lifecycle_through_services(
    hub_app: FastAPI,
) -> None:
    with hub_app.state.sessionmaker() as session:
        org = accounts.create_organization(session, actor=None, name="Clinic")
        admin = accounts.create_user(
            session,
            actor=None,
            username="root",
            password="root-password",
            organization_id=org.id,
            roles=[Role.admin],
            is_superuser=True,
        )
        alice = accounts.create_user(
            session,
            actor=admin,
            username="alice",
            password="alice-password",
            organization_id=org.id,
            roles=[Role.researcher, Role.dac, Role.researcher],
            email="alice@example.org",
        )
        bob = accounts.create_user(
            session,
            actor=admin,
            username="bob",
            password="bob-password",
            organization_id=org.id,
            roles=[Role.researcher],
        )
        project = projects.create_project(
            session, actor=alice, name="Study", description="a study", organization_id=None
        )
        projects.add_member(session, actor=alice, project_id=project.id, user_id=bob.id)
        projects.add_member(session, actor=alice, project_id=project.id, user_id=bob.id)
        node, secret = nodes.create_node(
            session, actor=admin, name="site-1", organization_id=org.id
        )
        columns = [{"name": "age", "type": "integer"}]
        register = DatasetRegister.model_validate({"name": "t", "columns": columns})
        datasets.register(session, node=node, data=register)
        session.commit()
        ids = {"org": org.id, "alice": alice.id, "bob": bob.id, "project": project.id}
        node_id = node.id

    with hub_app.state.sessionmaker() as session:  # a fresh session reads what was stored
        assert [o.name for o in accounts.list_organizations(session)] == ["Clinic"]
        alice = accounts.get_user(session, ids["alice"])
        assert alice.roles == ["dac", "researcher"]
        assert alice.email == "alice@example.org"
        assert alice.is_superuser is False
        assert alice.password_hash != "alice-password"
        assert verify_password(alice.password_hash, "alice-password")
        project = projects.get_project(session, project_id=ids["project"], user=alice)
        assert project.organization_id == ids["org"]
        assert projects.member_ids(session, project.id) == sorted([ids["alice"], ids["bob"]])
        assert [p.name for p in projects.list_projects(session, actor=alice)] == ["Study"]
        stored = nodes.get_node(session, node_id)
        assert stored.secret_hash != secret
        assert stored.organization_id == ids["org"]
        (dataset,) = datasets.list_datasets(session, node_id=node_id)
        assert dataset.columns == columns
        assert datasets.resolve(session, ["site-1/t"]) == [dataset]
        assert datasets.resolve(session, [dataset.id, "t"]) == [dataset]


def test_unique_names_conflict_with_409_and_store_nothing(world: World) -> None:
    api, admin = world.api, world.admin.headers
    before = {t: world.count(t) for t in ("organizations", "users", "nodes", "projects")}
    cases = [
        ("/api/organizations", {"name": "Org B"}, world.admin, "Org B"),
        (
            "/api/users",
            {"username": "rita", "password": "whatever-1", "organization_id": world.org_b},
            world.admin,
            "rita",
        ),
        ("/api/nodes", {"name": "node-a", "organization_id": world.org_b}, world.admin, "node-a"),
        ("/api/projects", {"name": "Project P"}, world.researcher, "Project P"),
    ]
    for path, body, person, name in cases:
        response = api.post(path, json=body, headers=person.headers)
        assert response.status_code == 409, (path, response.text)
        assert name in response.json()["detail"]
    assert {t: world.count(t) for t in before} == before
    assert api.get("/api/organizations", headers=admin).status_code == 200


def test_the_database_itself_refuses_a_duplicate_organization_name(hub_app: FastAPI) -> None:
    with hub_app.state.sessionmaker() as session:
        session.add(Organization(name="Twin"))
        session.commit()
        session.add(Organization(name="Twin"))
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()
        session.rollback()
        assert session.scalar(sa.select(sa.func.count()).select_from(Organization)) == 1


def test_dataset_reregistration_of_a_released_dataset_adds_a_version(world: World) -> None:
    api, node = world.api, world.node_a
    before = world.api.get(f"/api/datasets/{node.dataset_id}", headers=world.admin.headers).json()
    columns = [*COLUMNS, {"name": "alive", "type": "boolean"}]
    body = {"name": "cohort", "description": "re-described", "columns": columns, "row_count": 120}
    response = api.post("/api/node/datasets", json=body, headers=node.headers)
    assert response.status_code == 200, response.text
    added = response.json()
    assert added["id"] != node.dataset_id
    assert (added["version"], added["state"], added["previous_id"]) == (2, "draft", node.dataset_id)
    assert world.count("datasets") == 3
    # the same content again is a no-op
    again = api.post("/api/node/datasets", json=body, headers=node.headers)
    assert again.json()["id"] == added["id"] and world.count("datasets") == 3
    listed = api.get("/api/datasets", params={"node_id": node.id}, headers=world.admin.headers)
    old, new = listed.json()
    assert old["id"] == node.dataset_id and old["next_id"] == added["id"]
    assert old["description"] == before["description"]  # the released version is frozen
    assert old["columns"] == COLUMNS and old["row_count"] == 100
    assert new["description"] == "re-described"
    assert new["columns"] == columns
    assert new["row_count"] == 120
    assert datetime.fromisoformat(new["updated_at"]) >= datetime.fromisoformat(before["updated_at"])
    # The same name on the other node is that node's own dataset, untouched.
    other = api.get(f"/api/datasets/{world.node_b.dataset_id}", headers=world.admin.headers)
    assert other.json()["description"] == "at node-b"


def test_timestamps_come_back_utc_aware(world: World) -> None:
    task = world.create_task()
    headers = world.researcher.headers
    stamps = [
        world.api.get("/api/me", headers=headers).json()["created_at"],
        world.api.get(f"/api/datasets/{world.node_a.dataset_id}", headers=headers).json()[
            "updated_at"
        ],
        world.api.get(f"/api/tasks/{task['id']}", headers=headers).json()["created_at"],
        world.api.get("/api/tokens", headers=headers).json()[0]["expires_at"],
        world.api.get("/api/organizations", headers=headers).json()[0]["created_at"],
    ]
    for stamp in stamps:
        parsed = datetime.fromisoformat(stamp)
        assert parsed.utcoffset() == timedelta(0), stamp


# ------------------------------------------------------------------------ tasks & runs


def test_task_lifecycle_claim_lease_answer_pooled_result(world: World) -> None:
    task = world.create_task()
    assert task["status"] == "running"
    assert [r["status"] for r in task["runs"]] == ["pending", "pending"]
    assert {r["node_id"] for r in task["runs"]} == {world.node_a.id, world.node_b.id}
    assert world.count("runs") == 2

    a = world.claim(world.node_a)
    assert a is not None
    assert (a["task_id"], a["dataset_id"], a["attempt"]) == (task["id"], world.node_a.dataset_id, 1)
    assert a["params"]["columns"] == ["age"]
    assert a["lease_id"]
    assert datetime.fromisoformat(a["lease_expires_at"]) > datetime.fromisoformat(
        task["created_at"]
    )
    assert world.claim(world.node_a) is None  # its only run is leased already
    statuses = {r["node_id"]: r["status"] for r in world.task(task["id"])["runs"]}
    assert statuses == {world.node_a.id: "claimed", world.node_b.id: "pending"}

    b = world.claim(world.node_b)
    assert b is not None and b["lease_id"] != a["lease_id"]

    response = world.post_outcome(world.node_a, a["run_id"], done(a, mean_output(10, 500.0)))
    assert response.status_code == 200 and response.json() == {"status": "done"}
    middle = world.task(task["id"])
    assert middle["status"] == "running" and middle["result"] is None

    response = world.post_outcome(world.node_b, b["run_id"], done(b, mean_output(30, 900.0)))
    assert response.status_code == 200, response.text

    final = world.api.get(
        f"/api/tasks/{task['id']}/wait", params={"timeout": 0}, headers=world.researcher.headers
    ).json()
    assert final["status"] == "completed"
    assert final["error"] is None and final["finished_at"] is not None
    age = final["result"]["columns"]["age"]
    assert age["n"] == 40
    assert age["mean"] == pytest.approx(1400.0 / 40, abs=1e-12)
    assert final["result"]["rows"] == 40
    assert final["result"]["suppressed_nodes"] == 0
    assert (final["contributing_nodes"], final["withheld_nodes"]) == (2, 0)
    for run in final["runs"]:
        # researchers see each node's run status; never its values or whether it withheld
        assert (run["status"], run["output_status"], run["attempts"]) == ("done", None, 1)
        assert "output" not in run
    stored = run_row(world.app, a["run_id"])
    assert stored.output == mean_output(10, 500.0)
    assert stored.lease_id == a["lease_id"]


def test_a_wait_without_progress_answers_only_at_the_end(world: World) -> None:
    task = world.create_task()
    a, b = world.claim(world.node_a), world.claim(world.node_b)
    assert a is not None and b is not None
    assert world.post_outcome(world.node_a, a["run_id"], done(a, mean_output(10, 500.0))).is_success

    def wait(timeout: float, **params: Any) -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        answer = world.api.get(
            f"/api/tasks/{task['id']}/wait",
            params={"timeout": timeout, "seen_runs_done": 0, **params},
            headers=world.researcher.headers,
        )
        assert answer.status_code == 200, answer.text
        return answer.json(), time.monotonic() - started

    told, took = wait(30)  # progress (1 run done, 0 seen) answers at once
    assert told["status"] == "running" and took < 30
    quiet, took = wait(1.0, progress="false")  # the same progress: no answer before timeout
    assert quiet["status"] == "running" and took >= 1.0
    assert [r["status"] for r in quiet["runs"]].count("done") == 1
    assert world.post_outcome(world.node_b, b["run_id"], done(b, mean_output(30, 900.0))).is_success
    final, _ = wait(30, progress="false")
    assert final["status"] == "completed"


def test_repeated_identical_outcome_is_a_noop_and_another_lease_conflicts(world: World) -> None:
    task = world.create_task(datasets=["node-a/cohort"])
    a = world.claim(world.node_a)
    assert a is not None
    answer = done(a, mean_output(10, 500.0))
    first = world.post_outcome(world.node_a, a["run_id"], answer)
    assert first.status_code == 200, first.text
    result = world.task(task["id"])
    assert result["status"] == "completed"

    again = world.post_outcome(world.node_a, a["run_id"], answer)
    assert again.status_code == 200 and again.json() == {"status": "done"}
    changed = {**answer, "output": mean_output(10, 9999.0)}
    assert world.post_outcome(world.node_a, a["run_id"], changed).status_code == 200
    assert world.task(task["id"])["result"] == result["result"]  # accepted once
    assert run_row(world.app, a["run_id"]).output == mean_output(10, 500.0)

    stale = {**answer, "lease_id": "0" * 32}
    response = world.post_outcome(world.node_a, a["run_id"], stale)
    assert response.status_code == 409
    assert str(a["run_id"]) in response.json()["detail"]


def test_outcome_with_another_lease_on_a_claimed_run_conflicts(world: World) -> None:
    world.create_task(datasets=["node-a/cohort"])
    a = world.claim(world.node_a)
    assert a is not None
    response = world.post_outcome(
        world.node_a, a["run_id"], {**done(a, mean_output(5, 1.0)), "lease_id": "f" * 32}
    )
    assert response.status_code == 409
    assert "stale lease" in response.json()["detail"]
    assert run_row(world.app, a["run_id"]).status == "claimed"


@pytest.mark.hub(lease_seconds=0.2, max_attempts=3)
def test_lease_expiry_returns_the_run_to_pending(world: World) -> None:
    task = world.create_task(datasets=["node-a/cohort"])
    first = world.claim(world.node_a)
    assert first is not None
    assert expire(world.app) == 0  # the lease is still alive
    time.sleep(0.3)
    assert expire(world.app) == 1

    run = run_row(world.app, first["run_id"])
    assert (run.status, run.attempts, run.lease_id, run.lease_expires_at) == (
        "pending",
        1,
        None,
        None,
    )
    assert world.task(task["id"])["status"] == "running"

    second = world.claim(world.node_a)
    assert second is not None
    assert second["run_id"] == first["run_id"]
    assert second["attempt"] == 2
    assert second["lease_id"] != first["lease_id"]
    late = world.post_outcome(world.node_a, first["run_id"], done(first, mean_output(5, 5.0)))
    assert late.status_code == 409  # the first holder lost its lease
    ok = world.post_outcome(world.node_a, second["run_id"], done(second, mean_output(5, 5.0)))
    assert ok.status_code == 200
    assert world.task(task["id"])["status"] == "completed"


@pytest.mark.hub(lease_seconds=0.2, max_attempts=2)
def test_lease_expiry_after_max_attempts_fails_the_run_and_the_task(world: World) -> None:
    task = world.create_task(datasets=["node-a/cohort"])
    for attempt in (1, 2):
        claimed = world.claim(world.node_a)
        assert claimed is not None and claimed["attempt"] == attempt
        time.sleep(0.3)
        assert expire(world.app) == 1
    assert world.claim(world.node_a) is None

    final = world.task(task["id"])
    (run,) = final["runs"]
    assert (run["status"], run["attempts"]) == ("failed", 2)
    assert "lease expired 2 times" in run["error"]
    assert "max attempts is 2" in run["error"]
    assert final["status"] == "failed"
    assert final["result"] is None
    assert f"run {run['run_id']} failed" in final["error"]
    assert "lease expired" in final["error"]


@pytest.mark.hub(lease_seconds=0.1, sweep_seconds=0.05, max_attempts=1)
def test_the_sweeper_expires_leases_by_itself(world: World) -> None:
    task = world.create_task(datasets=["node-a/cohort"])
    assert world.claim(world.node_a) is not None
    final = world.api.get(
        f"/api/tasks/{task['id']}/wait", params={"timeout": 10}, headers=world.researcher.headers
    ).json()
    deadline = time.monotonic() + 10
    while final["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        final = world.task(task["id"])
    assert final["status"] == "failed"
    assert "lease expired 1 times" in final["runs"][0]["error"]


def test_heartbeat_extends_own_leases_and_reports_others_lost(world: World) -> None:
    world.create_task()
    a = world.claim(world.node_a)
    b = world.claim(world.node_b)
    assert a is not None and b is not None
    before = run_row(world.app, a["run_id"]).lease_expires_at
    assert before is not None
    time.sleep(0.01)
    response = world.api.post(
        "/api/node/heartbeat",
        json={"run_ids": [a["run_id"], b["run_id"], 9999]},
        headers=world.node_a.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "node_id": world.node_a.id,
        "extended": [a["run_id"]],
        "lost": [b["run_id"], 9999],
    }
    after = run_row(world.app, a["run_id"]).lease_expires_at
    assert after is not None and after > before
    assert run_row(world.app, b["run_id"]).lease_id == b["lease_id"]  # untouched


@pytest.mark.hub(min_nodes=2)
@pytest.mark.parametrize(
    ("status", "output_status", "error"),
    [
        ("refused", None, "policy: project 1 is not entitled to this dataset"),
        ("failed", None, "executor crashed: out of memory"),
        ("done", "suppressed", None),
    ],
)
def test_fewer_answering_nodes_than_min_nodes_fails_the_task_naming_the_rule(
    world: World, status: str, output_status: str | None, error: str | None
) -> None:
    task = world.create_task()
    a = world.claim(world.node_a)
    b = world.claim(world.node_b)
    assert a is not None and b is not None
    answer_a = world.post_outcome(world.node_a, a["run_id"], done(a, mean_output(10, 5.0)))
    assert answer_a.status_code == 200
    body: dict[str, Any] = {"lease_id": b["lease_id"], "status": status, "error": error}
    if output_status is not None:
        body["output_status"] = output_status
    response = world.post_outcome(world.node_b, b["run_id"], body)
    assert response.status_code == 200, response.text

    final = world.task(task["id"])
    assert final["status"] == "failed"
    assert final["result"] is None
    if status == "refused":  # a refusal fails the task by itself, naming node and rule
        assert f"{world.node_b.name} refused: {error}" in final["error"]
    else:
        assert "only 1 node(s) gave an unsuppressed answer" in final["error"]
        assert "needs at least 2" in final["error"]
    if error is not None:
        assert error in final["error"]
    runs = {r["node_id"]: r for r in final["runs"]}
    assert runs[world.node_b.id]["status"] == status
    assert runs[world.node_b.id]["error"] == error


def test_enough_answering_nodes_complete_with_min_nodes(world: World) -> None:
    """The default world hub needs one node: one answer out of two still completes."""
    task = world.create_task()
    a = world.claim(world.node_a)
    b = world.claim(world.node_b)
    assert a is not None and b is not None
    world.post_outcome(world.node_a, a["run_id"], done(a, mean_output(10, 50.0)))
    body = {"lease_id": b["lease_id"], "status": "done", "output_status": "suppressed"}
    assert world.post_outcome(world.node_b, b["run_id"], body).status_code == 200
    final = world.task(task["id"])
    assert final["status"] == "completed"
    assert final["result"]["columns"]["age"] == {"n": 10, "mean": 5.0}
    assert final["result"]["suppressed_nodes"] == 1


def test_an_output_the_algorithm_cannot_read_fails_the_task_with_the_reason(world: World) -> None:
    task = world.create_task(datasets=["node-a/cohort"])
    a = world.claim(world.node_a)
    assert a is not None
    response = world.post_outcome(world.node_a, a["run_id"], done(a, {"unexpected": 1}))
    assert response.status_code == 200  # the answer is stored; aggregating it fails
    final = world.task(task["id"])
    assert final["status"] == "failed"
    assert final["error"].startswith("aggregation failed: KeyError")
    assert final["result"] is None


def test_task_and_run_rows_are_stored_as_the_api_says(world: World) -> None:
    task = world.create_task(params={"columns": ["age", "size"], "where": None})
    with world.app.state.sessionmaker() as session:
        stored = session.get(Task, task["id"])
        assert stored is not None
        assert (stored.algorithm, stored.status, stored.round) == ("mean", "running", 0)
        assert stored.params["columns"] == ["age", "size"]
        assert stored.dataset_ids == [world.node_a.dataset_id, world.node_b.dataset_id]
        assert stored.created_by == world.researcher.id
        rows = session.scalars(sa.select(Run).where(Run.task_id == task["id"])).all()
        assert sorted((r.node_id, r.status, r.attempts) for r in rows) == [
            (world.node_a.id, "pending", 0),
            (world.node_b.id, "pending", 0),
        ]


# -------------------------------------------------------------------------- migrations


def test_migrations_produce_exactly_the_models_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        upgrade(engine)  # idempotent: a second start changes nothing
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, Base.metadata) == []
            head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
            assert context.get_current_revision() == head
            tables = set(sa.inspect(conn).get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()


def test_a_refusing_node_fails_the_task_even_when_enough_others_answered(world: World) -> None:
    task = world.create_task()
    a = world.claim(world.node_a)
    b = world.claim(world.node_b)
    assert a is not None and b is not None
    assert (
        world.post_outcome(world.node_a, a["run_id"], done(a, mean_output(10, 5.0))).status_code
        == 200
    )
    refusal = {"lease_id": b["lease_id"], "status": "refused", "error": "gate: min_rows: 4 < 10"}
    assert world.post_outcome(world.node_b, b["run_id"], refusal).status_code == 200
    final = world.task(task["id"])
    assert final["status"] == "failed" and final["result"] is None
    assert final["error"] == f"{world.node_b.name} refused: gate: min_rows: 4 < 10"
