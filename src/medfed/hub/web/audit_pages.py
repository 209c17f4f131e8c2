"""The stewards' query page: per project, the queries made on their organization's data.

``/audit/queries`` (``?project=N`` for one project, ``?flagged=1`` for the flagged
refusals only) renders :func:`medfed.hub.services.query_audit.queries` — the same service
as ``GET /api/audit/queries`` — grouped by project, newest first. Refusals by the
differencing, subset and budget rules are marked ⚑. Stewards and the hub administrator
only; anyone else gets a 403 page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import Response

from medfed.common.audit_resources import QueryAuditEntry
from medfed.hub.api.deps import SessionDep
from medfed.hub.services import accounts, query_audit
from medfed.hub.web.session import PageRoute, VisitorDep, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@dataclass
class ProjectQueries:
    id: int
    name: str
    entries: list[QueryAuditEntry] = field(default_factory=list)

    @property
    def flagged(self) -> int:
        return sum(1 for e in self.entries if e.flagged)


def _by_project(entries: list[QueryAuditEntry]) -> list[ProjectQueries]:
    groups: dict[int, ProjectQueries] = {}
    for entry in entries:
        group = groups.setdefault(
            entry.project_id, ProjectQueries(entry.project_id, entry.project_name)
        )
        group.entries.append(entry)
    return list(groups.values())


@router.get("/audit/queries")
def queries_page(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    project: int | None = None,
    flagged: bool = False,
) -> Response:
    user = visitor.require()
    entries = query_audit.queries(session, user=user, project_id=project, flagged_only=flagged)
    org = None if user.is_superuser else accounts.get_organization(session, user.organization_id)
    context = {
        "projects": _by_project(entries),
        "organization": org,
        "project": project,
        "flagged": flagged,
        "total": len(entries),
    }
    return render(request, "audit_queries.html", context)
