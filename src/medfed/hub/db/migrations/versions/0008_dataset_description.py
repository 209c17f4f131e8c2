"""datasets described by their authors: contact point, licence, who wrote the description

Revision ID: 0008
Revises: 0007

``described`` is NOT NULL: existing rows get ``false`` through a server default, which is
then dropped (the model sets its default in Python).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("contact", sa.String(length=300), nullable=True))
    op.add_column("datasets", sa.Column("license", sa.String(length=300), nullable=True))
    op.add_column(
        "datasets",
        sa.Column("described", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    with op.batch_alter_table("datasets") as batch:
        batch.alter_column("described", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("described")
        batch.drop_column("license")
        batch.drop_column("contact")
