"""Frame fingerprints for search by what a frame looks like (``heimdex.domain.frames``).

One row per fingerprinted frame (storyboard tiles and thumbnails that are not dull): the
organisation, the asset, the time, the 64-bit fingerprint as hex and its eight 8-bit bands,
each band indexed with the organisation, so a Hamming search finds its candidates by B-tree
look-ups (multi-index hashing). The rows go with their asset (``ON DELETE CASCADE``). On
PostgreSQL the table is a tenant table like the others: row-level security on ``org_id``,
FORCEd, DML granted to the runtime role.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
ORG_SETTING = "heimdex.org_id"
BANDS = 8


def upgrade() -> None:
    op.create_table(
        "frames",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("asset_id", GUID(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("fingerprint", sa.String(16), nullable=False),
        *(sa.Column(f"b{band}", sa.Integer(), nullable=False) for band in range(BANDS)),
        sa.PrimaryKeyConstraint("id", name="pk_frames"),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name="fk_frames_asset_id_assets", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_frames_org_asset_time", "frames", ["org_id", "asset_id", "time"])
    for band in range(BANDS):
        op.create_index(f"ix_frames_org_b{band}", "frames", ["org_id", f"b{band}"])
    if op.get_bind().dialect.name == "postgresql":
        tenant = f"org_id = NULLIF(current_setting('{ORG_SETTING}', true), '')"
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON frames TO {APP_ROLE}")
        op.execute(f"GRANT USAGE, SELECT ON SEQUENCE frames_id_seq TO {APP_ROLE}")
        op.execute("ALTER TABLE frames ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE frames FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY frames_tenant ON frames USING ({tenant}) WITH CHECK ({tenant})")


def downgrade() -> None:
    op.drop_table("frames")
