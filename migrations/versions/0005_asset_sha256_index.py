"""An index on assets (org_id, sha256): the ``sha256`` filter of ``GET /v1/assets``, which
``heimdex ingest`` asks for every file to skip what the organisation already has.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_assets_org_sha256", "assets", ["org_id", "sha256"])


def downgrade() -> None:
    op.drop_index("ix_assets_org_sha256", table_name="assets")
