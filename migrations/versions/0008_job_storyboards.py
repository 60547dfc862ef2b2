"""A sidecar job's storyboard options: the tiles' width and the sprite sheets' format.

Both null: no storyboard (``storyboard: false``). Jobs queued before this revision get the
defaults (160 px, JPEG), as a request that says nothing does now.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("storyboard_width", sa.Integer(), server_default="160"))
        batch.add_column(sa.Column("storyboard_format", sa.String(8), server_default="jpg"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("storyboard_format")
        batch.drop_column("storyboard_width")
