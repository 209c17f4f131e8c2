"""image models for validation studies (issue 17)

Revision ID: 0018
Revises: 0017

No schema change: an image model's declared input and preprocessing
(``medfed.algorithms.validation.images.ImageSpec``) is kept in the ``descriptor`` JSON of
``fl_onnx_models`` beside the tabular models' features, and a study's ``labels`` in its
``definition`` JSON. The revision stays so that the chain 0017 -> 0018 -> 0019 holds.
"""

from __future__ import annotations

revision = "0018"
down_revision: str | None = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
