"""Resumable (tus) upload slots: whether a slot is one, its offset, and the store's session.

``resumable``: filled by tus PATCHes rather than one PUT. ``received_bytes``: the offset, bytes
stored durably so far (the store may hold more from a PATCH cut off before it was recorded;
those are dropped by the next PATCH). ``resumable_session``: the store's handle of the write in
progress (an S3 multipart upload id). Existing slots are single-PUT slots at offset 0.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(
            sa.Column("resumable", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("received_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("resumable_session", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("resumable_session")
        batch.drop_column("received_bytes")
        batch.drop_column("resumable")
