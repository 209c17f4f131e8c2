"""shared blob store in the database (issue 18)

Revision ID: 0017
Revises: 0016

``blob_contents``/``blob_chunks``: the bytes of blobs when the hub keeps them in PostgreSQL
(``blob_store = "database"``, the default there), so every hub process reads and writes
the same blobs without a shared volume. ``sha256`` stays NULL while an upload is being
written; the chunks (1 MiB each) go with their content (``ON DELETE CASCADE``) and are
kept uncompressed out of line on PostgreSQL (``STORAGE EXTERNAL``: weights hardly
compress, and trying costs CPU on every write). The tables
exist on SQLite too (one schema), where the default store stays files.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision: str | None = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_contents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_index("ix_blob_contents_created_at", "blob_contents", ["created_at"])
    op.create_table(
        "blob_chunks",
        sa.Column(
            "content_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["content_id"], ["blob_contents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("content_id", "seq"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # weights and arrays hardly compress: store chunks out of line without trying
        op.execute("ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("blob_chunks")
    op.drop_index("ix_blob_contents_created_at", table_name="blob_contents")
    op.drop_table("blob_contents")
