"""catalogue: dataset versions, lifecycle, persistent ids, DCAT metadata; Zenodo tables

Revision ID: 0004
Revises: 0003

Datasets that existed before this revision become version 1 in state ``released`` (they
were usable before; nothing that ran on them stops working). New NOT NULL columns get a
server default while existing rows are filled, which is then dropped (the models set
their defaults in Python).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# names unnamed constraints that SQLite reflects without one, so batch mode can drop them
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
_FILLED: dict[str, tuple[str, sa.types.TypeEngine[Any]]] = {
    "version": ("1", sa.Integer()),
    "state": ("'released'", sa.String(length=20)),
    "keywords": ("'[]'", sa.JSON()),
    "themes": ("'[]'", sa.JSON()),
    "access_rights": ("'NON_PUBLIC'", sa.String(length=20)),
    "access_conditions": ("'[]'", sa.JSON()),
    "duo_codes": ("'[]'", sa.JSON()),
}


def _old_unique_name() -> str:
    if op.get_bind().dialect.name == "sqlite":
        return "uq_datasets_node_id_name"
    return "datasets_node_id_name_key"  # PostgreSQL's name for the unnamed constraint


def upgrade() -> None:
    op.create_table(
        "catalogue_settings",
        sa.Column("organization_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("zenodo_url", sa.String(length=300), nullable=False),
        sa.Column("zenodo_token", sa.String(length=300), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("organization_id"),
    )
    old_unique = _old_unique_name()
    with op.batch_alter_table("datasets", naming_convention=_NAMING) as batch:
        for name, (default, type_) in _FILLED.items():
            batch.add_column(
                sa.Column(name, type_, nullable=False, server_default=sa.text(default))
            )
        batch.add_column(sa.Column("previous_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("next_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("manifest_root", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("pid", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("title", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("unique_individuals", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("records", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("invalidation_reason", sa.Text(), nullable=True))
        for stamp in ("released_at", "published_at", "invalidated_at", "reactivated_at"):
            batch.add_column(sa.Column(stamp, sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint(old_unique, type_="unique")
        batch.create_unique_constraint(
            "uq_datasets_node_id_name_version", ["node_id", "name", "version"]
        )
        batch.create_unique_constraint("uq_datasets_pid", ["pid"])
        batch.create_foreign_key("fk_datasets_previous_id", "datasets", ["previous_id"], ["id"])
        batch.create_foreign_key("fk_datasets_next_id", "datasets", ["next_id"], ["id"])
        batch.create_index(batch.f("ix_datasets_state"), ["state"], unique=False)
    op.execute(sa.text("UPDATE datasets SET released_at = created_at"))
    with op.batch_alter_table("datasets") as batch:
        for name in _FILLED:
            batch.alter_column(name, server_default=None)
    op.create_table(
        "zenodo_depositions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("deposition_id", sa.Integer(), nullable=True),
        sa.Column("doi", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_zenodo_depositions_dataset_id"), "zenodo_depositions", ["dataset_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_zenodo_depositions_dataset_id"), table_name="zenodo_depositions")
    op.drop_table("zenodo_depositions")
    op.execute(sa.text("DELETE FROM datasets WHERE version > 1"))
    with op.batch_alter_table("datasets", naming_convention=_NAMING) as batch:
        batch.drop_index(batch.f("ix_datasets_state"))
        batch.drop_constraint("uq_datasets_node_id_name_version", type_="unique")
        batch.drop_constraint("uq_datasets_pid", type_="unique")
        batch.drop_constraint("fk_datasets_previous_id", type_="foreignkey")
        batch.drop_constraint("fk_datasets_next_id", type_="foreignkey")
        for name in (*_FILLED, "previous_id", "next_id", "manifest_root", "pid", "title"):
            batch.drop_column(name)
        for name in ("unique_individuals", "records", "invalidation_reason"):
            batch.drop_column(name)
        for stamp in ("released_at", "published_at", "invalidated_at", "reactivated_at"):
            batch.drop_column(stamp)
        batch.create_unique_constraint("uq_datasets_node_id_name", ["node_id", "name"])
    op.drop_table("catalogue_settings")
