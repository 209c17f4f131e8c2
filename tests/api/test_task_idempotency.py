"""``Idempotency-Key`` on ``POST /api/tasks``: a resent submission never makes a second task.

Against the real hub app on SQLite and, where ``MEDFED_TEST_DATABASE_URL`` names a server,
PostgreSQL: the same key and body twice give one task (201, then 200 with
``Idempotent-Replayed``); the same key with another body is refused (422) and changes
nothing; keys are per user; a first submission does not look its key up (the constraint
refuses a second task), and a resend is answered with its task whatever the checks would
say now (a budget its first try used up); identical requests at once make one task — on
PostgreSQL the loser of the race is seen waiting on the winner's uncommitted transaction
(``pg_stat_activity``), so its insert then violates the unique constraint and the
``IntegrityError`` path runs every time. The SDK sends a key with
every submission and rides out a real database outage with it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from hubdatabases import PG_ENV
from hubtools import World, make_person, statements
from medfed.common.resources import TaskCreate
from medfed.ledger.entries import content_hash
from medfed.sdk.client import Client
from medfed.testing.faults import pg_outage, sqlite_outage

pytestmark = pytest.mark.hub(sqlite_busy_seconds=0.2)

BODY_PARAMS = {"columns": ["age"]}


def _body(world: World, **params: Any) -> dict[str, Any]:
    return {
        "project_id": world.project_id,
        "algorithm": "mean",
        "datasets": ["cohort"],
        "params": params or BODY_PARAMS,
    }


def _post(world: World, body: dict[str, Any], key: str | None, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return world.api.post("/api/tasks", json=body, headers=headers)


def _keyed(world: World, key: str) -> list[tuple[int, int]]:
    """(task id, creator) of every task stored with ``key``."""
    with world.app.state.sessionmaker() as session:
        rows = session.execute(
            sa.text("SELECT id, created_by FROM tasks WHERE idempotency_key = :k ORDER BY id"),
            {"k": key},
        )
        return [(int(a), int(b)) for a, b in rows]


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not reached in time: {what}")


def test_the_same_key_and_body_twice_return_the_first_task(world: World) -> None:
    key = str(uuid.uuid4())
    before = world.count("tasks")
    first = _post(world, _body(world), key, world.researcher.token)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = _post(world, _body(world), key, world.researcher.token)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["runs"] == first.json()["runs"]
    assert world.count("tasks") == before + 1
    assert world.count("runs") == 2  # one per dataset, once
    # the ledger recorded one creation
    with world.app.state.sessionmaker() as session:
        bodies = session.scalars(sa.text("SELECT body FROM ledger_entries")).all()
    assert sum('"task.create"' in body for body in bodies) == 1
    # without a key, the same body is a new task every time (as before)
    plain = [_post(world, _body(world), None, world.researcher.token) for _ in range(2)]
    assert [r.status_code for r in plain] == [201, 201]
    assert len({r.json()["id"] for r in plain} | {first.json()["id"]}) == 3


def _key_lookups(seen: list[str]) -> list[str]:
    return [s for s in seen if s.lstrip().startswith("SELECT") and "idempotency_key = " in s]


def test_a_new_key_is_not_looked_up_before_its_task_is_made(world: World) -> None:
    """The unique (user, key) constraint refuses a second task: a first submission reads
    no key; its repeat reads it once (after its insert was refused)."""
    key = str(uuid.uuid4())
    with statements(world) as seen:
        first = _post(world, _body(world), key, world.researcher.token)
    assert first.status_code == 201, first.text
    assert _key_lookups(seen) == []
    with statements(world) as seen:
        again = _post(world, _body(world), key, world.researcher.token)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert len(_key_lookups(seen)) == 1


def test_a_repeat_is_answered_whatever_the_checks_would_say_now(world: World) -> None:
    """A resend whose first try used up the project's query budget is answered with the
    task that try made (200), not refused (429); a new submission is refused."""
    key = str(uuid.uuid4())
    first = _post(world, _body(world), key, world.researcher.token)
    assert first.status_code == 201, first.text
    used = world.count("tasks")
    with world.app.state.sessionmaker() as session:  # the budget: exactly what is used
        session.execute(
            sa.text("UPDATE projects SET query_budget = :n, query_window_hours = 24 WHERE id = :p"),
            {"n": used, "p": world.project_id},
        )
        session.commit()
    again = _post(world, _body(world), key, world.researcher.token)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    refused = _post(world, _body(world), str(uuid.uuid4()), world.researcher.token)
    assert refused.status_code == 429, refused.text
    assert world.count("tasks") == used
    with world.app.state.sessionmaker() as session:
        bodies = session.scalars(sa.text("SELECT body FROM ledger_entries")).all()
    assert sum('"task.create"' in body for body in bodies) == 1


def test_the_same_key_with_another_body_is_refused_and_changes_nothing(world: World) -> None:
    key = "analysis-2024-07-01/age"
    first = _post(world, _body(world), key, world.researcher.token)
    assert first.status_code == 201
    before = world.count("tasks")
    other = _post(world, _body(world, columns=["size"]), key, world.researcher.token)
    assert other.status_code == 422
    detail = other.json()["detail"]
    assert f"Idempotency-Key '{key}' was already used for task {first.json()['id']}" in detail
    assert "different request body" in detail
    assert world.count("tasks") == before
    # a body that differs only in formatting is the same request
    same = world.api.post(
        "/api/tasks",
        content=(
            f'{{ "params": {{"columns": ["age"]}}, "datasets": ["cohort"], '
            f'"algorithm": "mean", "project_id": {world.project_id} }}'
        ),
        headers={
            **world.researcher.headers,
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        },
    )
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("x" * 256, "at most 255 characters"),
        ("", "1 to 255 printable ASCII characters"),
        ("tab\there", "1 to 255 printable ASCII characters"),
    ],
)
def test_a_malformed_key_is_refused_with_a_clear_error(
    world: World, key: str, message: str
) -> None:
    before = world.count("tasks")
    response = _post(world, _body(world), key, world.researcher.token)
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert "Idempotency-Key" in response.json()["detail"]
    assert world.count("tasks") == before


def test_keys_are_scoped_per_user(world: World) -> None:
    colleague = make_person(world.api, world.admin.headers, "rosa", world.org_a, ["researcher"])
    added = world.api.post(
        f"/api/projects/{world.project_id}/members",
        json={"user_id": colleague.id},
        headers=world.researcher.headers,
    )
    assert added.status_code in (200, 201), added.text
    key = "shared-key-1"
    mine = _post(world, _body(world), key, world.researcher.token)
    theirs = _post(world, _body(world), key, colleague.token)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert sorted(creator for _, creator in _keyed(world, key)) == sorted(
        [world.researcher.id, colleague.id]
    )
    # each user's repeat finds their own task
    assert _post(world, _body(world), key, colleague.token).json()["id"] == theirs.json()["id"]


def test_identical_requests_at_once_make_one_task(world: World) -> None:
    key = str(uuid.uuid4())
    start = threading.Barrier(6)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def submit() -> None:
        start.wait()
        response = _post(world, _body(world), key, world.researcher.token)
        for _ in range(50):  # SQLite busy past its timeout answers 503: resend, as the SDK does
            if response.status_code != 503:
                break
            time.sleep(0.2)
            response = _post(world, _body(world), key, world.researcher.token)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answers) == 6
    assert sorted(r.status_code for r in answers) == [200] * 5 + [201], [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len(_keyed(world, key)) == 1


# PostgreSQL only (SQLite serializes writers with BEGIN IMMEDIATE: a second request's lookup
# already sees the first task); defined only where a server is named, never as a skip
if os.environ.get(PG_ENV):

    @pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
    def test_the_loser_of_an_insert_race_answers_with_the_winner(world: World) -> None:
        """A request whose lookup missed an uncommitted winner answers with the winner."""
        url = world.app.state.settings.database_url
        key = str(uuid.uuid4())
        body = _body(world)
        digest = content_hash(TaskCreate.model_validate(body).model_dump(mode="json"))
        engine = sa.create_engine(make_url(url), poolclass=sa.NullPool)
        answer: list[httpx.Response] = []
        try:
            with engine.connect() as winner:
                # the winner: a task with this key, inserted and not yet committed
                winner_id = winner.execute(
                    sa.text(
                        "INSERT INTO tasks (project_id, created_by, algorithm, algorithm_version, "
                        "params, dataset_ids, status, round, state, created_at, idempotency_key, "
                        "request_sha256) VALUES (:p, :u, 'mean', '1', '{}', '[]', 'running', 0, "
                        "'{}', now(), :k, :h) RETURNING id"
                    ),
                    {"p": world.project_id, "u": world.researcher.id, "k": key, "h": digest},
                ).scalar_one()
                thread = threading.Thread(
                    target=lambda: answer.append(_post(world, body, key, world.researcher.token))
                )
                thread.start()

                # the request looked the key up (nothing committed), then waits on a row our
                # insert locked (the project's, for its budget); once we commit, its own
                # insert violates the unique (user, key) constraint
                def blocked() -> bool:
                    with engine.connect() as watcher:  # a fresh view of pg_stat_activity
                        return bool(
                            watcher.execute(
                                sa.text(
                                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                                    "current_database() AND wait_event_type = 'Lock'"
                                )
                            ).scalar_one()
                        )

                _wait_until(blocked, "the request waiting on the winner's transaction")
                winner.commit()
            thread.join(120)
        finally:
            engine.dispose()
        assert len(answer) == 1
        assert answer[0].status_code == 200, answer[0].text
        assert answer[0].json()["id"] == winner_id
        assert answer[0].headers["Idempotent-Replayed"] == "true"
        assert [task_id for task_id, _ in _keyed(world, key)] == [winner_id]


def test_the_sdk_submits_once_through_a_database_outage(world: World) -> None:
    """A real outage answers 503 to the submission; the SDK retries it with its key."""
    statuses: list[int] = []
    world.api.event_hooks["response"] = [
        lambda r: statuses.append(r.status_code) if r.request.method == "POST" else None
    ]
    client = Client(
        "http://testserver",
        world.researcher.token,
        project=world.project_id,
        http_client=world.api,
        retry_seconds=120,
    )
    url = world.app.state.settings.database_url
    if make_url(url).get_backend_name() == "postgresql":
        outage = pg_outage(url)
    else:
        database = make_url(url).database
        assert database is not None
        outage = sqlite_outage(Path(database))
    before = world.count("tasks")
    result: list[Any] = []
    try:
        with outage:
            thread = threading.Thread(
                target=lambda: result.append(client.tasks.submit("mean", **_params()))
            )
            thread.start()
            _wait_until(lambda: 503 in statuses, "the submission meeting the outage")
        thread.join(120)
    finally:
        world.api.event_hooks["response"] = []
    assert len(result) == 1
    assert statuses.count(503) >= 1 and statuses[-1] == 201
    assert world.count("tasks") == before + 1
    with world.app.state.sessionmaker() as session:
        key = session.scalar(
            sa.text("SELECT idempotency_key FROM tasks WHERE id = :i"), {"i": result[0].id}
        )
    assert key is not None and len(key) == 32  # one key (a UUID) for every try


def _params() -> dict[str, Any]:
    return {"datasets": ["cohort"], "columns": ["age"]}
