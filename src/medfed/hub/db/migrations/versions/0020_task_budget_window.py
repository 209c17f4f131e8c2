"""an index for a project's tasks in its query-budget window (issue 18)

Revision ID: 0020
Revises: 0019

Every submission counts the project's budgeted tasks created since the window began. With
``ix_tasks_project_id`` alone, SQLite read every task the project ever made, each from the
table (its time and its algorithm), on each submission: the check's cost grew with the
project's history, not its window (5,000 tasks: 1.6 ms a submission). The index on
(project, created_at, algorithm) finds the window's tasks as a range and counts them
from the index alone.
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision: str | None = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_project_created", "tasks", ["project_id", "created_at", "algorithm"])


def downgrade() -> None:
    op.drop_index("ix_tasks_project_created", table_name="tasks")
