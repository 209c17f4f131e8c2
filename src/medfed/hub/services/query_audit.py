"""The stewards' view of the queries made on their organization's data.

For a user with the ``steward`` role (or the hub administrator), :func:`queries` lists per
project every run at a dataset held by a node of the steward's organization — when the
task was asked for, by whom, which algorithm, the filter as text (the hub has it in the
task's parameters), the node's keyed filter hash and row-set fingerprint, what the node
decided and the category of the rule that decided — and every task the hub refused for
its project's query budget that named one of those datasets (``query_refusals``).
Refusals by the differencing, subset and budget rules are ``flagged``: repeated ones from
one project suggest someone probing the data.

Nothing here is for researchers: they see contributing and withheld node counts only
(``TaskPublic``), never which node withheld or why.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.audit_resources import FLAGGED_RULES, QueryAuditEntry
from medfed.common.errors import BadRequest, Forbidden
from medfed.common.filters import NULL_OPS, And, Condition, Filter, parse_filter
from medfed.common.resources import Role, RunStatus
from medfed.hub.db.models import Dataset, Node, Project, Run, Task, User
from medfed.hub.db.models_access import QueryRefusal
from medfed.hub.services.accounts import has_role

__all__ = ["MAX_ROWS", "filter_text", "queries", "require_steward"]

MAX_ROWS = 5000
_NAME = re.compile(r"^[A-Za-z_][\w.]*$")


def require_steward(user: User) -> None:
    if not has_role(user, Role.steward):
        raise Forbidden("the query audit is for the data's stewards (the steward role)")


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)


def _text(f: Filter) -> str:
    if isinstance(f, Condition):
        column = f.column if _NAME.match(f.column) else f"`{f.column}`"
        if f.op in NULL_OPS:
            return f"{column} {f.op}"
        return f"{column} {f.op} {_value(f.value)}"
    word = " and " if isinstance(f, And) else " or "
    return word.join(_text(p) if isinstance(p, Condition) else f"({_text(p)})" for p in f.filters)


def filter_text(raw: Any) -> str:
    """A task's filter (JSON form) as text, ``age >= 50 and grade == 'II'``; '' for none."""
    if raw is None:
        return ""
    try:
        parsed = parse_filter(raw)
    except BadRequest:
        return json.dumps(raw, sort_keys=True)
    return _text(parsed) if parsed is not None else ""


def _decision(status: str, output_status: str | None) -> str:
    if status == RunStatus.done.value:
        return "released" if output_status == "ok" else "withheld"
    if status in (RunStatus.refused.value, RunStatus.failed.value):
        return status
    return "waiting"


def _organization(user: User, organization_id: int | None) -> int | None:
    """Whose data: the steward's organization; the hub admin may name one (None: all)."""
    if user.is_superuser:
        return organization_id
    if organization_id is not None and organization_id != user.organization_id:
        raise Forbidden("stewards see the queries on their own organization's data only")
    return user.organization_id


def _runs(
    session: Session, org: int | None, project_id: int | None, limit: int, flagged: bool
) -> list[QueryAuditEntry]:
    query = (
        select(Run, Task, Project.name, User.username, Dataset.name, Node.name)
        .join(Task, Task.id == Run.task_id)
        .join(Project, Project.id == Task.project_id)
        .join(User, User.id == Task.created_by)
        .join(Dataset, Dataset.id == Run.dataset_id)
        .join(Node, Node.id == Run.node_id)
        .order_by(Task.created_at.desc(), Run.id.desc())
        .limit(limit)
    )
    if org is not None:
        query = query.where(Node.organization_id == org)
    if project_id is not None:
        query = query.where(Task.project_id == project_id)
    if flagged:
        query = query.where(Run.rule.in_(FLAGGED_RULES))
    out = []
    for run, task, project_name, username, dataset_name, node_name in session.execute(query):
        rule = run.rule
        out.append(
            QueryAuditEntry(
                time=task.created_at,
                project_id=task.project_id,
                project_name=project_name,
                task_id=task.id,
                run_id=run.id,
                round=run.round,
                researcher=username,
                algorithm=task.algorithm,
                dataset_id=run.dataset_id,
                dataset_name=dataset_name,
                node_name=node_name,
                filter_text=filter_text((task.params or {}).get("where")),
                filter_hash=run.filter_hash,
                rowset_fingerprint=run.rowset_fingerprint,
                status=run.status,
                decision=_decision(run.status, run.output_status),
                rule=rule,
                flagged=rule in FLAGGED_RULES,
            )
        )
    return out


def _refusals(
    session: Session, org: int | None, project_id: int | None, limit: int
) -> list[QueryAuditEntry]:
    query = (
        select(QueryRefusal, Project.name, User.username)
        .join(Project, Project.id == QueryRefusal.project_id)
        .join(User, User.id == QueryRefusal.user_id)
        .order_by(QueryRefusal.created_at.desc(), QueryRefusal.id.desc())
        .limit(limit)
    )
    if project_id is not None:
        query = query.where(QueryRefusal.project_id == project_id)
    rows = list(session.execute(query))
    wanted = {int(i) for refusal, _, _ in rows for i in refusal.dataset_ids}
    held = {
        d.id: (d, n)
        for d, n in session.execute(
            select(Dataset, Node)
            .join(Node, Node.id == Dataset.node_id)
            .where(Dataset.id.in_(wanted))
        )
    }
    out = []
    for refusal, project_name, username in rows:
        for dataset_id in refusal.dataset_ids:
            dataset, node = held.get(int(dataset_id), (None, None))
            if dataset is None or node is None:
                continue
            if org is not None and node.organization_id != org:
                continue
            out.append(
                QueryAuditEntry(
                    time=refusal.created_at,
                    project_id=refusal.project_id,
                    project_name=project_name,
                    researcher=username,
                    algorithm=refusal.algorithm,
                    dataset_id=dataset.id,
                    dataset_name=dataset.name,
                    node_name=node.name,
                    filter_text=filter_text((refusal.params or {}).get("where")),
                    status="refused",
                    decision="refused at the hub",
                    rule="budget",
                    flagged=True,
                )
            )
    return out


def queries(
    session: Session,
    *,
    user: User,
    project_id: int | None = None,
    organization_id: int | None = None,
    flagged_only: bool = False,
    limit: int = 1000,
) -> list[QueryAuditEntry]:
    """The queries on the steward's organization's data, newest first (at most ``limit``)."""
    require_steward(user)
    if not 1 <= limit <= MAX_ROWS:
        raise BadRequest(f"limit must be between 1 and {MAX_ROWS}")
    org = _organization(user, organization_id)
    found = _runs(session, org, project_id, limit, flagged_only)
    found += _refusals(session, org, project_id, limit)  # every one of them is flagged
    found.sort(key=lambda e: (e.time, e.run_id or 0), reverse=True)
    return found[:limit]
