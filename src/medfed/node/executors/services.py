"""What the node agent gives ``fl.train``'s local step: plans, blobs and the plan process.

:class:`NodeLearning` lives as long as the agent: one HTTP client to the hub (the node's
credentials stay here, in the agent), the plan approvals, one :class:`PlanWorker` and the
secure-aggregation keys kept between a training's phases (``memory``). For each run the
agent asks :meth:`NodeLearning.for_run` for a :class:`RunServices`
(:class:`medfed.algorithms.learning.node_steps.LearningServices`) bound to that run.

Calls to the hub are retried while it cannot be reached (a restarting hub), as the
agent's own client does. Blobs are streamed both ways (``GET /api/node/blobs/{sha}``
to a file while hashing it;
``PUT /api/node/runs/{id}/blob`` with the run's lease), never held whole in a JSON body.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from medfed.common.errors import BadRequest
from medfed.common.resources import RunAssignment
from medfed.node.executors.plan_process import PlanFailed, PlanWorker
from medfed.node.plans import PlanApprovals
from medfed.node.runlog import RunLog
from medfed.sdk.http import _error

__all__ = ["NodeLearning", "PlanFailed", "RunServices"]

CHUNK = 1 << 20
T = TypeVar("T")


def _retry(call: Callable[[], T], *, patience: float = 120.0) -> T:
    """``call()`` again while the hub cannot be reached (a restarting hub), with backoff."""
    deadline = time.monotonic() + patience
    delay = 0.05
    while True:
        try:
            return call()
        except httpx.TransportError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class NodeLearning:
    def __init__(self, *, hub_url: str, secret: str, data_dir: Path, runlog: RunLog) -> None:
        self.hub_url = hub_url.rstrip("/")
        self._secret = secret
        self.data_dir = data_dir
        self.runlog = runlog
        self.approvals = PlanApprovals(data_dir)
        self.worker = PlanWorker()
        self.memory: dict[str, Any] = {}
        self.sources: dict[str, str] = {}  # plan hash -> source (checked on every use)
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def http(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(
                    base_url=self.hub_url,
                    headers={"Authorization": f"Bearer {self._secret}"},
                    timeout=httpx.Timeout(60.0, connect=10.0),
                )
            return self._http

    def for_run(self, run: RunAssignment) -> RunServices:
        return RunServices(self, run)

    def close(self) -> None:
        self.worker.close()
        if self._http is not None:
            self._http.close()


class RunServices:
    """:class:`~medfed.algorithms.learning.node_steps.LearningServices` for one run."""

    def __init__(self, owner: NodeLearning, run: RunAssignment) -> None:
        self.owner = owner
        self.run = run
        self.task_id = run.task_id
        self.dataset_id = run.dataset_id
        self.memory = owner.memory

    def approved_source(self, plan_hash: str) -> str:
        self.owner.approvals.log_new_decisions(self.owner.runlog)
        source = self.owner.sources.get(plan_hash)
        if source is None:
            response = _retry(lambda: self.owner.http.get(f"/api/node/plans/{plan_hash}"))
            if response.status_code >= 400:
                raise _error(response)
            source = response.json().get("source")
            if not isinstance(source, str):
                raise BadRequest(f"the hub sent no source for plan {plan_hash}")
        self.owner.approvals.check(plan_hash, source)  # raises Refused; nothing ran yet
        self.owner.sources[plan_hash] = source  # its hash matched: the same text next time
        return source

    def fetch_blob(self, sha256: str, dest: Path) -> None:
        _retry(lambda: self._fetch(sha256, dest))

    def _fetch(self, sha256: str, dest: Path) -> None:
        digest = hashlib.sha256()
        with self.owner.http.stream("GET", f"/api/node/blobs/{sha256}") as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            with open(dest, "wb") as handle:
                for chunk in response.iter_bytes(CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
        if digest.hexdigest() != sha256:
            raise BadRequest(f"blob {sha256[:12]}… arrived with a different hash")

    def upload(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(data), CHUNK):
                yield data[start : start + CHUNK]

        headers = {
            "X-Lease-Id": self.run.lease_id,
            "X-Content-SHA256": sha,
            "Content-Type": "application/octet-stream",
        }
        path = f"/api/node/runs/{self.run.run_id}/blob"
        response = _retry(lambda: self.owner.http.put(path, content=chunks(), headers=headers))
        if response.status_code >= 400:
            raise _error(response)
        return sha

    def warm_up(self) -> None:
        self.owner.worker.warm_up()

    def run_plan(self, job_dir: Path, timeout: float | None = None) -> None:
        self.owner.worker.run(job_dir, timeout=timeout)

    @contextlib.contextmanager
    def job_dir(self) -> Iterator[Path]:
        root = self.owner.data_dir / "jobs"
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"run-{self.run.run_id}-", dir=root))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
