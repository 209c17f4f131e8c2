"""query budgets per project, budget refusals, run audit hashes

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # plain ADD COLUMN of nullable columns: works on SQLite and PostgreSQL alike
    op.add_column("projects", sa.Column("query_budget", sa.Integer(), nullable=True))
    op.add_column("projects", sa.Column("query_window_hours", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("filter_hash", sa.String(length=64), nullable=True))
    op.add_column("runs", sa.Column("rowset_fingerprint", sa.String(length=64), nullable=True))
    op.add_column("runs", sa.Column("rule", sa.String(length=20), nullable=True))
    op.create_table(
        "query_refusals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.String(length=100), nullable=False),
        sa.Column("dataset_ids", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("rule", sa.String(length=20), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_query_refusals_project_id", "query_refusals", ["project_id"])
    op.create_index("ix_query_refusals_created_at", "query_refusals", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_query_refusals_created_at", table_name="query_refusals")
    op.drop_index("ix_query_refusals_project_id", table_name="query_refusals")
    op.drop_table("query_refusals")
    with op.batch_alter_table("runs") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("rule")
        batch.drop_column("rowset_fingerprint")
        batch.drop_column("filter_hash")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("query_window_hours")
        batch.drop_column("query_budget")
