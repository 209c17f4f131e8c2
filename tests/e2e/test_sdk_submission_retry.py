"""A researcher's ``tasks.run`` survives a hub restart: one submission, one task, one result.

Real processes: a hub and one hospital node holding a GBSG2 share (hub and node release
single-node results here: ``MEDFED_MIN_NODES=1``, ``sole_release = true``). The SDK sends
every submission with an ``Idempotency-Key`` and retries it while the hub cannot be
reached. An httpx request hook
(the SDK's own HTTP client, nothing replaced) counts the POSTs that left the client, so
the test knows each fault met a submission before it ends the fault:

* the hub is stopped when ``tasks.run`` starts, and started again after the SDK has
  tried at least twice: the run completes with the pooled count, and one task exists;
* the hub is frozen (SIGSTOP) while the submission is on its way: the SDK's read times
  out and it sends again with the same key, so two copies sit at the hub; once it thaws
  it answers both — one task, the same id to the SDK.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from medfed.sdk.client import Client
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, gbsg2: pd.DataFrame) -> Iterator[Any]:
    share = split_gbsg2(gbsg2)["hospital-a"]
    root: Path = tmp_path_factory.mktemp("retry")
    env = {"MEDFED_MIN_NODES": "1"}
    shares: dict[str, dict[str, pd.DataFrame | Path]] = {"hospital-a": {"gbsg2": share}}
    # one hospital: the hub and the node release single-node results here
    with Federation(root, shares, hub_env=env, extra_policy="sole_release = true") as fed:
        yield fed, len(share)


class Posts:
    """Counts the POST /api/tasks requests the SDK's HTTP client sent (or tried to)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/api/tasks":
            with self._lock:
                self.count += 1


def _client(fed: Federation, posts: Posts, timeout: float) -> Client:
    http = httpx.Client(base_url=fed.hub.url, timeout=timeout, event_hooks={"request": [posts]})
    return Client(
        fed.hub.url,
        fed.researcher.token,
        project=fed.project_id,
        http_client=http,
        retry_seconds=180,
    )


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached in time: {what}")


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # the test asserts on it
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_tasks_run_rides_out_a_hub_restart_with_one_task(federation: Any) -> None:
    fed, rows = federation
    before = len(fed.researcher.tasks.list())
    posts = Posts()
    client = _client(fed, posts, timeout=30.0)
    fed.hub.stop()
    try:
        thread, out = _in_thread(
            lambda: client.tasks.run("count", datasets=["gbsg2"], progress=False, timeout=300)
        )
        _wait_until(lambda: posts.count >= 2, "the SDK retrying its submission")
    finally:
        fed.hub.start()
    thread.join(300)
    assert len(out) == 1 and not isinstance(out[0], BaseException), out
    assert out[0].result.n == rows  # the pooled count of the hospital's rows
    tasks = fed.researcher.tasks.list()
    assert len(tasks) == before + 1
    assert tasks[-1].id == out[0].task_id
    client.close()


def test_a_submission_whose_answer_was_lost_is_answered_with_the_same_task(
    federation: Any,
) -> None:
    fed, _ = federation
    before = {t.id for t in fed.researcher.tasks.list()}
    posts = Posts()
    client = _client(fed, posts, timeout=2.0)  # a short read timeout: the answer is "lost"
    assert fed.hub.process is not None
    fed.hub.process.send_signal(signal.SIGSTOP)
    try:
        thread, out = _in_thread(lambda: client.tasks.submit("count", datasets=["gbsg2"]))
        # the first copy timed out unanswered and a second was sent with the same key
        _wait_until(lambda: posts.count >= 2, "the SDK sending the submission again")
    finally:
        fed.hub.process.send_signal(signal.SIGCONT)
    thread.join(300)
    assert len(out) == 1 and not isinstance(out[0], BaseException), out
    after = fed.researcher.tasks.list()
    new = [t for t in after if t.id not in before]
    assert [t.id for t in new] == [out[0].id]  # every copy that reached the hub: one task
    final = fed.researcher.tasks.wait(out[0].id, timeout=120, progress=False)
    assert final.status.value == "completed"
    client.close()
