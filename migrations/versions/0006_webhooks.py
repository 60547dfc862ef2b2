"""Outbound webhooks (endpoints and the delivery outbox), the job listing's index, and the
cross-organisation questions the deliverer and ``heimdex replay`` ask on PostgreSQL.

- ``webhook_endpoints`` and ``webhook_deliveries``: tenant tables, row-level security like the
  others (a policy on ``org_id``, FORCEd), DML granted to the runtime role.
- ``heimdex_due_webhook_deliveries(now, per_endpoint, lim)``: (id, org_id, endpoint_id) of
  pending deliveries that are due, at most ``per_endpoint`` per endpoint.
- ``heimdex_pending_webhook_deliveries()``: how many are pending and the oldest one's creation.
- ``heimdex_failed_webhook_deliveries(org, code, since, until, lim)`` and
  ``heimdex_replayable_jobs(org, kind, code, since, until, stuck_before, lim)``: (id, org_id) of
  what ``heimdex replay`` may requeue. ``NULL`` arguments do not filter.

SECURITY DEFINER functions owned by the migrating role, which alone gets a read policy on
``webhook_deliveries`` (``jobs`` has one since 0002); they answer ids and counts, never payloads.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
ORG_SETTING = "heimdex.org_id"
TABLES = ("webhook_endpoints", "webhook_deliveries")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
FUNCTIONS = (
    "heimdex_due_webhook_deliveries(timestamptz, integer, integer)",
    "heimdex_pending_webhook_deliveries()",
    "heimdex_failed_webhook_deliveries(text, text, timestamptz, timestamptz, integer)",
    "heimdex_replayable_jobs(text, text, text, timestamptz, timestamptz, timestamptz, integer)",
)


def _timestamp() -> DateTimeUTC:
    return DateTimeUTC(timezone=True)


def upgrade() -> None:
    op.create_index(
        "ix_jobs_org_created", "jobs", ["org_id", sa.text("created_at DESC"), sa.text("id DESC")]
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", GUID(), nullable=False),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secrets", JSON, nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("disabled_reason", sa.String(255), nullable=True),
        sa.Column("failing_since", _timestamp(), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
    )
    op.create_index("ix_webhook_endpoints_org_id", "webhook_endpoints", ["org_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", GUID(), nullable=False),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("endpoint_id", GUID(), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _timestamp(), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", _timestamp(), nullable=True),
        sa.Column("last_attempt_at", _timestamp(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error_code", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("delivered_at", _timestamp(), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name="fk_webhook_deliveries_endpoint_id_webhook_endpoints",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_webhook_deliveries_org_endpoint_created",
        "webhook_deliveries",
        ["org_id", "endpoint_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    if op.get_bind().dialect.name == "postgresql":
        _secure_postgres()


def _secure_postgres() -> None:
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TABLES)} TO {APP_ROLE}")
    tenant = f"org_id = NULLIF(current_setting('{ORG_SETTING}', true), '')"
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_tenant ON {table} USING ({tenant}) WITH CHECK ({tenant})"
        )
    op.execute(
        "CREATE POLICY webhook_deliveries_owner_select ON webhook_deliveries "
        "FOR SELECT TO CURRENT_USER USING (true)"
    )
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar_one()
    quoted = op.get_bind().dialect.identifier_preparer.quote_identifier(schema)
    deliveries, jobs = quoted + ".webhook_deliveries", quoted + ".jobs"
    op.execute(
        f"""
        CREATE FUNCTION heimdex_due_webhook_deliveries(
            now timestamptz, per_endpoint integer, lim integer
        )
        RETURNS TABLE (id uuid, org_id text, endpoint_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT d.id, d.org_id, d.endpoint_id FROM (
                SELECT w.id, w.org_id, w.endpoint_id, w.next_attempt_at,
                       row_number() OVER (
                           PARTITION BY w.endpoint_id ORDER BY w.next_attempt_at, w.id
                       ) AS place
                FROM {deliveries} AS w
                WHERE w.status = 'pending' AND w.next_attempt_at <= now
                  AND (w.lease_expires_at IS NULL OR w.lease_expires_at < now)
            ) AS d
            WHERE d.place <= per_endpoint
            ORDER BY d.next_attempt_at
            LIMIT lim
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    op.execute(
        f"""
        CREATE FUNCTION heimdex_pending_webhook_deliveries()
        RETURNS TABLE (pending bigint, oldest timestamptz)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT count(*), min(w.created_at) FROM {deliveries} AS w WHERE w.status = 'pending'
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    op.execute(
        f"""
        CREATE FUNCTION heimdex_failed_webhook_deliveries(
            org text, code text, since timestamptz, until timestamptz, lim integer
        )
        RETURNS TABLE (id uuid, org_id text)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT w.id, w.org_id FROM {deliveries} AS w
            WHERE w.status = 'failed'
              AND (org IS NULL OR w.org_id = org)
              AND (code IS NULL OR w.last_error_code = code)
              AND (since IS NULL OR w.updated_at >= since)
              AND (until IS NULL OR w.updated_at < until)
            ORDER BY w.updated_at
            LIMIT lim
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    op.execute(
        f"""
        CREATE FUNCTION heimdex_replayable_jobs(
            org text, job_kind text, code text, since timestamptz, until timestamptz,
            stuck_before timestamptz, lim integer
        )
        RETURNS TABLE (id uuid, org_id text)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT j.id, j.org_id FROM {jobs} AS j
            WHERE (j.status = 'failed'
                   OR (j.status = 'running' AND j.lease_expires_at < stuck_before)
                   OR (j.status = 'queued' AND j.updated_at < stuck_before))
              AND (org IS NULL OR j.org_id = org)
              AND (job_kind IS NULL OR j.kind = job_kind)
              AND (code IS NULL OR j.error_code = code)
              AND (since IS NULL OR j.updated_at >= since)
              AND (until IS NULL OR j.updated_at < until)
            ORDER BY j.updated_at
            LIMIT lim
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    for signature in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for signature in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_jobs_org_created", table_name="jobs")
