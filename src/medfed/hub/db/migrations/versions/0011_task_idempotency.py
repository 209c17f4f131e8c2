"""task idempotency keys (issue 14): ``Idempotency-Key`` of ``POST /api/tasks``

Revision ID: 0011
Revises: 0010

Two nullable columns on ``tasks`` — the key a user sent and the SHA-256 of the request
body it came with — and a unique constraint on (``created_by``, ``idempotency_key``): two
requests with one key create one task, even when they race (NULL keys never clash).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("request_sha256", sa.String(length=64), nullable=True))
        batch.create_unique_constraint(
            "uq_tasks_created_by_idempotency_key", ["created_by", "idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint("uq_tasks_created_by_idempotency_key", type_="unique")
        batch.drop_column("request_sha256")
        batch.drop_column("idempotency_key")
