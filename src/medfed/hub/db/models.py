"""SQLAlchemy 2 tables of the hub. Schema changes go through Alembic migrations.

Secrets are never stored: passwords as argon2 hashes, API tokens and node secrets as
SHA-256 of high-entropy random strings. Run outputs hold only gated aggregates.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from medfed.common.timeutil import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that stores UTC and reads back aware UTC on every backend.

    SQLite keeps no zone (it would hand back naive values, PostgreSQL aware ones in the
    server's zone); naive values are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str | None] = mapped_column(String(300))
    password_hash: Mapped[str] = mapped_column(String(300))
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    roles: Mapped[list[Any]] = mapped_column(default=list)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    organization: Mapped[Organization] = relationship()


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: statistical tasks per window, set by a DAC (None: the hub's default)
    query_budget: Mapped[int | None] = mapped_column(Integer)
    query_window_hours: Mapped[float | None] = mapped_column(Float)


class ProjectMember(Base):
    __tablename__ = "project_members"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]
    min_cell_count: Mapped[int | None] = mapped_column(Integer)
    public_key: Mapped[str | None] = mapped_column(String(100))

    organization: Mapped[Organization] = relationship()


class Dataset(Base):
    """One immutable version of a dataset; tasks, runs and entitlements name version ids.

    A node's re-registration with a different content manifest adds a new row linked by
    ``previous_id``/``next_id``; ``state`` follows the lifecycle of
    ``medfed.hub.services.catalogue.lifecycle``. The DCAT fields are the catalogue metadata.
    """

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("node_id", "name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    next_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    state: Mapped[str] = mapped_column(String(20), default="draft", index=True)
    manifest_root: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[str | None] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    columns: Mapped[list[Any]] = mapped_column(default=list)
    row_count: Mapped[int | None] = mapped_column(Integer)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    title: Mapped[str | None] = mapped_column(String(300))
    keywords: Mapped[list[Any]] = mapped_column(default=list)
    themes: Mapped[list[Any]] = mapped_column(default=list)
    access_rights: Mapped[str] = mapped_column(String(20), default="NON_PUBLIC")
    access_conditions: Mapped[list[Any]] = mapped_column(default=list)
    duo_codes: Mapped[list[Any]] = mapped_column(default=list)
    unique_individuals: Mapped[int | None] = mapped_column(Integer)
    records: Mapped[int | None] = mapped_column(Integer)
    contact: Mapped[str | None] = mapped_column(String(300))
    license: Mapped[str | None] = mapped_column(String(300))
    # its authors described it: the node's description no longer replaces theirs
    described: Mapped[bool] = mapped_column(Boolean, default=False)
    invalidation_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    invalidated_at: Mapped[datetime | None]
    reactivated_at: Mapped[datetime | None]

    node: Mapped[Node] = relationship()


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # one task per (user, Idempotency-Key): a retried submission finds the first
        UniqueConstraint(
            "created_by", "idempotency_key", name="uq_tasks_created_by_idempotency_key"
        ),
        # a project's tasks in its query-budget window, counted from the index alone (every
        # submission; migration 0020)
        Index("ix_tasks_project_created", "project_id", "created_at", "algorithm"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    algorithm: Mapped[str] = mapped_column(String(100))
    algorithm_version: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_ids: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default="running", index=True)
    round: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    #: the submitter's Idempotency-Key and the SHA-256 of the request it came with
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_sha256: Mapped[str | None] = mapped_column(String(64))


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("task_id", "round", "dataset_id"),
        # a node's pending or claimed runs (every poll, claim and lease check), in id order
        Index("ix_runs_node_status", "node_id", "status"),
        # a round's runs counted by status from the index alone (every answer)
        Index("ix_runs_task_round_status", "task_id", "round", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    round: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_id: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    output_status: Mapped[str | None] = mapped_column(String(20))
    #: SQL NULL where there is no output (the answer's Core update binds None)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    #: SHA-256 of the blob holding a binary output's arrays (``medfed.common.arrays``)
    output_blob: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_s: Mapped[float | None] = mapped_column(Float)
    #: the node's keyed hashes of the run's filter and row sets, and the rule category
    #: that decided (stewards only; never shown to researchers)
    filter_hash: Mapped[str | None] = mapped_column(String(64))
    rowset_fingerprint: Mapped[str | None] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(20))


class LedgerHead(Base):
    """One row: the tree size, the last leaf hash and the right edge of perfect subtrees."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    last_leaf: Mapped[str] = mapped_column(String(64))
    frontier: Mapped[list[Any]] = mapped_column(default=list)


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    idx: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    body: Mapped[str] = mapped_column(Text)
    leaf: Mapped[str] = mapped_column(String(64))


class LedgerNode(Base):
    """Hash of a perfect subtree: ``2**level`` leaves from ``idx * 2**level``."""

    __tablename__ = "ledger_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))


class LedgerCheckpoint(Base):
    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(64))
    time: Mapped[str] = mapped_column(String(40))
    signature: Mapped[str] = mapped_column(String(200))


class LedgerCosignature(Base):
    __tablename__ = "ledger_cosignatures"

    size: Mapped[int] = mapped_column(
        ForeignKey("ledger_checkpoints.size"), primary_key=True, autoincrement=False
    )
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), primary_key=True)
    signature: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Tables of the other parts live in their own modules; importing them here registers them
# on ``Base.metadata`` (Alembic and the schema checks read that).
from medfed.hub.db import (  # noqa: E402, F401
    models_access,
    models_catalogue,
    models_cohorts,
    models_fl,
    models_identity,
    models_mfa,
    models_validation,
)
