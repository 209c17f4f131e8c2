"""saved cohorts (issue 16)

Revision ID: 0014
Revises: 0013

``cohorts``: a project's saved cohorts (name unique in the project). ``cohort_versions``:
each cohort's immutable Circe definitions, numbered, with the SHA-256 of the canonical
JSON (``definition_hash``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision: str | None = "0013"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cohorts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=5000), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_index("ix_cohorts_project_id", "cohorts", ["project_id"])
    op.create_table(
        "cohort_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cohort_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("definition_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["cohort_id"], ["cohorts.id"]),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cohort_id", "version"),
    )
    op.create_index("ix_cohort_versions_cohort_id", "cohort_versions", ["cohort_id"])
    op.create_index("ix_cohort_versions_definition_hash", "cohort_versions", ["definition_hash"])


def downgrade() -> None:
    op.drop_index("ix_cohort_versions_definition_hash", table_name="cohort_versions")
    op.drop_index("ix_cohort_versions_cohort_id", table_name="cohort_versions")
    op.drop_table("cohort_versions")
    op.drop_index("ix_cohorts_project_id", table_name="cohorts")
    op.drop_table("cohorts")
