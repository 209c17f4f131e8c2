"""blobs remember the user who uploaded them (per-user blob quota)

Revision ID: 0009
Revises: 0008

``fl_blobs.user_id`` names the user whose ``PUT /api/blobs`` stored the blob first; the
hub sums these sizes against ``blob_quota_bytes``. Blobs written by nodes or by the hub
itself have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fl_blobs") as batch:
        batch.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch.create_index("ix_fl_blobs_user_id", ["user_id"])
        batch.create_foreign_key("fk_fl_blobs_user_id_users", "users", ["user_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("fl_blobs") as batch:
        batch.drop_constraint("fk_fl_blobs_user_id_users", type_="foreignkey")
        batch.drop_index("ix_fl_blobs_user_id")
        batch.drop_column("user_id")
