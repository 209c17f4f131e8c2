"""hub hot-path indexes (issue 18)

Revision ID: 0019
Revises: 0018

Placeholder: no schema change yet.
"""

from __future__ import annotations

revision = "0019"
down_revision: str | None = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
