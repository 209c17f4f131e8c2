"""Saved cohorts on the hub: import, versions, and cohorts named by tasks.

How it runs:

* :func:`import_cohort` — a project member sends an ATLAS export under a name. The hub
  checks it with :func:`medfed.algorithms.cohorts.circe.parse_definition` (an unknown key
  or criteria type, a malformed value, no entry event: ``BadRequest`` naming it, nothing
  stored) and hashes it (:func:`~medfed.algorithms.cohorts.circe.definition_hash`). A new
  name makes cohort version 1; the same name with a changed definition adds the next
  version; the same definition again changes nothing. ``cohort.version`` goes to the
  ledger with the definition's hash.
* :func:`list_cohorts` / :func:`get_cohort` — members of the cohort's project (and hub
  admins) see it; others get 404 as if it did not exist.
* :func:`task_cohort` — called by task creation: takes ``cohort`` and ``features`` out of
  the raw parameters, resolves the cohort reference within the task's project, checks the
  feature specification, and gives the algorithm the columns the specification declares
  as each dataset's schema (so ``validate`` checks a Cox model's columns against the
  cohort's variables). The stored task carries the resolved cohort (id, version, hash, name,
  definition) and the specification to the nodes. OMOP datasets (registered with an
  ``omop`` summary) are only served with a cohort, and a cohort only on OMOP datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medfed.algorithms.cohorts.circe import definition_hash, parse_definition
from medfed.algorithms.cohorts.features import FeatureSpec
from medfed.algorithms.cohorts.resources import CohortRef, ResolvedCohort
from medfed.common.errors import BadRequest, NotFound
from medfed.common.schemas import ColumnSchema, ColumnType, DatasetSchema
from medfed.hub.db.models import Dataset, User
from medfed.hub.db.models_cohorts import Cohort, CohortVersion
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.projects import get_project, is_member

__all__ = [
    "TaskCohort",
    "feature_columns",
    "get_cohort",
    "import_cohort",
    "is_omop",
    "list_cohorts",
    "resolve",
    "task_cohort",
    "versions_of",
]

#: algorithms that only make sense on a cohort
COHORT_ONLY = frozenset({"cohort_counts"})


def import_cohort(
    session: Session,
    *,
    user: User,
    project_id: int,
    name: str,
    description: str,
    raw_definition: dict[str, Any] | str,
) -> tuple[Cohort, CohortVersion, bool]:
    """Save ``raw_definition`` as ``name``'s first or next version; whether one was added."""
    get_project(session, project_id=project_id, user=user)
    definition = parse_definition(raw_definition)
    digest = definition_hash(definition)
    cohort = session.scalar(
        select(Cohort).where(Cohort.project_id == project_id, Cohort.name == name)
    )
    latest = _latest(session, cohort.id) if cohort is not None else None
    if cohort is not None and latest is not None and latest.definition_hash == digest:
        if description and cohort.description != description:
            cohort.description = description
        return cohort, latest, False
    if cohort is None:
        cohort = Cohort(
            project_id=project_id, name=name, description=description, created_by=user.id
        )
        session.add(cohort)
        session.flush()
    elif description:
        cohort.description = description
    number = (latest.version if latest is not None else 0) + 1
    version = CohortVersion(
        cohort_id=cohort.id,
        version=number,
        definition=definition,
        definition_hash=digest,
        created_by=user.id,
    )
    session.add(version)
    session.flush()
    record(
        session,
        action="cohort.version",
        actor=actor_of(user),
        objects={"cohort": cohort.id, "project": project_id, "version": number},
        hashes={"definition": digest},
    )
    return cohort, version, True


def _latest(session: Session, cohort_id: int) -> CohortVersion | None:
    return session.scalar(
        select(CohortVersion)
        .where(CohortVersion.cohort_id == cohort_id)
        .order_by(CohortVersion.version.desc())
        .limit(1)
    )


def versions_of(session: Session, cohort_id: int) -> list[CohortVersion]:
    return list(
        session.scalars(
            select(CohortVersion)
            .where(CohortVersion.cohort_id == cohort_id)
            .order_by(CohortVersion.version)
        )
    )


def _visible(session: Session, cohort: Cohort | None, user: User, what: str) -> Cohort:
    if cohort is None or not (
        user.is_superuser or is_member(session, project_id=cohort.project_id, user=user)
    ):
        raise NotFound(f"{what} not found")
    return cohort


def list_cohorts(
    session: Session, *, user: User, project_id: int
) -> list[tuple[Cohort, CohortVersion]]:
    get_project(session, project_id=project_id, user=user)
    newest = (
        select(CohortVersion.cohort_id, func.max(CohortVersion.version).label("v"))
        .group_by(CohortVersion.cohort_id)
        .subquery()
    )
    rows = session.execute(
        select(Cohort, CohortVersion)
        .join(newest, newest.c.cohort_id == Cohort.id)
        .join(
            CohortVersion,
            (CohortVersion.cohort_id == Cohort.id) & (CohortVersion.version == newest.c.v),
        )
        .where(Cohort.project_id == project_id)
        .order_by(Cohort.id)
    ).all()
    return [(c, v) for c, v in rows]


def get_cohort(
    session: Session, *, user: User, cohort_id: int, version: int | None = None
) -> tuple[Cohort, CohortVersion]:
    cohort = _visible(session, session.get(Cohort, cohort_id), user, f"cohort {cohort_id}")
    found = (
        _latest(session, cohort.id)
        if version is None
        else session.scalar(
            select(CohortVersion).where(
                CohortVersion.cohort_id == cohort.id, CohortVersion.version == version
            )
        )
    )
    if found is None:
        raise NotFound(f"cohort {cohort_id} has no version {version}")
    return cohort, found


def resolve(session: Session, *, project_id: int, ref: CohortRef) -> ResolvedCohort:
    """The saved version ``ref`` names, among the cohorts of ``project_id``."""
    query = select(CohortVersion).join(Cohort).where(Cohort.project_id == project_id)
    if ref.hash is not None:
        query = query.where(CohortVersion.definition_hash == ref.hash)
        what = f"cohort with definition hash {ref.hash[:12]}…"
    else:
        query = query.where(Cohort.id == ref.id)
        what = f"cohort {ref.id}" + (f" version {ref.version}" if ref.version else "")
        if ref.version is not None:
            query = query.where(CohortVersion.version == ref.version)
    found = session.scalar(query.order_by(CohortVersion.version.desc()).limit(1))
    if found is None:
        raise BadRequest(f"{what} not found in project {project_id}")
    named = session.get(Cohort, found.cohort_id)
    return ResolvedCohort(
        id=found.cohort_id,
        version=found.version,
        hash=found.definition_hash,
        definition=dict(found.definition),
        name=named.name if named is not None else None,
    )


def is_omop(dataset: Dataset) -> bool:
    """Whether a node registered ``dataset`` as an OMOP CDM (its summary says so)."""
    return isinstance(dataset.summary, dict) and isinstance(dataset.summary.get("omop"), dict)


def feature_columns(spec: FeatureSpec) -> list[ColumnSchema]:
    """The columns a cohort's feature frame has, in order (what algorithms may name)."""
    cols: list[ColumnSchema] = []
    if spec.age:
        cols.append(ColumnSchema(name="age", type=ColumnType.float))
    if spec.sex:
        cols.append(ColumnSchema(name="female", type=ColumnType.float))
    for cov in spec.covariates:
        kind = ColumnType.integer if cov.value == "presence" else ColumnType.float
        cols.append(ColumnSchema(name=cov.name, type=kind))
    if spec.outcome is not None:
        cols.append(ColumnSchema(name=f"{spec.outcome.name}_event", type=ColumnType.integer))
        cols.append(ColumnSchema(name=f"{spec.outcome.name}_time", type=ColumnType.float))
    return cols


@dataclass
class TaskCohort:
    """A task's parameters split into the algorithm's own and the cohort's."""

    params: dict[str, Any]
    #: what the stored task carries besides the algorithm's parameters ({} without cohort)
    extra: dict[str, Any] = field(default_factory=dict)
    #: the schema each dataset offers the algorithm (the feature columns on a cohort)
    columns: list[ColumnSchema] | None = None

    def schemas(self, found: Sequence[DatasetSchema]) -> list[DatasetSchema]:
        if self.columns is None:
            return list(found)
        return [s.model_copy(update={"columns": self.columns}) for s in found]


def _spec(raw: Any) -> FeatureSpec:
    try:
        return FeatureSpec.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "features"
        raise BadRequest(f"features: {where}: {first['msg']}") from None


def task_cohort(
    session: Session,
    *,
    project_id: int,
    algorithm: str,
    raw_params: dict[str, Any],
    datasets: Sequence[Dataset],
) -> TaskCohort:
    """Split and check the cohort part of a task's parameters (see the module docstring)."""
    params = dict(raw_params)
    raw_ref = params.pop("cohort", None)
    raw_features = params.pop("features", None)
    omop = [d.name for d in datasets if is_omop(d)]
    if raw_ref is None:
        if raw_features is not None:
            raise BadRequest("features: give a cohort= to extract them from")
        if algorithm in COHORT_ONLY:
            raise BadRequest(f"{algorithm}: name a saved cohort (cohort=)")
        if omop:
            raise BadRequest(
                f"dataset '{omop[0]}' is an OMOP CDM: name a saved cohort (cohort=) and the "
                "analysis variables (features=)"
            )
        return TaskCohort(params=params)
    if isinstance(raw_ref, int | str) and not isinstance(raw_ref, bool):
        raw_ref = {"id": raw_ref} if str(raw_ref).isdigit() else {"hash": raw_ref}
    try:
        ref = CohortRef.model_validate(raw_ref)
    except ValidationError as exc:
        raise BadRequest(f"cohort: {exc.errors()[0]['msg']}") from None
    not_omop = [d.name for d in datasets if not is_omop(d)]
    if not_omop:
        raise BadRequest(f"cohort: dataset '{not_omop[0]}' is not an OMOP CDM")
    resolved = resolve(session, project_id=project_id, ref=ref)
    spec = _spec(raw_features)
    extra = {
        "cohort": resolved.model_dump(mode="json"),
        "features": spec.model_dump(mode="json"),
    }
    return TaskCohort(params=params, extra=extra, columns=feature_columns(spec))
