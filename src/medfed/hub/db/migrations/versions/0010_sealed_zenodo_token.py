"""organizations' Zenodo tokens stored sealed (encrypted), so the column grows to text

Revision ID: 0010
Revises: 0009

A sealed token (``medfed.hub.keys.seal``: ``enc:v1:`` and a Fernet token) is longer than
the 300 characters the plain token had. Tokens already stored in plain text are sealed by
the hub when it starts (``zenodo.seal_stored_tokens``; the key comes from its secret,
which a migration does not know).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("catalogue_settings") as batch:
        batch.alter_column(
            "zenodo_token", type_=sa.Text(), existing_type=sa.String(length=300), nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("catalogue_settings") as batch:
        batch.alter_column(
            "zenodo_token", type_=sa.String(length=300), existing_type=sa.Text(), nullable=True
        )
