"""model validation studies (issue 17)

Revision ID: 0015
Revises: 0014

``fl_onnx_models``: ONNX models in the registry (the file is a blob by SHA-256; the row
keeps the checked descriptor and, for an export of a medfed training, that registry
entry). ``validation_studies``: model, outcome, test population, thresholds, subgroups,
mode, and the ``validation`` task that computes the study.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision: str | None = "0014"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "fl_onnx_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("descriptor", sa.JSON(), nullable=False),
        sa.Column("derived_from", sa.Integer(), nullable=True),
        sa.Column("uploaded_by", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["derived_from"], ["fl_models.id"]),
        sa.ForeignKeyConstraint(["uploaded_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "sha256"),
    )
    op.create_index("ix_fl_onnx_models_project_id", "fl_onnx_models", ["project_id"])
    op.create_index("ix_fl_onnx_models_sha256", "fl_onnx_models", ["sha256"])
    op.create_table(
        "validation_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("dataset_ids", sa.JSON(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["model_id"], ["fl_onnx_models.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_validation_studies_project_id", "validation_studies", ["project_id"])


def downgrade() -> None:
    op.drop_index("ix_validation_studies_project_id", table_name="validation_studies")
    op.drop_table("validation_studies")
    op.drop_index("ix_fl_onnx_models_sha256", table_name="fl_onnx_models")
    op.drop_index("ix_fl_onnx_models_project_id", table_name="fl_onnx_models")
    op.drop_table("fl_onnx_models")
