"""``client.learning``: submit training plans, start and follow trainings, fetch models.

A training in one call::

    result = client.learning.train(
        plan=Path("plan.py"), datasets=["cancer"], columns=[...], rounds=10,
        plan_args={...}, local_epochs=5, lr=0.2,
    )
    client.learning.download(client.learning.models()[-1].id, "model.safetensors")

``start`` submits the plan (a no-op if the hub has it), builds the initial weights from
the plan's ``model(plan_args)`` locally when none are given (this needs torch here; the
hub never runs plan code), streams them to the hub and creates the ``fl.train`` task.
``progress`` returns per-round metrics and timings (``TrainingProgress.timings``).
"""

from __future__ import annotations

import builtins
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfed.common.learning_resources import (
    BlobStored,
    ModelPublic,
    PlanPublic,
    PlanSource,
    PrivacyBudgetPublic,
    TrainingProgress,
)
from medfed.common.resources import TaskPublic
from medfed.sdk.http import HubHTTP, HubUnreachable, _error

if TYPE_CHECKING:
    from medfed.algorithms.learning.fedtrain import TrainResult
    from medfed.sdk.client import Client

__all__ = ["Learning", "initial_weights"]

CHUNK = 1 << 20


def _source(plan: str | Path) -> str:
    return plan.read_text() if isinstance(plan, Path) else plan


def initial_weights(plan: str | Path, plan_args: dict[str, Any]) -> bytes:
    """The safetensors bytes of ``model(plan_args)`` of the plan (imports torch and the plan)."""
    from safetensors.torch import save

    from medfed.algorithms.learning.loop import load_plan

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "plan.py"
        path.write_text(_source(plan))
        module = load_plan(path)
        model = module.model(plan_args)
        state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
        return save(state)


class Learning:
    def __init__(self, http: HubHTTP, client: Client) -> None:
        self._http = http
        self._client = client

    def submit_plan(self, plan: str | Path, name: str | None = None) -> PlanPublic:
        default = plan.name if isinstance(plan, Path) else "plan"
        body = {"name": name or default, "source": _source(plan)}
        return PlanPublic.model_validate(self._http.request("POST", "/api/plans", json=body))

    def plans(self) -> builtins.list[PlanPublic]:
        return [PlanPublic.model_validate(p) for p in self._http.request("GET", "/api/plans")]

    def plan(self, plan_hash: str) -> PlanSource:
        return PlanSource.model_validate(self._http.request("GET", f"/api/plans/{plan_hash}"))

    def upload_weights(self, data: bytes | Path) -> str:
        """Stream safetensors bytes (or a file) to the hub; returns their SHA-256."""
        digest = hashlib.sha256()
        if isinstance(data, Path):
            with open(data, "rb") as handle:
                for block in iter(lambda: handle.read(CHUNK), b""):
                    digest.update(block)
        else:
            digest.update(data)
        sha = digest.hexdigest()

        def chunks() -> Iterator[bytes]:
            if isinstance(data, Path):
                with open(data, "rb") as handle:
                    yield from iter(lambda: handle.read(CHUNK), b"")
            else:
                for start in range(0, len(data), CHUNK):
                    yield data[start : start + CHUNK]

        response = self._raw().put(
            "/api/blobs",
            content=chunks(),
            headers={**self._auth(), "X-Content-SHA256": sha},
            timeout=600.0,
        )
        if response.status_code >= 400:
            raise _error(response)
        return BlobStored.model_validate(response.json()).sha256

    def start(
        self,
        plan: str | Path,
        *,
        datasets: builtins.list[int | str],
        columns: builtins.list[str],
        plan_args: dict[str, Any] | None = None,
        weights: bytes | Path | str | None = None,
        project: int | None = None,
        **params: Any,
    ) -> TaskPublic:
        """Submit the plan and initial weights, then create the training task."""
        args = dict(plan_args or {})
        submitted = self.submit_plan(plan)
        if isinstance(weights, str):
            weights_sha = weights  # a blob already at the hub
        else:
            weights_sha = self.upload_weights(
                weights if weights is not None else initial_weights(plan, args)
            )
        body = {
            "project_id": project if project is not None else self._client.default_project(),
            "datasets": datasets,
            "params": {
                **params,
                "plan": submitted.hash,
                "initial_weights": weights_sha,
                "columns": columns,
                "plan_args": args,
            },
        }
        return TaskPublic.model_validate(self._http.request("POST", "/api/trainings", json=body))

    def progress(self, task_id: int) -> TrainingProgress:
        data = self._http.request("GET", f"/api/trainings/{task_id}")
        return TrainingProgress.model_validate(data)

    def result(self, task: TaskPublic) -> TrainResult:
        from medfed.algorithms.learning.fedtrain import TrainResult

        outcome = self._client.tasks.result(task).result
        return TrainResult.model_validate(outcome.model_dump())

    def train(
        self,
        plan: str | Path,
        *,
        timeout: float = 3600.0,
        progress: bool | None = None,
        **kwargs: Any,
    ) -> TrainResult:
        """``start``, follow until the training ends, and return its result."""
        task = self.start(plan, **kwargs)
        return self.result(self._client.tasks.wait(task.id, timeout=timeout, progress=progress))

    def models(self, project: int | None = None) -> builtins.list[ModelPublic]:
        project_id = project if project is not None else self._client.default_project()
        data = self._http.request("GET", "/api/models", params={"project_id": project_id})
        return [ModelPublic.model_validate(m) for m in data]

    def model(self, model_id: int) -> ModelPublic:
        return ModelPublic.model_validate(self._http.request("GET", f"/api/models/{model_id}"))

    def download(self, model_id: int, path: str | Path) -> Path:
        """Stream the model's safetensors to ``path`` (checked against its hash)."""
        target = Path(path)
        expected = self.model(model_id).blob_sha256
        digest = hashlib.sha256()
        with self._raw().stream(
            "GET", f"/api/models/{model_id}/download", headers=self._auth(), timeout=600.0
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            with open(target, "wb") as handle:
                for block in response.iter_bytes(CHUNK):
                    digest.update(block)
                    handle.write(block)
        if digest.hexdigest() != expected:
            raise HubUnreachable(f"model {model_id} arrived incomplete (hash differs)")
        return target

    def set_privacy_budget(
        self, epsilon: float, delta: float, project: int | None = None
    ) -> PrivacyBudgetPublic:
        project_id = project if project is not None else self._client.default_project()
        data = self._http.request(
            "PUT",
            f"/api/projects/{project_id}/privacy-budget",
            json={"epsilon": epsilon, "delta": delta},
        )
        return PrivacyBudgetPublic.model_validate(data)

    def _raw(self) -> Any:
        return self._http._client  # streaming needs the underlying client

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._http.token}"} if self._http.token else {}
