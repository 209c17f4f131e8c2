"""indexes for a node's runs by status and a round's runs by status (issue 18)

Revision ID: 0018
Revises: 0017

With 1,000 nodes, every poll's pending-run check, every claim and every lease check asks
for one node's runs in one status; with single-column indexes SQLite walked every pending
run of every node (quadratic in a round's size). ``ix_runs_node_status`` answers them
directly; ``ix_runs_task_round_status`` lets each answer count its round's runs by status
from the index alone.
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision: str | None = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_node_status", "runs", ["node_id", "status"])
    op.create_index("ix_runs_task_round_status", "runs", ["task_id", "round", "status"])


def downgrade() -> None:
    op.drop_index("ix_runs_task_round_status", table_name="runs")
    op.drop_index("ix_runs_node_status", table_name="runs")
