"""``client.validation``: upload an ONNX model, start validation studies, read results.

A study in three calls::

    model = client.validation.upload(Path("model.onnx"), name="risk v2",
                                     features=["age", "tsize"], output="probabilities")
    study = client.validation.create("site check", model=model.id, datasets=["cancer"],
                                     outcome={"column": "cens", "positive": 1})
    study = client.validation.wait(study.id)
    print(client.validation.result(study.id).summary())

``recalibrate(study_id)`` registers a completed study's weak recalibration as a new model.
``upload`` streams the file to the hub's blob store (``PUT /api/blobs``) and registers it
(the hub checks the graph without running it). ``wait`` polls until the study's task ends.
"""

from __future__ import annotations

import builtins
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfed.algorithms.validation.resources import OnnxModelPublic, StudyPublic
from medfed.algorithms.validation.results import ValidationResult
from medfed.common.errors import BadRequest
from medfed.sdk.http import HubHTTP

if TYPE_CHECKING:
    from medfed.sdk.client import Client

__all__ = ["Validation"]


class Validation:
    def __init__(self, http: HubHTTP, client: Client) -> None:
        self._http = http
        self._client = client

    def _project(self, project: int | None) -> int:
        chosen = project if project is not None else self._client.project
        if chosen is None:
            raise BadRequest("name a project (project=…) or set client.project")
        return int(chosen)

    def upload(
        self,
        model: bytes | Path,
        *,
        name: str,
        features: builtins.list[str] | None = None,
        output: str,
        positive_index: int = 1,
        derived_from: int | None = None,
        project: int | None = None,
        image: dict[str, Any] | None = None,
    ) -> OnnxModelPublic:
        """Stream the ONNX file to the hub and register it in the project's registry.

        A tabular model names its ``features``; an image model gives ``image`` instead
        (``{"shape": [C, H, W], "window": {"center", "width"}, "mean": [..], "std": [..]}``).
        """
        sha = self._client.learning.upload_weights(model)
        body = {
            "project_id": self._project(project),
            "name": name,
            "sha256": sha,
            "features": features or [],
            "output": {"name": output, "positive_index": positive_index},
            "derived_from": derived_from,
            **({"image": image} if image is not None else {}),
        }
        return OnnxModelPublic.model_validate(
            self._http.request("POST", "/api/validation/models", json=body)
        )

    def models(self, project: int | None = None) -> builtins.list[OnnxModelPublic]:
        path = f"/api/projects/{self._project(project)}/validation/models"
        return [OnnxModelPublic.model_validate(m) for m in self._http.request("GET", path)]

    def create(
        self,
        name: str,
        *,
        model: int,
        datasets: builtins.list[int | str],
        outcome: dict[str, Any],
        mode: str = "private",
        project: int | None = None,
        **definition: Any,
    ) -> StudyPublic:
        """Create the study (``where``, ``thresholds``, ``subgroups``… as keywords)."""
        body = {
            "project_id": self._project(project),
            "name": name,
            "mode": mode,
            "model_id": model,
            "datasets": datasets,
            "outcome": outcome,
            **definition,
        }
        return StudyPublic.model_validate(
            self._http.request("POST", "/api/validation/studies", json=body)
        )

    def get(self, study_id: int) -> StudyPublic:
        return StudyPublic.model_validate(
            self._http.request("GET", f"/api/validation/studies/{study_id}")
        )

    def list(self, project: int | None = None) -> builtins.list[StudyPublic]:
        path = f"/api/projects/{self._project(project)}/validation/studies"
        return [StudyPublic.model_validate(s) for s in self._http.request("GET", path)]

    def wait(self, study_id: int, timeout: float = 600.0, poll: float = 0.5) -> StudyPublic:
        """The study once its task has ended (completed or failed)."""
        deadline = time.monotonic() + timeout
        while True:
            study = self.get(study_id)
            if study.status in ("completed", "failed"):
                return study
            if time.monotonic() > deadline:
                raise TimeoutError(f"validation study {study_id} still {study.status}")
            time.sleep(poll)

    def recalibrate(self, study_id: int) -> OnnxModelPublic:
        """Register the completed study's weak recalibration as a new model (its id, …).

        The new model is the study's model with ``expit(a + b·logit p)`` on its score
        (output ``recalibrated``, column 0); deriving again returns the same model.
        """
        return OnnxModelPublic.model_validate(
            self._http.request("POST", f"/api/validation/studies/{study_id}/recalibrated-model")
        )

    def result(self, study_id: int) -> ValidationResult:
        study = self.get(study_id)
        if study.result is None:
            raise BadRequest(f"validation study {study_id} has no result ({study.status})")
        return ValidationResult.model_validate(study.result)
