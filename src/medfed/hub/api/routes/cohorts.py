"""Routes of saved cohorts: import an ATLAS export, list a project's cohorts, show one.

``POST /api/cohorts`` (a checked Circe definition under a name; a changed definition adds
a version, the same one changes nothing), ``GET /api/projects/{id}/cohorts`` (each
cohort's latest version), ``GET /api/cohorts/{id}?version=`` (one version with its
definition and the list of versions). Counts per node are a ``cohort_counts`` task
(``POST /api/tasks`` with ``params.cohort``). Logic lives in
:mod:`medfed.hub.services.cohorts`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from medfed.algorithms.cohorts.circe import concept_ids, inclusion_rule_names
from medfed.algorithms.cohorts.resources import (
    CohortImport,
    CohortPublic,
    CohortVersionPublic,
)
from medfed.hub.api.deps import CurrentUser, SessionDep
from medfed.hub.db.models_cohorts import Cohort, CohortVersion
from medfed.hub.services import cohorts as service

router = APIRouter(tags=["cohorts"])


def version_public(version: CohortVersion) -> CohortVersionPublic:
    return CohortVersionPublic(
        version=version.version,
        definition_hash=version.definition_hash,
        created_at=version.created_at,
        inclusion_rules=inclusion_rule_names(version.definition),
        concept_ids=concept_ids(version.definition),
    )


def cohort_public(
    session: Session,
    cohort: Cohort,
    version: CohortVersion,
    *,
    full: bool = True,
    created: bool | None = None,
) -> CohortPublic:
    return CohortPublic(
        id=cohort.id,
        project_id=cohort.project_id,
        name=cohort.name,
        description=cohort.description,
        version=version.version,
        definition_hash=version.definition_hash,
        definition=dict(version.definition) if full else None,
        versions=[version_public(v) for v in service.versions_of(session, cohort.id)]
        if full
        else [],
        created_at=cohort.created_at,
        created=created,
    )


@router.post("/api/cohorts", status_code=status.HTTP_201_CREATED)
def import_cohort(
    body: CohortImport, user: CurrentUser, session: SessionDep, response: Response
) -> CohortPublic:
    cohort, version, created = service.import_cohort(
        session,
        user=user,
        project_id=body.project_id,
        name=body.name,
        description=body.description,
        raw_definition=body.definition,
    )
    public = cohort_public(session, cohort, version, created=created)
    session.commit()
    if not created:
        response.status_code = status.HTTP_200_OK
    return public


@router.get("/api/projects/{project_id}/cohorts")
def list_cohorts(project_id: int, user: CurrentUser, session: SessionDep) -> list[CohortPublic]:
    found = service.list_cohorts(session, user=user, project_id=project_id)
    return [cohort_public(session, c, v, full=False) for c, v in found]


@router.get("/api/cohorts/{cohort_id}")
def get_cohort(
    cohort_id: int, user: CurrentUser, session: SessionDep, version: int | None = None
) -> CohortPublic:
    cohort, found = service.get_cohort(session, user=user, cohort_id=cohort_id, version=version)
    return cohort_public(session, cohort, found)
