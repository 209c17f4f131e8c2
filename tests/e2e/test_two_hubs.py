"""Two hub processes on one PostgreSQL database wake each other through LISTEN/NOTIFY.

Hub A and hub B have separate data folders and share one fresh PostgreSQL database (and
one secret key, as one deployment would). A real node process long-polls through hub B,
the researcher submits and follows ``noop`` tasks through hub A. Both hubs re-check the
database only every 600 s and hold a long poll up to 120 s, so a task finishing within
seconds was carried by the wake-up channel both ways: A's commit → B's waiting node poll,
B's commit of the outcome → A's waiting researcher. A second test cuts the listener's
connection (``pg_outage``) and checks that it reconnects and delivers again.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from medfed.hub.dispatch import CHANNEL, Notifier
from medfed.hub.wakeups import WakeListener
from medfed.testing.faults import pg_database, pg_outage
from medfed.testing.federation import Federation
from medfed.testing.processes import HubProcess, NodeProcess

URL = os.environ.get("MEDFED_TEST_DATABASE_URL")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.skipif(URL is None, reason="needs MEDFED_TEST_DATABASE_URL"),
]

#: far above what a wake-up takes (milliseconds), far below the 120 s long poll
WAKE_BOUND_S = 10.0


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    assert URL is not None
    with pg_database(URL, "medfed_twohubs_") as url:
        yield url


def test_a_run_created_through_one_hub_wakes_a_node_polling_through_the_other(
    tmp_path: Path, pg_url: str
) -> None:
    env = {
        "MEDFED_RECHECK_SECONDS": "600",
        "MEDFED_LONG_POLL_SECONDS": "120",
        "MEDFED_MIN_NODES": "1",  # one node answers the whole task
        "MEDFED_SECRET_KEY": secrets.token_hex(32),
    }
    with Federation(tmp_path / "a", {}, database_url=pg_url, hub_env=env) as fed:
        hub_b = HubProcess(tmp_path / "b", database_url=pg_url, env=env)
        hub_b.start()
        try:
            org = fed.admin.organizations.create("Alpha hospital")
            created = fed.admin.nodes.create("alpha", organization_id=org.id)
            folder = tmp_path / "alpha"
            (folder / "data").mkdir(parents=True)
            csv = folder / "data" / "nums.csv"
            pd.DataFrame({"x": range(50)}).to_csv(csv, index=False)
            node = NodeProcess(
                "alpha",
                folder,
                hub_b.url,  # the node talks to hub B only
                created.secret,
                {"nums": csv},
                extra_config="poll_wait_seconds = 120",
                extra_policy="sole_release = true",  # one-node tasks answer
            )
            fed.nodes["alpha"] = node  # stopped with the federation
            node.start()
            deadline = time.monotonic() + 120
            while not fed.admin.datasets.list():
                assert time.monotonic() < deadline, "the node did not register through hub B"
                time.sleep(0.2)
            for dataset in fed.admin.datasets.list():
                fed.admin.catalogue.release(dataset.id)
            fed.grant_all_access()
            client = fed.researcher  # talks to hub A only
            client.tasks.run("noop", datasets=["nums"], progress=False)  # warm-up
            took = []
            for _ in range(3):
                time.sleep(0.5)  # the node is back in its 120 s poll at hub B
                started = time.monotonic()
                task = client.tasks.submit("noop", datasets=["nums"])
                done = client.tasks.wait(task.id, timeout=180, progress=False)
                took.append(time.monotonic() - started)
                assert done.status == "completed", done
            print(f"two hubs, submit→completed: {[f'{t * 1000:.0f} ms' for t in took]}")
            assert max(took) < WAKE_BOUND_S
        finally:
            hub_b.stop()


def test_the_listener_reconnects_after_an_outage_and_wakes_again(pg_url: str) -> None:
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def scenario() -> None:
        notifier = Notifier()
        listener = WakeListener(conninfo=conninfo, notifier=notifier, max_backoff=1.0)
        listener.start()
        try:
            assert await asyncio.to_thread(listener.listening.wait, 60)
            with pg_outage(pg_url):
                await asyncio.to_thread(_wait_until, lambda: not listener.listening.is_set())
            assert await asyncio.to_thread(listener.listening.wait, 60)
            assert listener.connections >= 2
            subscription = notifier.subscribe("node:42")
            try:
                with engine.connect() as conn:
                    conn.execute(
                        sa.text("SELECT pg_notify(:c, :p)"),
                        {"c": CHANNEL, "p": "another-hub|task:1 node:42"},
                    )
                assert await subscription.wait(60)
            finally:
                subscription.close()
        finally:
            await asyncio.to_thread(listener.stop)

    asyncio.run(scenario())
    engine.dispose()


def _wait_until(condition: object, timeout: float = 60.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)
