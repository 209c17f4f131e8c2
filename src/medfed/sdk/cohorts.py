"""Saved cohorts from Python: ``client.cohorts``.

:meth:`Cohorts.import_atlas` sends an ATLAS export (a file, its text or the parsed JSON)
under a name of a project: the hub checks it (an unknown construct is named, nothing
stored) and saves it as version 1, or as the next version when the definition changed.
:meth:`Cohorts.counts` runs ``cohort_counts`` on OMOP datasets and returns each node's
gated counts and attrition. Any other algorithm runs on a cohort through
``client.tasks.run(..., cohort={"id": 3}, features={...})``.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfed.algorithms.cohorts.resources import CohortPublic
from medfed.common.errors import BadRequest
from medfed.sdk.http import HubHTTP

if TYPE_CHECKING:
    from medfed.sdk.client import Client
    from medfed.sdk.results import TaskResult

__all__ = ["Cohorts"]


class Cohorts:
    def __init__(self, http: HubHTTP, client: Client) -> None:
        self._http = http
        self._client = client

    def import_atlas(
        self,
        definition: str | Path | dict[str, Any],
        *,
        name: str,
        project: int | None = None,
        description: str = "",
    ) -> CohortPublic:
        """Save an ATLAS cohort export; ``created`` says whether a version was added."""
        if isinstance(definition, Path):
            try:
                definition = definition.read_text()
            except OSError as exc:
                raise BadRequest(f"cannot read {definition}: {exc.strerror}") from None
        if isinstance(definition, str):
            try:
                definition = json.loads(definition)
            except ValueError as exc:
                raise BadRequest(f"cohort definition is not JSON: {exc}") from None
        body = {
            "project_id": project if project is not None else self._client.default_project(),
            "name": name,
            "description": description,
            "definition": definition,
        }
        return CohortPublic.model_validate(self._http.request("POST", "/api/cohorts", json=body))

    def list(self, project: int | None = None) -> builtins.list[CohortPublic]:
        project_id = project if project is not None else self._client.default_project()
        data = self._http.request("GET", f"/api/projects/{project_id}/cohorts")
        return [CohortPublic.model_validate(c) for c in data]

    def get(self, cohort_id: int, version: int | None = None) -> CohortPublic:
        params = {"version": version} if version is not None else None
        data = self._http.request("GET", f"/api/cohorts/{cohort_id}", params=params)
        return CohortPublic.model_validate(data)

    def counts(
        self,
        cohort_id: int,
        *,
        datasets: builtins.list[int | str],
        version: int | None = None,
        project: int | None = None,
        timeout: float = 600.0,
        progress: bool | None = None,
    ) -> TaskResult[Any]:
        """Each node's gated counts and attrition (``CohortCountsResult``)."""
        ref: dict[str, Any] = {"id": cohort_id}
        if version is not None:
            ref["version"] = version
        return self._client.tasks.run(
            "cohort_counts",
            datasets=datasets,
            project=project,
            timeout=timeout,
            progress=progress,
            cohort=ref,
        )
