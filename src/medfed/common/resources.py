"""API schemas of the hub's resources (``XCreate`` in, ``XPublic`` out), shared with the SDK.

These are kept apart from the database tables: a table can change without changing what
the API promises, and the SDK returns exactly these typed objects (never bare dicts).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfed.common.access_resources import SignedEntitlement
from medfed.common.schemas import ColumnSchema

Name = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")


class Role(StrEnum):
    admin = "admin"
    steward = "steward"
    researcher = "researcher"
    dac = "dac"
    auditor = "auditor"


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=200)
    otp: str | None = Field(
        default=None,
        pattern=r"^[0-9]{6}$",
        description="TOTP code (6 digits), for an account with a second factor",
    )
    recovery_code: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9 -]{12,20}$",
        description="one single-use recovery code, instead of otp",
    )


class TokenCreate(BaseModel):
    name: str = Field(default="api", min_length=1, max_length=200)
    days: int = Field(default=30, ge=1, le=366)


class TokenPublic(Public):
    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="shown once; the hub stores only its digest")


class OrganizationCreate(BaseModel):
    name: str = Name


class OrganizationPublic(Public):
    id: int
    name: str
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(min_length=2, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    password: str = Field(min_length=8, max_length=200)
    email: str | None = Field(default=None, max_length=300)
    organization_id: int
    roles: list[Role] = Field(default_factory=lambda: [Role.researcher])


class UserPublic(Public):
    id: int
    username: str
    email: str | None
    organization_id: int
    roles: list[Role]
    is_superuser: bool
    created_at: datetime


class ProjectCreate(BaseModel):
    name: str = Name
    description: str = Field(default="", max_length=5000)
    organization_id: int | None = None


class ProjectPublic(Public):
    id: int
    name: str
    description: str
    organization_id: int
    created_at: datetime
    members: list[int] = Field(default_factory=list)


class MemberAdd(BaseModel):
    user_id: int


class NodeCreate(BaseModel):
    name: str = Name
    organization_id: int


class NodePublic(Public):
    id: int
    name: str
    organization_id: int
    created_at: datetime
    last_seen_at: datetime | None
    online: bool = False


class NodeCreated(NodePublic):
    secret: str = Field(description="shown once; put it in the node's node.toml")


class DatasetRegister(BaseModel):
    """What a node tells the hub about one of its datasets (no rows, no exact small counts)."""

    name: str = Name
    description: str = Field(default="", max_length=5000)
    columns: list[ColumnSchema] = Field(min_length=1, max_length=2000)
    row_count: int | None = Field(default=None, ge=0)
    summary: dict[str, Any] | None = Field(
        default=None,
        description="catalogue aggregates computed at ingest (counts already gated by the node)",
    )
    manifest_root: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="RFC 9162 hash-tree root over the dataset's rows (medfed.node.manifest)",
    )

    @field_validator("columns")
    @classmethod
    def _unique_column_names(cls, columns: list[ColumnSchema]) -> list[ColumnSchema]:
        seen: set[str] = set()
        for column in columns:
            if column.name in seen:
                raise ValueError(f"column '{column.name}' is named twice")
            seen.add(column.name)
        return columns


class DatasetPublic(Public):
    id: int
    node_id: int
    node_name: str
    name: str
    description: str
    columns: list[ColumnSchema]
    row_count: int | None
    summary: dict[str, Any] | None = None
    updated_at: datetime
    version: int = 1
    state: str = "draft"
    pid: str | None = None
    previous_id: int | None = None
    next_id: int | None = None
    manifest_root: str | None = None


class TaskCreate(BaseModel):
    project_id: int
    algorithm: str = Field(min_length=1, max_length=100)
    datasets: list[int | str] = Field(
        min_length=1,
        description="dataset ids, names (every dataset of that name) or 'node/name'",
    )
    params: dict[str, Any] = Field(default_factory=dict)


class TaskStatus(StrEnum):
    running = "running"
    completed = "completed"
    failed = "failed"


class RunStatus(StrEnum):
    pending = "pending"
    claimed = "claimed"
    done = "done"
    failed = "failed"
    refused = "refused"


class NodeRunStatus(Public):
    """One node's share of a task as the researcher sees it: its status, never its values.

    ``output_status`` is not shown to researchers (always None in the API): whether a
    node contributed or withheld would tell which hospital held few matching rows. The
    task's ``contributing_nodes`` and ``withheld_nodes`` give the counts instead.
    """

    run_id: int
    node_id: int
    node_name: str
    dataset_id: int
    round: int
    status: RunStatus
    output_status: Literal["ok", "suppressed"] | None = None
    attempts: int
    error: str | None = None


class TaskPublic(Public):
    id: int
    project_id: int
    algorithm: str
    algorithm_version: str
    params: dict[str, Any]
    dataset_ids: list[int]
    status: TaskStatus
    round: int
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    runs: list[NodeRunStatus] = Field(default_factory=list)
    contributing_nodes: int = Field(
        default=0, description="nodes whose answer went into the latest round (never which)"
    )
    withheld_nodes: int = Field(
        default=0, description="nodes that answered but withheld their output (never which)"
    )


def progress_mark(task: TaskPublic) -> int:
    """A number that grows as the task moves on: its round and its answered first-round runs.

    The long poll (``GET /api/tasks/{id}/wait?seen_runs_done=``) returns early once it
    differs from the client's last one.
    """
    answered = sum(1 for r in task.runs if r.status not in (RunStatus.pending, RunStatus.claimed))
    return task.round * 100_000 + answered


class RunAssignment(BaseModel):
    """A run handed to a node with a lease; the node echoes ``lease_id`` with its answer."""

    run_id: int
    task_id: int
    project_id: int
    round: int
    algorithm: str
    algorithm_version: str
    params: dict[str, Any]
    state: dict[str, Any]
    dataset_id: int
    dataset_name: str
    lease_id: str
    lease_expires_at: datetime
    attempt: int
    entitlement: SignedEntitlement | None = Field(
        default=None, description="the hub's signed statement of the project's entitlement"
    )
    discovery: bool = Field(default=False, description="a count-discovery run (no entitlement)")
    task_nodes: int = Field(
        default=0, ge=0, description="how many distinct nodes hold the task's datasets"
    )


#: what decided a run at its node, as a category only (never counts, values or reasons):
#: ``none`` (released, or failed without a rule), an output rule (``threshold``, ``grid``,
#: ``dominance``), a row-set rule (``subset``, ``differencing``), the local step's own
#: check (``local``), the node's policy (``policy``) or a privacy budget (``budget``)
RuleCategory = Literal[
    "none",
    "threshold",
    "grid",
    "dominance",
    "subset",
    "differencing",
    "local",
    "policy",
    "budget",
]
RULE_CATEGORIES: tuple[str, ...] = get_args(RuleCategory)


class RunOutcome(BaseModel):
    """A node's answer: gated output, or a refusal/failure with its reason."""

    lease_id: str
    status: Literal["done", "refused", "failed"]
    output_status: Literal["ok", "suppressed"] | None = None
    output: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=5000)
    duration_s: float | None = None
    filter_hash: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="HMAC-SHA-256 of the task's filter, keyed by the node (equal filters, "
        "equal hashes; the hub cannot test guesses)",
    )
    rowset_fingerprint: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="keyed fingerprint of the row sets the run used (none if it used none)",
    )
    rule: RuleCategory | None = Field(
        default=None,
        description="which kind of rule decided (category only, for the data's stewards; "
        "never shown to researchers)",
    )


class OutcomeAccepted(BaseModel):
    """The hub's answer to a node's outcome: the run's status now, and (asked with
    ``?next=true``) the node's next run, claimed in the same transaction, or null."""

    status: str
    next: RunAssignment | None = None


class Heartbeat(BaseModel):
    run_ids: list[int] = Field(default_factory=list, description="runs whose leases to extend")


class HeartbeatAck(BaseModel):
    node_id: int
    extended: list[int]
    lost: list[int] = Field(description="runs this node no longer holds (lease expired)")


class NodeIdentity(BaseModel):
    id: int
    name: str
    organization_id: int


class LedgerKeys(BaseModel):
    """The hub's checkpoint key and each witness node's key (base64 Ed25519)."""

    origin: str
    hub_key: str
    witnesses: dict[str, str]


class LedgerCheckpointPublic(BaseModel):
    origin: str
    size: int
    root: str
    time: str
    signature: str
    cosignatures: dict[str, str] = Field(default_factory=dict)


class LedgerEntryPublic(BaseModel):
    index: int
    body: str = Field(description="the entry's canonical JSON, exactly the hashed bytes")


class InclusionProof(BaseModel):
    index: int
    size: int
    leaf: str
    proof: list[str]


class ConsistencyProof(BaseModel):
    first: int
    second: int
    proof: list[str]


class WitnessKey(BaseModel):
    public_key: str = Field(min_length=40, max_length=100)


class NodeFact(BaseModel):
    """A keyed hash a node puts in the hub's audit log (no values: a hash of its register)."""

    model_config = ConfigDict(extra="forbid")  # nothing but the kind and the hash

    kind: Literal["optout.register"]
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class Cosignature(BaseModel):
    size: int = Field(ge=1)
    signature: str = Field(min_length=40, max_length=200)


class AirlockEvent(BaseModel):
    """A node's airlock event on a run it holds: its ledger entry has ids and a hash only."""

    event: Literal["held", "released", "refused"]
    outputs_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the run's outputs as the node holds them"
    )
