"""An index on assets (org_id, sha256): the ``sha256`` filter of ``GET /v1/assets``, which
``heimdex ingest`` asks for every file to skip what the organisation already has.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_assets_org_sha256", "assets", ["org_id", "sha256"])


def downgrade() -> None:
    op.drop_index("ix_assets_org_sha256", table_name="assets")
