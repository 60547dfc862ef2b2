"""The catalogue: uploads, assets, jobs and idempotency records; row-level security on PostgreSQL.

One history for SQLite and PostgreSQL. On PostgreSQL, and only there, it also:

- creates the group role ``heimdex_app`` (NOLOGIN) unless it exists, and grants it DML on the
  tenant tables. The service logs in as a member of it (``CREATE ROLE app LOGIN PASSWORD '…'
  IN ROLE heimdex_app``) that owns nothing; this migration runs as the owner role.
- enables and FORCEs row-level security on every tenant table with one policy each: a row is
  visible and writable only when its ``org_id`` equals the transaction's ``heimdex.org_id``
  setting. With no org set nothing is visible (an ended ``SET LOCAL`` leaves ``''``, hence
  ``NULLIF``), so a forgotten ``set_config`` fails closed.
- adds ``heimdex_purge_expired_idempotency(cutoff)``, a SECURITY DEFINER function through which
  the runtime role deletes expired idempotency records of every organisation (housekeeping no
  tenant-scoped session could do), and the owner-only policies that function runs under.

The role survives a downgrade: it is cluster-wide and other databases may use it.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
TENANT_TABLES = ("uploads", "assets", "jobs", "idempotency_records")
PURGE_FUNCTION = "heimdex_purge_expired_idempotency"
ORG_SETTING = "heimdex.org_id"

# A frozen copy of the column types as of this revision (not imported from the models, which
# move on): JSON is JSONB on PostgreSQL, UUIDs are native on PostgreSQL and 16 bytes on SQLite.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> DateTimeUTC:
    return DateTimeUTC(timezone=True)


def _id() -> sa.Column[object]:
    return sa.Column("id", GUID(), nullable=False)


def _sentinel() -> sa.Column[int]:
    # advanced-alchemy's UUID primary-key mixin adds this always-NULL column (SQLAlchemy uses it
    # to match rows of bulk inserts); it is part of the models, so it is part of the tables.
    return sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True)


def upgrade() -> None:
    op.create_table(
        "uploads",
        _id(),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("source_uri", sa.String(1024), nullable=False),
        sa.Column("source_name", sa.String(255), nullable=False),
        sa.Column("content_length", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("declared_sha256", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("received_sha256", sa.String(64), nullable=True),
        sa.Column("received_at", _timestamp(), nullable=True),
        _sentinel(),
        sa.PrimaryKeyConstraint("id", name="pk_uploads"),
        sa.UniqueConstraint("source_uri", name="uq_uploads_source_uri"),
    )
    op.create_index("ix_uploads_org_id", "uploads", ["org_id"])

    op.create_table(
        "assets",
        _id(),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("upload_id", GUID(), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("source_uri", sa.String(1024), nullable=False),
        sa.Column("source_name", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("media", JSON, nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("video_codec", sa.String(64), nullable=True),
        sa.Column("audio_codec", sa.String(64), nullable=True),
        sa.Column("display_height", sa.Integer(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        _sentinel(),
        sa.PrimaryKeyConstraint("id", name="pk_assets"),
        sa.UniqueConstraint("upload_id", name="uq_assets_upload_id"),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], name="fk_assets_upload_id_uploads"),
    )
    op.create_index(
        "ix_assets_org_created",
        "assets",
        ["org_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )

    op.create_table(
        "jobs",
        _id(),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("asset_id", GUID(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", _timestamp(), nullable=True),
        sa.Column("next_attempt_at", _timestamp(), nullable=True),
        sa.Column("error_code", sa.String(255), nullable=True),
        sa.Column("error_message", sa.String(4096), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        _sentinel(),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name="fk_jobs_asset_id_assets", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_jobs_org_id", "jobs", ["org_id"])
    op.create_index("ix_jobs_asset_id", "jobs", ["asset_id"])

    op.create_table(
        "idempotency_records",
        _id(),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("route", sa.String(1024), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("lease_until", _timestamp(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("completed_at", _timestamp(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", JSON, nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        _sentinel(),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_records"),
        sa.UniqueConstraint(
            "org_id", "method", "route", "key", name="uq_idempotency_records_scope"
        ),
    )
    op.create_index("ix_idempotency_records_expires_at", "idempotency_records", ["expires_at"])

    if op.get_bind().dialect.name == "postgresql":
        _secure_postgres()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {PURGE_FUNCTION}(timestamptz)")
    # Dropping a table drops its indexes, grants and policies with it.
    op.drop_table("idempotency_records")
    op.drop_table("jobs")
    op.drop_table("assets")
    op.drop_table("uploads")


def _secure_postgres() -> None:
    # Not race-free on its own (two databases migrating at once): the EXCEPTION clause is.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END
        $$
        """
    )
    tables = ", ".join(TENANT_TABLES)
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {APP_ROLE}")

    tenant = f"org_id = NULLIF(current_setting('{ORG_SETTING}', true), '')"
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        # FORCE: the owner is bound by the policy too (only superusers and BYPASSRLS are not).
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_tenant ON {table} USING ({tenant}) WITH CHECK ({tenant})"
        )

    # Housekeeping across organisations: the function runs as its owner (this role), and only
    # the owner gets these two policies, so the runtime role can purge expired records through
    # the function but never read or delete a live record of another organisation.
    for command in ("SELECT", "DELETE"):
        op.execute(
            f"CREATE POLICY idempotency_records_owner_{command.lower()} ON idempotency_records "
            f"FOR {command} TO CURRENT_USER USING (true)"
        )
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar_one()
    quoted_schema = op.get_bind().dialect.identifier_preparer.quote_identifier(schema)
    op.execute(
        f"""
        CREATE FUNCTION {PURGE_FUNCTION}(cutoff timestamptz) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            purged bigint;
        BEGIN
            DELETE FROM {quoted_schema}.idempotency_records WHERE expires_at <= cutoff;
            GET DIAGNOSTICS purged = ROW_COUNT;
            RETURN purged;
        END
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    op.execute(f"REVOKE ALL ON FUNCTION {PURGE_FUNCTION}(timestamptz) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {PURGE_FUNCTION}(timestamptz) TO {APP_ROLE}")
