"""A project's differential-privacy budget (ε, δ): set by the DAC of the data, or a superuser.

Who may set it: a user with the ``dac`` role in an organization whose node holds a dataset
the project is entitled to now (an entitlement neither revoked nor ended), or the hub
administrator. A DAC of any other organization gets 403. Project members read it.

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
from medfed.hub.db.models import Dataset, Node, Project, User
from medfed.hub.db.models_access import Entitlement
from medfed.hub.db.models_fl import PrivacyBudget, PrivacySpend
from medfed.hub.services.accounts import has_role
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.projects import get_project
from medfed.ledger.entries import content_hash

__all__ = ["get_budget", "holds_entitled_data", "set_budget"]


def _spent(session: Session, project_id: int) -> float:
    total = session.scalar(
        select(func.coalesce(func.sum(PrivacySpend.epsilon), 0.0)).where(
            PrivacySpend.project_id == project_id
        )
    )
    return float(total or 0.0)


def holds_entitled_data(session: Session, user: User, project_id: int) -> bool:
    """A DAC member of an organization holding data the project is entitled to (or superuser)."""
    if user.is_superuser:
        return True
    if not has_role(user, Role.dac):
        return False
    found = session.scalar(
        select(Entitlement.id)
        .join(Dataset, Dataset.id == Entitlement.dataset_id)
        .join(Node, Node.id == Dataset.node_id)
        .where(
            Entitlement.project_id == project_id,
            Entitlement.revoked_at.is_(None),
            Entitlement.ends_at > utcnow(),
            Node.organization_id == user.organization_id,
        )
        .limit(1)
    )
    return found is not None


def set_budget(
    session: Session, *, actor: User, project_id: int, epsilon: float, delta: float
) -> PrivacyBudgetPublic:
    if not holds_entitled_data(session, actor, project_id):
        raise Forbidden(
            f"setting project {project_id}'s privacy budget needs the dac role in an "
            "organization holding data the project is entitled to"
        )
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
