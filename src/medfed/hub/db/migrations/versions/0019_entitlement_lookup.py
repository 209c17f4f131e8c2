"""an index for a project's entitlements on one dataset (issue 18)

Revision ID: 0019
Revises: 0018

Every claim asks for the project's active entitlement on the run's dataset, and every
task's entitlement check asks the same per dataset. With ``ix_entitlements_project_id``
alone, SQLite walked every entitlement of the project on each claim: a project entitled
to 1,000 datasets read 1,000 rows per claim. ``ix_entitlements_project_dataset`` finds
them directly.
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision: str | None = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_entitlements_project_dataset", "entitlements", ["project_id", "dataset_id"])


def downgrade() -> None:
    op.drop_index("ix_entitlements_project_dataset", table_name="entitlements")
