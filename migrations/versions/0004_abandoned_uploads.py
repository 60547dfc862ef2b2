"""Upload slots that were never committed, across every organisation, for the sweep.

- ``heimdex_abandoned_uploads(expired_before, lim)``: (id, org_id) of uploads not committed,
  with no asset, whose slot expired before ``expired_before``. Ids only, never a row's contents.
- Read policies for the owning role on ``uploads`` and ``assets`` (as migration 0002 gave it on
  ``jobs``), so the SECURITY DEFINER function sees every organisation; the runtime role still
  sees only its own rows, and deletes each upload inside its own organisation's transaction.
- An index on (status, expires_at): the sweep's question, without reading every upload ever.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
ABANDONED_FUNCTION = "heimdex_abandoned_uploads"
SIGNATURE = f"{ABANDONED_FUNCTION}(timestamptz, integer)"


def upgrade() -> None:
    op.create_index("ix_uploads_status_expires_at", "uploads", ["status", "expires_at"])
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("uploads", "assets"):
        op.execute(
            f"CREATE POLICY {table}_owner_select ON {table} FOR SELECT TO CURRENT_USER USING (true)"
        )
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar_one()
    quoted_schema = op.get_bind().dialect.identifier_preparer.quote_identifier(schema)
    uploads, assets = quoted_schema + ".uploads", quoted_schema + ".assets"
    op.execute(
        f"""
        CREATE FUNCTION {ABANDONED_FUNCTION}(expired_before timestamptz, lim integer)
        RETURNS TABLE (id uuid, org_id text)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT u.id, u.org_id FROM {uploads} AS u
            WHERE u.status <> 'committed' AND u.expires_at < expired_before
              AND NOT EXISTS (SELECT FROM {assets} AS a WHERE a.upload_id = u.id)
            ORDER BY u.expires_at
            LIMIT lim
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {APP_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
        for table in ("assets", "uploads"):
            op.execute(f"DROP POLICY IF EXISTS {table}_owner_select ON {table}")
    op.drop_index("ix_uploads_status_expires_at", table_name="uploads")
