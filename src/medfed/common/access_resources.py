"""API schemas of access governance (applications, entitlements, due view, discovery, budgets).

Shared by the hub's routes and the SDK, kept apart from the tables like
``medfed.common.resources``. :class:`SignedEntitlement` is what a node receives with each
run: the hub's statement of a project's entitlement to one dataset version, signed with
the hub's Ed25519 ledger key over :meth:`EntitlementStatement.text` (a domain-separation
prefix, then canonical JSON), so that a node can check it without trusting the transport.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medfed.common.duo import IntendedUse

ENTITLEMENT_PREFIX = b"medfed-entitlement-v1\n"

__all__ = [
    "ENTITLEMENT_PREFIX",
    "ApplicationCreate",
    "ApplicationEventPublic",
    "ApplicationPublic",
    "ApplicationState",
    "ApplicationUpdate",
    "ApproveRequest",
    "DecisionRequest",
    "DiscoveryDataset",
    "DiscoveryRequest",
    "DiscoveryResult",
    "DueApplication",
    "DueView",
    "EntitlementPublic",
    "EntitlementStatement",
    "IntendedUseIn",
    "QueryBudgetPublic",
    "QueryBudgetSet",
    "SignedEntitlement",
]


class ApplicationState(StrEnum):
    draft = "draft"
    submitted = "submitted"
    returned = "returned"
    approved = "approved"
    rejected = "rejected"
    closed = "closed"
    revoked = "revoked"


class IntendedUseIn(BaseModel):
    """The intended use: DUO purpose codes and the facts DUO modifiers ask about."""

    model_config = ConfigDict(extra="forbid")

    codes: list[str] = Field(default_factory=list, max_length=20)
    commercial: bool = False
    for_profit_organization: bool = False
    methods_development: bool = False
    genetic: bool = False
    collaboration_statement: str = Field(default="", max_length=5000)
    will_publish: bool = True
    will_return_derived_data: bool = False

    def to_duo(self, *, ethics_reference: str, duration_days: int | None) -> IntendedUse:
        return IntendedUse(
            codes=tuple(self.codes),
            commercial=self.commercial,
            for_profit_organization=self.for_profit_organization,
            methods_development=self.methods_development,
            genetic=self.genetic,
            ethics_reference=ethics_reference,
            collaboration_statement=self.collaboration_statement,
            will_publish=self.will_publish,
            will_return_derived_data=self.will_return_derived_data,
            duration_days=duration_days,
        )


class ApplicationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: int
    datasets: list[int] = Field(min_length=1, max_length=200, description="dataset version ids")
    title: str = Field(default="", max_length=300)
    purpose: str = Field(min_length=1, max_length=20000)
    ethics_reference: str = Field(default="", max_length=300)
    intended_use: IntendedUseIn = Field(default_factory=IntendedUseIn)
    duration_days: int = Field(ge=1, le=3660, description="how long access is asked for")


class ApplicationUpdate(BaseModel):
    """Edit a draft or returned application; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[int] | None = Field(default=None, min_length=1, max_length=200)
    title: str | None = Field(default=None, max_length=300)
    purpose: str | None = Field(default=None, min_length=1, max_length=20000)
    ethics_reference: str | None = Field(default=None, max_length=300)
    intended_use: IntendedUseIn | None = None
    duration_days: int | None = Field(default=None, ge=1, le=3660)


class DecisionRequest(BaseModel):
    comment: str = Field(default="", max_length=5000)


class ApproveRequest(DecisionRequest):
    ends_at: datetime = Field(description="required end of the entitlements (UTC)")


class ApplicationEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    actor_id: int
    event: str
    from_state: str | None
    to_state: str
    comment: str
    created_at: datetime


class ApplicationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    organization_id: int
    applicant_id: int
    state: ApplicationState
    title: str
    purpose: str
    ethics_reference: str
    ethics_file_name: str | None
    ethics_file_sha256: str | None
    intended_use: dict[str, Any]
    dataset_ids: list[int]
    duration_days: int
    mismatches: list[str]
    ends_at: datetime | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    decided_at: datetime | None
    events: list[ApplicationEventPublic] = Field(default_factory=list)


class EntitlementPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    application_id: int
    project_id: int
    dataset_id: int
    starts_at: datetime
    ends_at: datetime
    revoked_at: datetime | None
    status: Literal["active", "pending", "expired", "revoked"] = "active"


class DueApplication(BaseModel):
    application: ApplicationPublic
    age_days: float


class DueView(BaseModel):
    pending: list[DueApplication]
    ending: list[EntitlementPublic]


class EntitlementStatement(BaseModel):
    """What the hub signs for one run: who may use which dataset version where, and until when."""

    model_config = ConfigDict(extra="forbid")

    entitlement_id: int | None
    project_id: int
    dataset_id: int
    dataset_name: str
    node_id: int
    manifest_root: str | None = None
    not_before: str
    not_after: str
    revoked: bool
    issued_at: str

    def text(self) -> bytes:
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return ENTITLEMENT_PREFIX + body.encode()


class SignedEntitlement(BaseModel):
    statement: EntitlementStatement
    signature: str = Field(description="base64 Ed25519 signature over statement.text()")


class DiscoveryRequest(BaseModel):
    """A Beacon-style count query: filters AND-ed, answered with a boolean or a count."""

    model_config = ConfigDict(extra="forbid")

    filters: list[dict[str, Any]] = Field(default_factory=list, max_length=50)
    granularity: Literal["boolean", "count"] = "count"
    datasets: list[int] | None = Field(default=None, description="default: every usable one")


class DiscoveryDataset(BaseModel):
    dataset_id: int
    dataset_name: str
    node_name: str
    exists: bool | None = None
    count: int | None = Field(default=None, description="never under the node's threshold")
    count_text: str = ""


class DiscoveryResult(BaseModel):
    id: int
    status: Literal["running", "completed", "failed"]
    granularity: Literal["boolean", "count"]
    exists: bool | None = None
    count: int | None = None
    count_text: str = ""
    datasets: list[DiscoveryDataset] = Field(default_factory=list)
    error: str | None = None
    budget_left: int
    budget_resets_at: datetime | None = None


class QueryBudgetSet(BaseModel):
    """A DAC sets a project's query budget: ``query_budget`` tasks per ``window_hours``.

    ``query_budget`` null goes back to the hub's default (and its window).
    """

    model_config = ConfigDict(extra="forbid")

    query_budget: int | None = Field(ge=0, le=1_000_000)
    window_hours: float | None = Field(default=None, gt=0, le=24 * 366)


class QueryBudgetPublic(BaseModel):
    """A project's query budget for statistical tasks and what is left of it now."""

    project_id: int
    query_budget: int
    window_hours: float
    default: bool = Field(description="true while no DAC set a budget (the hub's default)")
    used: int = Field(description="tasks created in the last window")
    left: int
    resets_at: datetime | None = Field(
        default=None, description="when the next task is possible again once none is left"
    )
