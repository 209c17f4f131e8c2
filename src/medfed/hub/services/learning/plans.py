"""Training plans at the hub: researchers submit source; nodes fetch it by hash.

A plan's identity is :func:`medfed.algorithms.learning.plan.plan_hash` of its source.
Submitting the same source twice returns the stored plan (one row per hash). The hub
never imports or runs a plan; it stores and hands out the text, and nodes decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.algorithms.learning.plan import is_plan_hash, normalize_source, plan_hash
from medfed.common.errors import BadRequest, NotFound
from medfed.hub.config import HubSettings
from medfed.hub.db.models import User
from medfed.hub.db.models_fl import TrainingPlan
from medfed.hub.services.learning import blobs
from medfed.hub.services.ledger import actor_of, record

__all__ = ["get_plan", "list_plans", "require_training_inputs", "submit_plan"]

MAX_SOURCE = 1_000_000


def submit_plan(session: Session, *, actor: User, name: str, source: str) -> TrainingPlan:
    if not source.strip():
        raise BadRequest("the plan source is empty")
    if len(source) > MAX_SOURCE:
        raise BadRequest(f"the plan source is longer than {MAX_SOURCE} characters")
    try:
        compile(source, name or "plan.py", "exec")  # syntax only; nothing runs
    except SyntaxError as exc:
        raise BadRequest(f"the plan is not valid Python: line {exc.lineno}: {exc.msg}") from None
    digest = plan_hash(source)
    existing = session.scalar(select(TrainingPlan).where(TrainingPlan.hash == digest))
    if existing is not None:
        return existing
    plan = TrainingPlan(
        hash=digest, name=name or "plan", source=normalize_source(source), submitted_by=actor.id
    )
    session.add(plan)
    session.flush()
    record(
        session,
        action="plan.submit",
        actor=actor_of(actor),
        objects={"plan": plan.id, "name": plan.name},
        hashes={"plan": digest},
    )
    return plan


def get_plan(session: Session, *, plan_hash_: str) -> TrainingPlan:
    if not is_plan_hash(plan_hash_):
        raise BadRequest(f"{plan_hash_!r} is not a plan hash (64 hex digits)")
    plan = session.scalar(select(TrainingPlan).where(TrainingPlan.hash == plan_hash_))
    if plan is None:
        raise NotFound(f"plan {plan_hash_} not found")
    return plan


def list_plans(session: Session) -> list[TrainingPlan]:
    return list(session.scalars(select(TrainingPlan).order_by(TrainingPlan.id)))


def require_training_inputs(
    session: Session, *, settings: HubSettings, params: Mapping[str, Any]
) -> None:
    """A training's plan and initial weights must be at the hub (API and web alike)."""
    get_plan(session, plan_hash_=str(params.get("plan", "")))
    initial = str(params.get("initial_weights", ""))
    if not initial or not blobs.store_for(settings).exists(initial):
        raise NotFound(f"initial weights {initial!r} are not at the hub (upload them first)")
