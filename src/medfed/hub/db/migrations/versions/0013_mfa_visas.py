"""multi-factor authentication (TOTP, recovery codes) and external GA4GH visas (issue 15)

Revision ID: 0013
Revises: 0012

``mfa_totp`` holds one sealed TOTP secret per user (``confirmed_at`` empty until the first
valid code; ``last_step`` the time step of the last accepted code, against replay);
``mfa_recovery_codes`` the argon2 hashes of single-use recovery codes;
``external_visas`` the verified claims of visas from trusted issuers attached to access
applications as evidence.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision: str | None = "0012"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mfa_totp",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("confirmed_at", _TS, nullable=True),
        sa.Column("last_step", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id"),
    )
    op.create_table(
        "mfa_recovery_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=300), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_mfa_recovery_codes_user_id", "mfa_recovery_codes", ["user_id"])
    op.create_table(
        "external_visas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("added_by", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("visa_type", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("asserted_by", sa.String(length=100), nullable=True),
        sa.Column("asserted_at", _TS, nullable=True),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("jwt_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["added_by"], ["users.id"]),
        sa.ForeignKeyConstraint(["application_id"], ["access_applications.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_external_visas_application_id", "external_visas", ["application_id"])


def downgrade() -> None:
    op.drop_index("ix_external_visas_application_id", table_name="external_visas")
    op.drop_table("external_visas")
    op.drop_index("ix_mfa_recovery_codes_user_id", table_name="mfa_recovery_codes")
    op.drop_table("mfa_recovery_codes")
    op.drop_table("mfa_totp")
