"""Routes of the stewards' query audit (``medfed.hub.services.query_audit``).

``GET /api/audit/queries`` lists the queries made on the steward's organization's data,
newest first, optionally for one project or only the flagged refusals (differencing,
subset, budget). Stewards and the hub administrator only; everyone else gets 403.
"""

from __future__ import annotations

from fastapi import APIRouter, Query

from medfed.common.audit_resources import QueryAuditEntry
from medfed.hub.api.deps import CurrentUser, SessionDep
from medfed.hub.services import query_audit

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("/queries")
def list_queries(
    user: CurrentUser,
    session: SessionDep,
    project_id: int | None = None,
    organization_id: int | None = Query(
        default=None, description="hub administrator only: whose data (default: all)"
    ),
    flagged: bool = Query(
        default=False, description="only refusals by differencing, subset, budget"
    ),
    limit: int = Query(default=1000, ge=1, le=query_audit.MAX_ROWS),
) -> list[QueryAuditEntry]:
    return query_audit.queries(
        session,
        user=user,
        project_id=project_id,
        organization_id=organization_id,
        flagged_only=flagged,
        limit=limit,
    )
