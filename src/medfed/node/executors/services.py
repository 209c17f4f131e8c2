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
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt

from medfed.algorithms.learning.envelope import envelope_hash, training_envelope
from medfed.common.errors import BadRequest, PolicyRefused, Refused
from medfed.common.resources import RunAssignment
from medfed.node.config import Policy
from medfed.node.executors.plan_process import PlanFailed, PlanWorker
from medfed.node.executors.sandbox import SandboxLimits
from medfed.node.plans import PlanApprovals, policy_refusal
from medfed.node.runlog import RunLog
from medfed.sdk.http import _error

if TYPE_CHECKING:
    from medfed.algorithms.learning.fedtrain import TrainParams
    from medfed.node.gate.rowsets import RowSetMemory

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
    def __init__(
        self,
        *,
        hub_url: str,
        secret: str,
        data_dir: Path,
        runlog: RunLog,
        policy: Policy | None = None,
        rowsets: dict[str, RowSetMemory] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.hub_url = hub_url.rstrip("/")
        self._verify = verify  # the node's TLS setting: its hub_cert_sha256 pins hold here too
        self.policy = policy or Policy()
        #: the agent's row-set memory per dataset (filled when it opens its datasets)
        self.rowsets: dict[str, RowSetMemory] = rowsets if rowsets is not None else {}
        self._secret = secret
        self.data_dir = data_dir
        self.runlog = runlog
        self.approvals = PlanApprovals(data_dir)
        self.worker = PlanWorker(
            sandbox=self.policy.sandbox,
            limits=SandboxLimits.from_policy(self.policy),
            scratch_root=data_dir / "jobs",
            runlog=runlog,
        )
        self.memory: dict[str, Any] = {}
        self.sources: dict[str, tuple[str, str]] = {}  # plan hash -> (source, name)
        #: the agent's open tables and their files (image validation reads them)
        self.tables: dict[str, Any] = {}
        self.dataset_paths: dict[str, Path] = {}
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
                    verify=self._verify,
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
        #: the approval (envelope hash) this run goes ahead under, once checked
        self.approval: str | None = None

    def _plan_source(self, plan_hash: str) -> tuple[str, str]:
        known = self.owner.sources.get(plan_hash)
        if known is not None:
            return known
        response = _retry(lambda: self.owner.http.get(f"/api/node/plans/{plan_hash}"))
        if response.status_code >= 400:
            raise _error(response)
        body = response.json()
        source = body.get("source")
        if not isinstance(source, str):
            raise BadRequest(f"the hub sent no source for plan {plan_hash}")
        return source, str(body.get("name", ""))

    def approved_source(self, params: TrainParams) -> str:
        """The plan's source once the training's envelope is approved here.

        The node's training policy first, then the approvals: an envelope no approval
        covers is recorded as a pending request for the steward and refused (nothing
        was written or imported yet).
        """
        self.owner.approvals.log_new_decisions(self.owner.runlog)
        envelope = training_envelope(params, self.run.dataset_name)
        refusal = policy_refusal(envelope, self.owner.policy.training)
        if refusal is not None:
            raise PolicyRefused(f"{refusal} (envelope {envelope_hash(envelope)[:12]}…)")
        if self.run.task_nodes and self.run.task_nodes < params.min_nodes:
            raise PolicyRefused(
                f"training envelope {envelope_hash(envelope)[:12]}…: min_nodes "
                f"{params.min_nodes}, the task has {self.run.task_nodes} node(s)"
            )
        source, name = self._plan_source(params.plan)
        statement = self.run.entitlement.statement if self.run.entitlement else None
        who = {
            "project_id": self.run.project_id,
            "task_id": self.run.task_id,
            "user": None,  # the hub does not say which member started the task
            "entitlement": statement.entitlement_id if statement else None,
            "dataset": self.run.dataset_name,
        }
        approval = self.owner.approvals.check(envelope, source, name=name, who=who)
        self.owner.sources[params.plan] = (source, name)  # its hash matched: same text next time
        self.approval = approval
        return source

    def release_rows(
        self, train_ids: npt.NDArray[np.int64], holdout_ids: npt.NDArray[np.int64]
    ) -> None:
        """Pass the training's row sets through the dataset's row-set memory now.

        Before any plan code runs: a training whose rows (or held-out rows) differ from
        an already released set by 1..k-1 rows is refused (:class:`Refused`, withheld
        like any rule of the gate).
        """
        memory = self.owner.rowsets.get(self.run.dataset_name)
        if memory is None:
            return  # outside a node agent (tests of the step alone)
        labelings = []
        for ids in (train_ids, holdout_ids):
            mask = np.zeros(memory.n_rows, dtype=np.int64)
            mask[ids] = 1
            labelings.append(mask)
        decision = memory.release(labelings, self.owner.policy.min_cell_count)
        if not decision.released:
            raise Refused(
                f"fl.train: the training's row sets would split a released set into a part "
                f"under min_cell_count ({decision.rule})"
            )

    def record_run(self, phase: str) -> None:
        """One line of the approval's history: this run went ahead under it."""
        if self.approval is not None:
            self.owner.approvals.record_run(
                self.approval,
                task_id=self.run.task_id,
                run_id=self.run.run_id,
                project_id=self.run.project_id,
                round=self.run.round,
                phase=phase,
                dataset=self.run.dataset_name,
            )

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
