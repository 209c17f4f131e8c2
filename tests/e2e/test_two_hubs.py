"""Two hub processes with separate data folders on one PostgreSQL database act as one hub.

Hub A and hub B share one fresh PostgreSQL database (and one secret key, as one deployment
would) and nothing else: no folder. A real node process ("alpha") long-polls through hub
B; the researcher talks to hub A only. Both hubs re-check the database only every 600 s
and hold a long poll up to 120 s, so anything finishing within seconds was carried by the
LISTEN/NOTIFY wake-up channel:

- ``noop`` tasks submitted through A complete (A's commit wakes B's waiting node poll; B's
  commit of the outcome wakes A's waiting researcher), and a bare poller through B with a
  second node's credentials times how soon A's commit answers its poll (printed, never
  asserted against a figure);
- a federated-learning training completes: the researcher uploads the initial weights
  through A, the node fetches them and uploads its updates through B, the hub writes the
  global weights where the last update lands, and the researcher downloads the model
  through A — every blob went through the database (neither hub has a ``blobs`` folder);
- the listener's connection is cut (``pg_outage``) and it reconnects and delivers again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from medfed.algorithms.learning.examples import TABULAR_LOGREG, breast_cancer_shares
from medfed.common.errors import Unauthorized
from medfed.common.resources import DatasetRegister, RunAssignment
from medfed.common.schemas import ColumnSchema
from medfed.hub.dispatch import CHANNEL, Notifier
from medfed.hub.wakeups import WakeListener
from medfed.node.hubclient import NodeHubClient
from medfed.sdk.client import Client
from medfed.testing.faults import pg_database, pg_outage
from medfed.testing.federation import Federation
from medfed.testing.plans import approve_training
from medfed.testing.processes import HubProcess, NodeProcess

URL = os.environ.get("MEDFED_TEST_DATABASE_URL")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.skipif(URL is None, reason="needs MEDFED_TEST_DATABASE_URL"),
]

#: far above what a wake-up takes (milliseconds), far below the 120 s long poll
WAKE_BOUND_S = 10.0
CANCER = [*(f"f{i}" for i in range(30)), "label"]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    assert URL is not None
    with pg_database(URL, "medfed_twohubs_") as url:
        yield url


@dataclass
class TwoHubs:
    fed: Federation  # hub A, the researcher and the admin
    hub_b: HubProcess
    node: NodeProcess  # alpha, polling through hub B
    beta: NodeHubClient  # a second node's credentials at hub B, without a process
    root: Path


@pytest.fixture(scope="module")
def two_hubs(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[TwoHubs]:
    root = tmp_path_factory.mktemp("twohubs")
    env = {
        "MEDFED_RECHECK_SECONDS": "600",
        "MEDFED_LONG_POLL_SECONDS": "120",
        "MEDFED_MIN_NODES": "1",  # one node answers the whole task
        "MEDFED_SECRET_KEY": secrets.token_hex(32),
        # far above the test's bound: a refusal within it came from the NOTIFY
        "MEDFED_PRINCIPAL_CACHE_SECONDS": "300",
    }
    with Federation(root / "a", {}, database_url=pg_url, hub_env=env) as fed:
        hub_b = HubProcess(root / "b", database_url=pg_url, env=env)
        hub_b.start()
        try:
            org = fed.admin.organizations.create("Alpha hospital")
            created = fed.admin.nodes.create("alpha", organization_id=org.id)
            folder = root / "alpha"
            (folder / "data").mkdir(parents=True)
            nums, cancer = folder / "data" / "nums.csv", folder / "data" / "cancer.csv"
            pd.DataFrame({"x": range(50)}).to_csv(nums, index=False)
            breast_cancer_shares(1, seed=0)[0][0].to_csv(cancer, index=False)
            node = NodeProcess(
                "alpha",
                folder,
                hub_b.url,  # the node talks to hub B only
                created.secret,
                {"nums": nums, "cancer": cancer},
                extra_config="poll_wait_seconds = 120",
                extra_policy="sole_release = true",  # one-node tasks answer
            )
            fed.nodes["alpha"] = node  # stopped with the federation
            node.start()
            org = fed.admin.organizations.create("Beta hospital")
            beta = NodeHubClient(
                hub_b.url, fed.admin.nodes.create("beta", organization_id=org.id).secret
            )
            beta.register_dataset(
                DatasetRegister(
                    name="beta_nums", columns=[ColumnSchema(name="x", type="integer")], row_count=50
                )
            )
            _wait_until(lambda: len(fed.admin.datasets.list()) == 3, 120)
            for dataset in fed.admin.datasets.list():
                fed.admin.catalogue.release(dataset.id)
            fed.grant_all_access()
            yield TwoHubs(fed=fed, hub_b=hub_b, node=node, beta=beta, root=root)
            beta.close()
        finally:
            hub_b.stop()


def test_a_run_created_through_one_hub_wakes_a_node_polling_through_the_other(
    two_hubs: TwoHubs,
) -> None:
    client = two_hubs.fed.researcher  # talks to hub A only
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


def test_a_bare_poll_at_hub_b_is_answered_when_hub_a_commits_a_run(two_hubs: TwoHubs) -> None:
    """Hub A's commit → the answer to a node poll waiting at hub B, timed from the client."""
    poller = two_hubs.beta
    assert poller.next_run(wait=0) is None
    after_sent, after_answered = [], []
    for _ in range(5):
        answered: list[tuple[float, RunAssignment | None]] = []
        waiting = threading.Thread(target=_poll, args=(poller, answered))
        waiting.start()
        time.sleep(1.0)  # the poll is waiting at hub B (nothing is pending)
        sent = time.perf_counter()
        two_hubs.fed.researcher.tasks.submit("noop", datasets=["beta_nums"])
        returned = time.perf_counter()
        waiting.join(180)
        assert not waiting.is_alive()
        ((woke, run),) = answered
        assert run is not None and run.algorithm == "noop"
        after_sent.append(woke - sent)
        after_answered.append(woke - returned)
    print(
        "hub A submit → node poll at hub B answered (ms): "
        f"from the request sent {[round(t * 1000, 1) for t in after_sent]}, "
        f"from A's answer {[round(t * 1000, 1) for t in after_answered]} "
        f"(median {statistics.median(after_answered) * 1000:.1f})"
    )
    assert max(after_sent) < WAKE_BOUND_S


def test_a_token_revoked_through_one_hub_is_refused_by_the_other_at_once(
    two_hubs: TwoHubs,
) -> None:
    """Hub B keeps the token's principal (cache of 300 s); hub A's revocation ends it."""
    made = two_hubs.fed.researcher.tokens.create("revoked-elsewhere")
    at_b = Client(two_hubs.hub_b.url, made.token)
    try:
        assert at_b.users.me().username == "researcher"
        assert at_b.users.me().username == "researcher"  # kept at hub B now
        two_hubs.fed.researcher.tokens.revoke(made.id)  # through hub A
        started = time.monotonic()
        while True:
            try:
                at_b.users.me()
            except Unauthorized as refused:
                assert "token revoked" in str(refused)
                break
            assert time.monotonic() - started < WAKE_BOUND_S
            time.sleep(0.005)
        print(f"revoked at A → refused at B after {(time.monotonic() - started) * 1000:.0f} ms")
    finally:
        at_b.close()


def test_a_training_whose_node_and_researcher_use_different_hubs_completes(
    two_hubs: TwoHubs, tmp_path: Path
) -> None:
    from medfed.sdk.learning import initial_weights

    learning = two_hubs.fed.researcher.learning  # hub A
    pooled = pd.read_csv(two_hubs.node.folder / "data" / "cancer.csv")
    features = CANCER[:-1]
    plan_args = {
        "features": 30,
        "mean": pooled[features].mean().tolist(),
        "scale": pooled[features].std(ddof=0).tolist(),
    }
    params = {
        "columns": CANCER,
        "plan_args": plan_args,
        "rounds": 2,
        "local_epochs": 1,
        "batch_size": 16,
        "lr": 0.2,
        "seed": 0,
        "device": "cpu",
        "name": "two-hubs",
    }
    weights = learning.upload_weights(initial_weights(TABULAR_LOGREG, plan_args))
    approve_training(
        [two_hubs.node.folder / "state"],
        TABULAR_LOGREG,
        dataset="cancer",
        params={**params, "initial_weights": weights},
        name="logreg",
    )
    task = learning.start(TABULAR_LOGREG, datasets=["cancer"], weights=weights, **params)
    final = two_hubs.fed.researcher.tasks.wait(task.id, timeout=600, progress=False)
    assert final.status.value == "completed", final.error
    result = learning.result(final)
    assert result.rounds == 2 and [r.updates for r in result.history] == [1, 1]

    (model,) = [m for m in learning.models() if m.task_id == task.id]
    through_a = learning.download(model.id, tmp_path / "a.safetensors").read_bytes()
    at_b = Client.login(two_hubs.hub_b.url, "researcher", two_hubs.fed.researcher_password)
    through_b = at_b.learning.download(model.id, tmp_path / "b.safetensors").read_bytes()
    assert through_a == through_b and hashlib.sha256(through_a).hexdigest() == model.blob_sha256
    assert model.blob_sha256 != weights  # two rounds moved the weights
    # every blob (initial, updates, global weights) lives in PostgreSQL, none on a disk
    assert not (two_hubs.root / "a" / "hub" / "blobs").exists()
    assert not (two_hubs.root / "b" / "blobs").exists()


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


def _poll(poller: NodeHubClient, answered: list[tuple[float, RunAssignment | None]]) -> None:
    run = poller.next_run(wait=120)
    answered.append((time.perf_counter(), run))


def _wait_until(condition: object, timeout: float = 60.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)
