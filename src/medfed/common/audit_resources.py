"""API schemas of the stewards' audit view: the queries made on their organization's data.

One :class:`QueryAuditEntry` per run at one of the steward's datasets (a multi-round task
has one per round), plus one per task the hub refused for its project's query budget
(``run_id`` and ``task_id`` null). ``rule`` is the category the node sent with its
outcome (``medfed.node.audit``) or ``budget``; ``flagged`` marks the refusals by the
differencing, subset and budget rules. Only stewards of the data's organization (and the
hub administrator) may read these: researchers never see a rule.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from medfed.common.resources import RuleCategory

__all__ = ["FLAGGED_RULES", "QueryAuditEntry"]

#: the rules whose refusals the steward's view flags (repeated ones suggest an attack)
FLAGGED_RULES = ("differencing", "subset", "budget")


class QueryAuditEntry(BaseModel):
    time: datetime = Field(description="when the task was asked for")
    project_id: int
    project_name: str
    task_id: int | None = None
    run_id: int | None = None
    round: int | None = None
    researcher: str = Field(description="username of who created the task")
    algorithm: str
    dataset_id: int
    dataset_name: str
    node_name: str
    filter_text: str = Field(description="the task's filter as text ('' when none)")
    filter_hash: str | None = Field(default=None, description="the node's keyed filter hash")
    rowset_fingerprint: str | None = None
    status: str = Field(description="the run's status, or 'refused' for a hub refusal")
    decision: str = Field(description="released, withheld, refused, failed or waiting")
    rule: RuleCategory | None = None
    flagged: bool = Field(
        default=False, description="refused by the differencing, subset or budget rule"
    )
