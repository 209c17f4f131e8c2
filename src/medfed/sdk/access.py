"""``client.access``: access applications (REMS), DAC decisions, entitlements, discovery.

Every method returns typed objects from ``medfed.common.access_resources``. Applicants
call :meth:`Access.apply` then :meth:`Access.submit`; DAC members :meth:`Access.approve`
(with the required end date), :meth:`Access.reject`, :meth:`Access.return_`,
:meth:`Access.revoke` and read :meth:`Access.due`. :meth:`Access.count` runs a Beacon-style
count discovery (filters as JSON or as the CLI's text form) and waits for the nodes.
:meth:`Access.budget` reads a project's query budget and a DAC sets it with
:meth:`Access.set_budget`; a task or discovery query over a budget raises
:class:`~medfed.common.errors.RateLimited`, whose message and ``resets_at`` say when the
next one is possible.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from medfed.common.access_resources import (
    ApplicationCreate,
    ApplicationPublic,
    ApplicationUpdate,
    DiscoveryRequest,
    DiscoveryResult,
    DueView,
    EntitlementPublic,
    IntendedUseIn,
    QueryBudgetPublic,
    QueryBudgetSet,
)
from medfed.common.filter_text import parse_filter_text
from medfed.common.filters import filter_to_json
from medfed.sdk.http import HubHTTP

__all__ = ["Access"]

APPS = "/api/access/applications"


class Access:
    def __init__(self, http: HubHTTP) -> None:
        self._http = http

    def _app(self, method: str, path: str, body: Any = None) -> ApplicationPublic:
        return ApplicationPublic.model_validate(self._http.request(method, path, json=body))

    def apply(
        self,
        project_id: int,
        datasets: Sequence[int],
        *,
        purpose: str,
        duration_days: int,
        ethics_reference: str = "",
        title: str = "",
        codes: Sequence[str] = (),
        **intended_use: Any,
    ) -> ApplicationPublic:
        """A draft application; ``intended_use`` takes the fields of ``IntendedUseIn``."""
        body = ApplicationCreate(
            project_id=project_id,
            datasets=list(datasets),
            title=title,
            purpose=purpose,
            ethics_reference=ethics_reference,
            intended_use=IntendedUseIn(codes=list(codes), **intended_use),
            duration_days=duration_days,
        )
        return self._app("POST", APPS, body.model_dump(mode="json"))

    def update(self, application_id: int, **changes: Any) -> ApplicationPublic:
        body = ApplicationUpdate.model_validate(changes).model_dump(mode="json", exclude_unset=True)
        return self._app("PATCH", f"{APPS}/{application_id}", body)

    def get(self, application_id: int) -> ApplicationPublic:
        return self._app("GET", f"{APPS}/{application_id}")

    def list(
        self, *, state: str | None = None, project_id: int | None = None
    ) -> builtins.list[ApplicationPublic]:
        params = {k: v for k, v in {"state": state, "project_id": project_id}.items() if v}
        data = self._http.request("GET", APPS, params=params)
        return [ApplicationPublic.model_validate(a) for a in data]

    def submit(self, application_id: int) -> ApplicationPublic:
        return self._app("POST", f"{APPS}/{application_id}/submit")

    def approve(
        self, application_id: int, ends_at: datetime, comment: str = ""
    ) -> ApplicationPublic:
        body = {"ends_at": ends_at.isoformat(), "comment": comment}
        return self._app("POST", f"{APPS}/{application_id}/approve", body)

    def _decide(self, application_id: int, decision: str, comment: str) -> ApplicationPublic:
        return self._app("POST", f"{APPS}/{application_id}/{decision}", {"comment": comment})

    def reject(self, application_id: int, comment: str = "") -> ApplicationPublic:
        return self._decide(application_id, "reject", comment)

    def return_(self, application_id: int, comment: str) -> ApplicationPublic:
        """Send back for changes (the comment says what to change)."""
        return self._decide(application_id, "return", comment)

    def close(self, application_id: int, comment: str = "") -> ApplicationPublic:
        return self._decide(application_id, "close", comment)

    def revoke(self, application_id: int, comment: str = "") -> ApplicationPublic:
        return self._decide(application_id, "revoke", comment)

    def entitlements(self, project_id: int | None = None) -> builtins.list[EntitlementPublic]:
        params = {"project_id": project_id} if project_id is not None else None
        data = self._http.request("GET", "/api/access/entitlements", params=params)
        return [EntitlementPublic.model_validate(e) for e in data]

    def due(self) -> DueView:
        return DueView.model_validate(self._http.request("GET", "/api/access/due"))

    def budget(self, project_id: int) -> QueryBudgetPublic:
        """The project's query budget (statistical tasks per window) and what is left."""
        data = self._http.request("GET", f"/api/access/projects/{project_id}/query-budget")
        return QueryBudgetPublic.model_validate(data)

    def set_budget(
        self, project_id: int, tasks: int | None, *, window_hours: float | None = None
    ) -> QueryBudgetPublic:
        """DAC: ``tasks`` per ``window_hours`` for the project (None: the hub's default)."""
        body = QueryBudgetSet(query_budget=tasks, window_hours=window_hours)
        data = self._http.request(
            "PUT",
            f"/api/access/projects/{project_id}/query-budget",
            json=body.model_dump(mode="json"),
        )
        return QueryBudgetPublic.model_validate(data)

    def count(
        self,
        filters: Sequence[str | dict[str, Any]] = (),
        *,
        granularity: Literal["boolean", "count"] = "count",
        datasets: Sequence[int] | None = None,
        wait: float = 60.0,
    ) -> DiscoveryResult:
        """Count rows matching every filter across usable datasets (one unit of budget)."""
        parsed = []
        for f in filters:
            if isinstance(f, str):
                text = parse_filter_text(f)
                if text is not None:
                    parsed.append(filter_to_json(text))
            else:
                parsed.append(f)
        body = DiscoveryRequest(
            filters=parsed,
            granularity=granularity,
            datasets=list(datasets) if datasets is not None else None,
        )
        data = self._http.request(
            "POST",
            "/api/discovery/count",
            json=body.model_dump(mode="json"),
            params={"wait": min(wait, 120.0)},
            timeout=wait + 30.0,
        )
        return DiscoveryResult.model_validate(data)

    def count_result(self, query_id: int, wait: float = 0.0) -> DiscoveryResult:
        data = self._http.request(
            "GET", f"/api/discovery/queries/{query_id}", params={"wait": wait}, timeout=wait + 30
        )
        return DiscoveryResult.model_validate(data)
