"""A training's progress for its researcher: phase, per-round metrics and timings.

Timings come from the runs themselves: a task round starts when its runs are created
(the moment the previous round was aggregated) and lasts until the next round's runs are
created (or the task finished). ``node_seconds`` are the nodes' own step durations, so
``seconds - max(node_seconds)`` is the orchestration overhead of that round.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from medfed.common.errors import BadRequest
from medfed.common.learning_resources import RoundTiming, TrainingProgress
from medfed.hub.db.models import Run, User
from medfed.hub.services.tasks import TERMINAL, get_task

__all__ = ["training_progress"]


def training_progress(session: Session, *, user: User, task_id: int) -> TrainingProgress:
    task = get_task(session, task_id=task_id, user=user)
    if task.algorithm != "fl.train":
        raise BadRequest(f"task {task_id} is a {task.algorithm} task, not a training")
    state: dict[str, Any] = task.state or {}
    result: dict[str, Any] = task.result or {}
    runs = list(
        session.scalars(
            select(Run).options(defer(Run.output)).where(Run.task_id == task.id).order_by(Run.id)
        )
    )
    by_round: dict[int, list[Run]] = {}
    for run in runs:
        by_round.setdefault(run.round, []).append(run)
    log = list(state.get("phase_log") or [["prepare", 0]])
    timings: list[RoundTiming] = []
    rounds = sorted(by_round)
    for index, number in enumerate(rounds):
        group = by_round[number]
        started = min(r.created_at for r in group)
        if index + 1 < len(rounds):
            ended = min(r.created_at for r in by_round[rounds[index + 1]])
        elif all(r.status in TERMINAL for r in group):
            ended = task.finished_at or max(r.finished_at or started for r in group)
        else:
            ended = None
        phase, train_round = log[number] if number < len(log) else [None, None]
        timings.append(
            RoundTiming(
                round=number,
                phase=phase,
                train_round=train_round,
                started_at=started,
                finished_at=ended,
                seconds=(ended - started).total_seconds() if ended else None,
                runs=len(group),
                done=sum(1 for r in group if r.status == "done"),
                node_seconds=[r.duration_s for r in group if r.duration_s is not None],
            )
        )
    return TrainingProgress(
        task_id=task.id,
        status=task.status,
        phase=None if task.status != "running" else str(state.get("phase", "prepare")),
        train_round=int(result.get("rounds", state.get("train_round", 0))),
        rounds=int(task.params.get("rounds", 0)),
        history=list(result.get("history") or state.get("history") or []),
        timings=timings,
        privacy=result.get("privacy") or state.get("privacy"),
        error=task.error,
    )
