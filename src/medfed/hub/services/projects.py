"""Projects (research tenants) and their members.

Only members see a project's tasks and results. A researcher (or admin) creates a project
and becomes its first member; the project's creator, an org admin or the hub admin adds
members.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from medfed.common.errors import Conflict, Forbidden, NotFound
from medfed.common.resources import Role
from medfed.hub.db.models import Project, ProjectMember, User
from medfed.hub.db.session import execute_core
from medfed.hub.services.accounts import get_user, has_role
from medfed.hub.services.ledger import actor_of, record

#: built once: every task request asks it (building it per call cost more than running it)
_MEMBER = select(ProjectMember.id).where(
    ProjectMember.project_id == bindparam("project"), ProjectMember.user_id == bindparam("user")
)


def is_member(session: Session, *, project_id: int, user: User) -> bool:
    return session.scalar(_MEMBER, {"project": project_id, "user": user.id}) is not None


#: whether the user is a member of the project the statement reads
_IS_MEMBER = (
    select(ProjectMember.id)
    .where(ProjectMember.project_id == Project.id, ProjectMember.user_id == bindparam("user"))
    .exists()
)
#: the project and whether the user is a member, in one statement (built once: every task
#: request asks it)
_PROJECT_AND_MEMBERSHIP = select(Project, _IS_MEMBER.label("member")).where(
    Project.id == bindparam("project")
)
#: what a task's creation needs of the project (its id and query budget) and whether the
#: user is a member, as one plain row: no ORM object is built (built once)
_LIMITS_AND_MEMBERSHIP = select(
    Project.id, Project.query_budget, Project.query_window_hours, _IS_MEMBER.label("member")
).where(Project.id == bindparam("project"))


class ProjectLimits(NamedTuple):
    """A project's id and query budget (``projects`` columns), as a task's creation reads
    them: :func:`checked_limits`."""

    id: int
    query_budget: int | None
    query_window_hours: float | None


def _require_visible(row: Any, project_id: int, user: User) -> None:
    """404 where ``row`` (a statement's row with a ``member`` column) is None, 403 where
    ``user`` is neither a member nor the hub admin."""
    if row is None:
        raise NotFound(f"project {project_id} not found")
    if not user.is_superuser and not row.member:
        raise Forbidden(f"you are not a member of project {project_id}")


def get_project(session: Session, *, project_id: int, user: User) -> Project:
    """The project, if ``user`` may see it (member or hub admin); otherwise 404/403. One
    statement reads the project and the membership."""
    found = session.execute(
        _PROJECT_AND_MEMBERSHIP, {"project": project_id, "user": user.id}
    ).first()
    _require_visible(found, project_id, user)
    assert found is not None
    project: Project = found.Project
    return project


def checked_limits(session: Session, *, project_id: int, user: User) -> ProjectLimits:
    """:func:`get_project`'s check (the same refusals), answered with the project's
    :class:`ProjectLimits` as a plain row: one Core statement, no ORM load (every task
    submission asks it; loading the project object cost several times the statement)."""
    found = execute_core(
        session, _LIMITS_AND_MEMBERSHIP, {"project": project_id, "user": user.id}
    ).first()
    _require_visible(found, project_id, user)
    assert found is not None
    return ProjectLimits(found.id, found.query_budget, found.query_window_hours)


def member_ids(session: Session, project_id: int) -> list[int]:
    return list(
        session.scalars(
            select(ProjectMember.user_id)
            .where(ProjectMember.project_id == project_id)
            .order_by(ProjectMember.user_id)
        )
    )


def create_project(
    session: Session, *, actor: User, name: str, description: str, organization_id: int | None
) -> Project:
    if not (has_role(actor, Role.researcher) or has_role(actor, Role.admin)):
        raise Forbidden("creating a project needs the researcher or admin role")
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise Conflict(f"project '{name}' exists already")
    project = Project(
        name=name,
        description=description,
        organization_id=organization_id or actor.organization_id,
        created_by=actor.id,
    )
    session.add(project)
    session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=actor.id))
    session.flush()
    record(
        session,
        action="project.create",
        actor=actor_of(actor),
        objects={"project": project.id, "members": [actor.id]},
    )
    return project


def list_projects(session: Session, *, actor: User) -> list[Project]:
    query = select(Project).order_by(Project.id)
    if not actor.is_superuser:
        query = query.join(ProjectMember, ProjectMember.project_id == Project.id).where(
            ProjectMember.user_id == actor.id
        )
    return list(session.scalars(query))


def add_member(session: Session, *, actor: User, project_id: int, user_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    allowed = (
        actor.is_superuser
        or project.created_by == actor.id
        or (has_role(actor, Role.admin) and actor.organization_id == project.organization_id)
    )
    if not allowed:
        raise Forbidden(f"adding members to project {project_id} needs its creator or an admin")
    get_user(session, user_id)
    if is_member(session, project_id=project_id, user=get_user(session, user_id)):
        return project
    session.add(ProjectMember(project_id=project_id, user_id=user_id))
    session.flush()
    record(
        session,
        action="project.member_add",
        actor=actor_of(actor),
        objects={"project": project_id, "user": user_id},
    )
    return project
