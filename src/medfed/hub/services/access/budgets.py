"""Query budgets: how many statistical tasks a project may start per window.

A DAC sets a project's budget (``projects.query_budget`` tasks per
``projects.query_window_hours``); until one does, the hub's default applies
(``project_query_budget`` per ``project_query_window_hours``: 200 per 24 h). Who may set
it: a user with the ``dac`` role in an organization the project applied to for data (an
application past draft — the DACs that decide on its access), or the hub administrator;
each setting is a ledger entry. Project members, those DACs and the hub administrator may
read it.

:func:`require_task_budget` runs when a task is created (``tasks.create_task``), after
every other check. Every task of the project created in the last window counts, failed
ones included (their runs reached the nodes); training (``fl.train``, governed by its
privacy budget) does not. A task over the budget is refused with 429 naming the reset
time (:class:`QueryBudgetExhausted`): the hub stores no task, but keeps the refused
request in ``query_refusals`` and a ``task.refuse`` ledger entry, committed at once (the
request has changed nothing else), so the data's stewards see it in their query view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session

from medfed.algorithms.base import Algorithm
from medfed.algorithms.registry import HUB_CONTEXT
from medfed.common.access_resources import ApplicationState, QueryBudgetPublic
from medfed.common.errors import Forbidden, NotFound, RateLimited
from medfed.common.resources import Role
from medfed.common.timeutil import aware, utcnow
from medfed.hub.config import SETTINGS_INFO, HubSettings
from medfed.hub.db.models import Dataset, Project, Task, User
from medfed.hub.db.models_access import AccessApplication, QueryRefusal
from medfed.hub.db.session import execute_core, is_sqlite
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.projects import ProjectLimits, is_member
from medfed.ledger.entries import content_hash

__all__ = [
    "QueryBudgetExhausted",
    "budget_public",
    "counted_window",
    "is_dac_for_project",
    "require_task_budget",
    "set_query_budget",
    "shown",
    "window_left",
]


class QueryBudgetExhausted(RateLimited):
    """The project's query budget is used up (HTTP 429 with the reset time)."""


def window_left(
    used: int, limit: int, hours: float, nth: Callable[[int], datetime]
) -> tuple[int, datetime | None]:
    """(requests left, when the next one is possible) with ``used`` requests in the window.

    ``nth(i)`` is the time of the ``i``-th oldest counted request of the last ``hours``
    (asked only when none is left). With none left the next is possible once enough of
    the oldest have left the window (``None`` when ``limit`` is 0: never).
    """
    left = max(limit - used, 0)
    if left > 0 or limit <= 0:
        return left, None
    leaving = nth(used - limit)  # this one leaving leaves limit - 1 counted
    return 0, aware(leaving) + timedelta(hours=hours)


def counted_window(
    session: Session,
    times: Select[datetime],
    limit: int,
    hours: float,
    *,
    count: Select[int] | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[int, int, datetime | None]:
    """(used, left, next possible) for the requests whose times ``times`` selects, oldest
    first: counted in the database, and only the one request whose leaving frees the next
    is read (a budget of 10,000 a day reads no 10,000 rows per request). ``count`` is
    ``times`` counted, where the caller built both once; ``params`` their bound values."""
    if count is None:
        count = select(func.count()).select_from(times.subquery())
    used = int(execute_core(session, count, params).scalar() or 0)

    def nth(index: int) -> datetime:
        found = session.scalar(times.offset(index).limit(1), params)
        assert found is not None
        return found

    return (used, *window_left(used, limit, hours, nth))


def shown(when: datetime) -> str:
    """A reset time in a message: ISO 8601 to the second, rounded up (never too early)."""
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return when.isoformat(timespec="seconds")


def _settings(session: Session, settings: HubSettings | None) -> HubSettings:
    if settings is not None:
        return settings
    found = session.info.get(SETTINGS_INFO)
    if isinstance(found, HubSettings):
        return found
    return HubSettings.model_construct()  # the defaults (a session made outside the app)


def limits(
    project: Project | ProjectLimits, settings: HubSettings | None, session: Session
) -> tuple[int, float, bool]:
    """(tasks per window, window in hours, whether it is the hub's default)."""
    hub = _settings(session, settings)
    if project.query_budget is None:
        return hub.project_query_budget, hub.project_query_window_hours, True
    hours = project.query_window_hours or hub.project_query_window_hours
    return project.query_budget, hours, False


#: a project's budgeted tasks since ``:since``, oldest first (algorithms with the hub's
#: context, training and validation, are outside: their own budgets govern them), and
#: their count: built once (building them per task cost as much as running them)
_COUNTED = (
    select(Task.created_at)
    .where(
        Task.project_id == bindparam("project"),
        Task.created_at > bindparam("since", type_=Task.created_at.type),
        Task.algorithm.not_in(sorted(HUB_CONTEXT)),
    )
    .order_by(Task.created_at)
)
_COUNT = select(func.count()).select_from(_COUNTED.subquery())


def _state(
    session: Session, project: Project | ProjectLimits, settings: HubSettings | None, now: datetime
) -> QueryBudgetPublic:
    budget, hours, default = limits(project, settings, session)
    used, left, resets = counted_window(
        session,
        _COUNTED,
        budget,
        hours,
        count=_COUNT,
        params={"project": project.id, "since": now - timedelta(hours=hours)},
    )
    return QueryBudgetPublic(
        project_id=project.id,
        query_budget=budget,
        window_hours=hours,
        default=default,
        used=used,
        left=left,
        resets_at=resets,
    )


def is_dac_for_project(session: Session, user: User, project_id: int) -> bool:
    """A DAC member of an organization the project applied to (past draft), or hub admin."""
    if user.is_superuser:
        return True
    if Role.dac.value not in (user.roles or []):
        return False
    found = session.scalar(
        select(AccessApplication.id)
        .where(
            AccessApplication.project_id == project_id,
            AccessApplication.organization_id == user.organization_id,
            AccessApplication.state != ApplicationState.draft.value,
        )
        .limit(1)
    )
    return found is not None


def _project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project


def set_query_budget(
    session: Session,
    *,
    actor: User,
    project_id: int,
    query_budget: int | None,
    window_hours: float | None,
    settings: HubSettings | None = None,
) -> QueryBudgetPublic:
    """Set (or, with ``query_budget`` None, clear) the project's budget; DAC only."""
    project = _project(session, project_id)
    if not is_dac_for_project(session, actor, project_id):
        raise Forbidden(
            f"setting project {project_id}'s query budget needs the dac role in an "
            "organization it applied to for data"
        )
    project.query_budget = query_budget
    project.query_window_hours = None if query_budget is None else window_hours
    session.flush()
    record(
        session,
        action="project.query_budget",
        actor=actor_of(actor),
        objects={"project": project_id},
        hashes={
            "budget": content_hash(
                {"query_budget": query_budget, "window_hours": project.query_window_hours}
            )
        },
    )
    return _state(session, project, settings, utcnow())


def budget_public(
    session: Session, *, user: User, project_id: int, settings: HubSettings | None = None
) -> QueryBudgetPublic:
    """The budget and what is left, for members, the project's DACs and the hub admin."""
    project = _project(session, project_id)
    if not (
        is_member(session, project_id=project_id, user=user)
        or is_dac_for_project(session, user, project_id)
    ):
        raise Forbidden(f"you are not a member of project {project_id} or one of its DACs")
    return _state(session, project, settings, utcnow())


#: a project's budget read under its row lock (PostgreSQL): two workers' tasks of one
#: project count one after the other
_LIMITS_LOCKED = (
    select(Project.id, Project.query_budget, Project.query_window_hours)
    .where(Project.id == bindparam("project"))
    .with_for_update()
)


def require_task_budget(
    session: Session,
    *,
    actor: User,
    project: ProjectLimits,
    alg: Algorithm[Any],
    params: dict[str, Any],
    found: Sequence[Dataset],
    settings: HubSettings | None = None,
) -> None:
    """Pass, or record the refusal (committed) and raise :class:`QueryBudgetExhausted`.

    ``project``: as :func:`~medfed.hub.services.projects.checked_limits` read it (the
    caller checked access); on PostgreSQL read again under the project row's lock."""
    if alg.uses_hub_context:
        return
    project_id = project.id
    if not is_sqlite(session):
        locked = execute_core(session, _LIMITS_LOCKED, {"project": project_id}).one()
        project = ProjectLimits(*locked)
    now = utcnow()
    state = _state(session, project, settings, now)
    if state.left > 0:
        return
    refusal = QueryRefusal(
        project_id=project_id,
        user_id=actor.id,
        algorithm=alg.name,
        dataset_ids=[d.id for d in found],
        params=params,
        rule="budget",
        created_at=now,
    )
    session.add(refusal)
    session.flush()
    record(
        session,
        action="task.refuse",
        actor=actor_of(actor),
        objects={
            "refusal": refusal.id,
            "project": project_id,
            "algorithm": f"{alg.name}@{alg.version}",
            "datasets": refusal.dataset_ids,
            "rule": "budget",
        },
        hashes={"params": content_hash(params)},
    )
    who = "the hub's default" if state.default else "set by its DAC"
    when = (
        f"the next task is possible at {shown(state.resets_at)}"
        if state.resets_at is not None
        else "no task is possible until a DAC raises it"
    )
    message = (
        f"query budget of project {project_id} exhausted: {state.query_budget} tasks per "
        f"{state.window_hours:g} h ({who}); {when}"
    )
    resets_at = state.resets_at
    session.commit()  # the refusal is kept: stewards see it; nothing else had changed
    raise QueryBudgetExhausted(message, resets_at=resets_at)
