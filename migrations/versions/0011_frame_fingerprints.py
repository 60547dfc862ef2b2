"""Frame fingerprints for search by what a frame looks like (``heimdex.domain.frames``).

One row per fingerprinted frame (storyboard tiles and thumbnails that are not dull): the
organisation, the asset, the time, the 64-bit fingerprint as hex and its four 16-bit bands,
each band indexed with the organisation, so a Hamming search finds its candidates by B-tree
look-ups (multi-index hashing). The rows go with their asset (``ON DELETE CASCADE``). On
PostgreSQL the table is a tenant table like the others: row-level security on ``org_id``,
FORCEd, DML granted to the runtime role; and ``heimdex_unindexed_assets(after_org, after_id,
lim)``, a SECURITY DEFINER function answering (org_id, id) of ready video assets without a
fingerprinted frame across organisations (``heimdex reindex``), ids only.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
ORG_SETTING = "heimdex.org_id"
BANDS = 4
FUNCTION = "heimdex_unindexed_assets"
SIGNATURE = f"{FUNCTION}(text, uuid, integer)"


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
        _function()


def _function() -> None:
    op.execute(
        "CREATE POLICY frames_owner_select ON frames FOR SELECT TO CURRENT_USER USING (true)"
    )
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar_one()
    quoted = op.get_bind().dialect.identifier_preparer.quote_identifier(schema)
    assets, frames = quoted + ".assets", quoted + ".frames"
    op.execute(
        f"""
        CREATE FUNCTION {FUNCTION}(after_org text, after_id uuid, lim integer)
        RETURNS TABLE (org_id text, id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT a.org_id, a.id FROM {assets} AS a
            WHERE a.status = 'ready' AND a.video_codec IS NOT NULL
              AND NOT EXISTS (
                  SELECT 1 FROM {frames} AS f WHERE f.org_id = a.org_id AND f.asset_id = a.id
              )
              AND (after_org IS NULL OR (a.org_id, a.id) > (after_org, after_id))
            ORDER BY a.org_id, a.id
            LIMIT lim
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {APP_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
    op.drop_table("frames")
