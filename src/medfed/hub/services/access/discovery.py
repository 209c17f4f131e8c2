"""Beacon v2-style count discovery, answered by the nodes through their gates.

``count_query`` takes filters (AND-ed, the JSON of ``medfed.common.filters``) and a
granularity (``boolean`` or ``count``). It checks everything first — the filters, the
user's budget, that some released or published dataset has the filtered columns — and
only then stores a :class:`DiscoveryQuery` (one unit of the budget) and a ``count`` task
in the hub's discovery project with one run per dataset. The runs need no entitlement:
``entitlements.grant_for_run`` marks them ``discovery`` and each node's policy
(``allow_discovery``, ``count_rounding``) decides whether and how precisely it answers.

:func:`query_result` reads the runs: a count under the node's threshold comes back from
the gate withheld (a zero too) and is shown as ``"<k"`` at count granularity and as "no"
at boolean granularity — boolean discovery says "yes" only where at least ``k`` rows match
— never as a number; counts at or over it come rounded by the node (to 10 by default). The budget is
``discovery_budget`` queries per user and ``discovery_org_budget`` per organization (all
its users together) in ``discovery_window_hours``; an exhausted budget is refused with 429
naming when the next query is possible (``resets_at``, ``Retry-After``) and stores no query
or task — only a ``discovery.refuse`` ledger entry, committed at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.algorithms.registry import get_algorithm
from medfed.common.access_resources import DiscoveryDataset, DiscoveryRequest, DiscoveryResult
from medfed.common.errors import BadRequest, NotFound, RateLimited
from medfed.common.filters import And, Filter, check_filter, filter_to_json, parse_filter
from medfed.common.resources import RunStatus
from medfed.common.schemas import ColumnSchema
from medfed.common.timeutil import utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Dataset, Node, Project, Run, User
from medfed.hub.db.models_access import DiscoveryQuery
from medfed.hub.services.access.budgets import counted_window, shown
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.tasks import TERMINAL, start_runs, store_task
from medfed.ledger.entries import content_hash

# not a name the API accepts (it must start with a letter or digit), so no one can create
# it and become a member who sees other users' discovery tasks
DISCOVERY_PROJECT = "_medfed-discovery"
USABLE_STATES = ("released", "published")

__all__ = ["BudgetExhausted", "count_query", "get_query", "query_result"]


class BudgetExhausted(RateLimited):
    """The user's or the organization's discovery budget is used up (HTTP 429)."""


def _filter(request: DiscoveryRequest) -> Filter | None:
    parsed = [f for f in (parse_filter(raw) for raw in request.filters) if f is not None]
    if not parsed:
        return None
    return parsed[0] if len(parsed) == 1 else And(filters=parsed)


def _window(
    session: Session, *, where: Any, limit: int, settings: HubSettings, now: datetime
) -> tuple[int, datetime | None]:
    since = now - timedelta(hours=settings.discovery_window_hours)
    times = (
        select(DiscoveryQuery.created_at)
        .join(User, User.id == DiscoveryQuery.user_id)
        .where(where, DiscoveryQuery.created_at > since)
        .order_by(DiscoveryQuery.created_at)
    )
    _, left, resets = counted_window(session, times, limit, settings.discovery_window_hours)
    return left, resets


def budgets(
    session: Session, *, user: User, settings: HubSettings, now: datetime
) -> dict[str, tuple[int, datetime | None]]:
    """Per scope (``user``, ``organization``): (queries left, when the next is possible)."""
    return {
        "user": _window(
            session,
            where=DiscoveryQuery.user_id == user.id,
            limit=settings.discovery_budget,
            settings=settings,
            now=now,
        ),
        "organization": _window(
            session,
            where=User.organization_id == user.organization_id,
            limit=settings.discovery_org_budget,
            settings=settings,
            now=now,
        ),
    }


def budget(
    session: Session, *, user: User, settings: HubSettings, now: datetime
) -> tuple[int, datetime | None]:
    """(queries left, when the next is possible): the tighter of user and organization."""
    found = list(budgets(session, user=user, settings=settings, now=now).values())
    left = min(n for n, _ in found)
    if left > 0:
        return left, None
    ends = [when for n, when in found if n <= 0]
    return 0, None if any(when is None for when in ends) else max(w for w in ends if w)


def _usable(session: Session, request: DiscoveryRequest, where: Filter | None) -> list[Dataset]:
    query = select(Dataset).order_by(Dataset.id)
    if hasattr(Dataset, "state"):
        query = query.where(Dataset.state.in_(USABLE_STATES))
    if request.datasets is not None:
        query = query.where(Dataset.id.in_(request.datasets))
    found: list[Dataset] = []
    for dataset in session.scalars(query):
        if where is not None:
            try:
                check_filter(where, [ColumnSchema.model_validate(c) for c in dataset.columns])
            except BadRequest:
                continue  # this dataset cannot answer these filters
        found.append(dataset)
    return found


def _refuse(
    session: Session, *, user: User, scope: str, resets: datetime | None, settings: HubSettings
) -> NoReturn:
    """Record the refusal in the ledger (committed: nothing else changed) and raise 429."""
    record(
        session,
        action="discovery.refuse",
        actor=actor_of(user),
        objects={"user": user.id, "organization": user.organization_id, "rule": "budget"},
    )
    session.commit()
    limit = settings.discovery_budget if scope == "user" else settings.discovery_org_budget
    whose = "your" if scope == "user" else "your organization's"
    when = shown(resets) if resets else "later"
    raise BudgetExhausted(
        f"discovery budget exhausted: {whose} {limit} queries per "
        f"{settings.discovery_window_hours:g} h are used; the next query is possible at {when}",
        resets_at=resets,
    )


def _project(session: Session, user: User) -> Project:
    project = session.scalar(select(Project).where(Project.name == DISCOVERY_PROJECT))
    if project is None:
        project = Project(
            name=DISCOVERY_PROJECT,
            description="count discovery queries (runs need no entitlement; no members)",
            organization_id=user.organization_id,
            created_by=user.id,
        )
        session.add(project)
        session.flush()
    return project


def count_query(
    session: Session, *, user: User, request: DiscoveryRequest, settings: HubSettings
) -> DiscoveryQuery:
    """Check, spend one unit of the budget and start the count at the nodes."""
    now = utcnow()
    where = _filter(request)
    for scope, (left, resets) in budgets(session, user=user, settings=settings, now=now).items():
        if left <= 0:
            _refuse(session, user=user, scope=scope, resets=resets, settings=settings)
    found = _usable(session, request, where)
    if not found:
        raise BadRequest(
            "no released or published dataset can answer these filters (unknown columns?)"
        )
    alg = get_algorithm("count")
    params = alg.parse_params({"where": filter_to_json(where)} if where is not None else {})
    project = _project(session, user)
    task = store_task(
        session, project_id=project.id, actor=user, alg=alg, params=params, found=found
    )
    query = DiscoveryQuery(
        user_id=user.id,
        task_id=task.id,
        granularity=request.granularity,
        dataset_ids=[d.id for d in found],
        created_at=now,
    )
    session.add(query)
    session.flush()
    record(
        session,
        action="discovery.count",
        actor=actor_of(user),
        objects={"query": query.id, "task": task.id, "datasets": query.dataset_ids},
        hashes={"params": content_hash(task.params)},
    )
    start_runs(session, task, found)
    return query


def get_query(session: Session, *, query_id: int, user: User) -> DiscoveryQuery:
    query = session.get(DiscoveryQuery, query_id)
    if query is None or (query.user_id != user.id and not user.is_superuser):
        raise NotFound(f"discovery query {query_id} not found")
    return query


def _below(node: Node | None) -> str:
    k = node.min_cell_count if node is not None else None
    return f"<{k}" if k else "<threshold"


def query_result(
    session: Session, *, query: DiscoveryQuery, user: User, settings: HubSettings
) -> DiscoveryResult:
    """The answer so far: per dataset and overall, never a count under a threshold."""
    runs = list(session.scalars(select(Run).where(Run.task_id == query.task_id).order_by(Run.id)))
    boolean = query.granularity == "boolean"
    out: list[DiscoveryDataset] = []
    total = 0
    under = 0
    for run in runs:
        dataset = session.get(Dataset, run.dataset_id)
        node = session.get(Node, run.node_id)
        item = DiscoveryDataset(
            dataset_id=run.dataset_id,
            dataset_name=dataset.name if dataset is not None else "",
            node_name=node.name if node is not None else "",
        )
        if run.status != RunStatus.done.value:
            item.count_text = "not answered" if run.status in TERMINAL else "waiting"
        elif run.output_status == "ok" and run.output is not None and int(run.output["n"]) > 0:
            n = int(run.output["n"])
            item.exists = True
            item.count = None if boolean else n
            item.count_text = "yes" if boolean else str(n)
            total += n
        else:  # withheld (n < k, zero included): never a number, and "no" when boolean
            item.exists = False if boolean else None
            item.count_text = ("yes" if item.exists else "no") if boolean else _below(node)
            under += 1
        out.append(item)
    finished = bool(runs) and all(r.status in TERMINAL for r in runs)
    left, resets = budget(session, user=user, settings=settings, now=utcnow())
    answered = [i for i in out if i.count_text not in ("waiting", "not answered")]
    result = DiscoveryResult(
        id=query.id,
        status="completed" if finished and answered else ("failed" if finished else "running"),
        granularity="boolean" if boolean else "count",
        datasets=out,
        budget_left=left,
        budget_resets_at=resets,
    )
    if result.status == "failed":
        result.error = "no node answered this discovery query (discovery not allowed?)"
    if boolean:
        result.exists = any(i.exists for i in out) if answered else None
        result.count_text = "yes" if result.exists else ("no" if answered else "")
    else:
        result.count = total if total else None
        result.exists = True if total else None
        note = f" (+ under the threshold at {under} dataset(s))" if under else ""
        result.count_text = (str(total) + note) if total else ("<threshold" if answered else "")
    return result
