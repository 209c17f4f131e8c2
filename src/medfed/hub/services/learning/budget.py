"""A project's differential-privacy budget (ε, δ): set by an admin or DAC member.

Every ``fl.train`` with ``dp`` records its ε after each round (``fl_privacy_spend``); the
hub refuses to run a round that would take the project's trainings past ε in total
(:func:`medfed.hub.services.learning.context.hub_context` hands the rest to the round).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medfed.common.errors import Forbidden, NotFound
from medfed.common.learning_resources import PrivacyBudgetPublic
from medfed.common.resources import Role
from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Project, User
from medfed.hub.db.models_fl import PrivacyBudget, PrivacySpend
from medfed.hub.services.accounts import has_role
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.projects import get_project
from medfed.ledger.entries import content_hash

__all__ = ["get_budget", "set_budget"]


def _spent(session: Session, project_id: int) -> float:
    total = session.scalar(
        select(func.coalesce(func.sum(PrivacySpend.epsilon), 0.0)).where(
            PrivacySpend.project_id == project_id
        )
    )
    return float(total or 0.0)


def set_budget(
    session: Session, *, actor: User, project_id: int, epsilon: float, delta: float
) -> PrivacyBudgetPublic:
    if not (has_role(actor, Role.admin) or has_role(actor, Role.dac)):
        raise Forbidden("setting a project's privacy budget needs the admin or dac role")
    if session.get(Project, project_id) is None:
        raise NotFound(f"project {project_id} not found")
    budget = session.get(PrivacyBudget, project_id)
    if budget is None:
        budget = PrivacyBudget(project_id=project_id, epsilon=epsilon, delta=delta, set_by=actor.id)
        session.add(budget)
    budget.epsilon, budget.delta, budget.set_by, budget.updated_at = (
        epsilon,
        delta,
        actor.id,
        utcnow(),
    )
    session.flush()
    record(
        session,
        action="privacy.budget",
        actor=actor_of(actor),
        objects={"project": project_id},
        hashes={"budget": content_hash({"epsilon": epsilon, "delta": delta})},
    )
    return PrivacyBudgetPublic(
        project_id=project_id, epsilon=epsilon, delta=delta, spent=_spent(session, project_id)
    )


def get_budget(session: Session, *, user: User, project_id: int) -> PrivacyBudgetPublic | None:
    get_project(session, project_id=project_id, user=user)
    budget = session.get(PrivacyBudget, project_id)
    if budget is None:
        return None
    return PrivacyBudgetPublic(
        project_id=project_id,
        epsilon=budget.epsilon,
        delta=budget.delta,
        spent=_spent(session, project_id),
    )
