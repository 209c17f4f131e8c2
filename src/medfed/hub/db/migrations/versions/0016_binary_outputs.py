"""binary run outputs (issue 18)

Revision ID: 0016
Revises: 0015

``runs.output_blob``: the SHA-256 of the blob that holds a binary output's arrays
(``medfed.common.arrays``); the run's ``output`` keeps the small JSON part with references.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision: str | None = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("output_blob", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("output_blob")
