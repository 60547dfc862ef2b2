"""Jobs run by workers: thumbnail parameters, lease owner, outbox and timing columns, and the two
narrow cross-organisation questions a worker and the sweep must ask on PostgreSQL.

- ``heimdex_job_org(job)``: a worker receives only a job id; this answers its organisation,
  so the worker can then open a tenant-scoped transaction (row-level security applies).
- ``heimdex_due_jobs(now, enqueued_before, lim)``: (id, org_id) of the jobs the sweep hands to
  the queue again. Neither returns job contents.

Both are SECURITY DEFINER functions owned by the migrating role, which alone gets a read policy
on ``jobs``; the runtime role may execute them and still reads only its own organisation's rows.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
ORG_FUNCTION = "heimdex_job_org"
DUE_FUNCTION = "heimdex_due_jobs"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("thumbnail_count", sa.Integer(), server_default="10"))
        batch.add_column(sa.Column("thumbnail_width", sa.Integer(), server_default="320"))
        batch.add_column(sa.Column("thumbnail_format", sa.String(8), server_default="jpg"))
        batch.add_column(sa.Column("lease_owner", sa.String(255), nullable=True))
        for name in ("enqueued_at", "started_at", "finished_at"):
            batch.add_column(sa.Column(name, DateTimeUTC(timezone=True), nullable=True))
        batch.alter_column("thumbnail_count", nullable=False)
        batch.alter_column("thumbnail_width", nullable=False)
        batch.alter_column("thumbnail_format", nullable=False)
    op.create_index("ix_jobs_status_next_attempt", "jobs", ["status", "next_attempt_at"])
    if op.get_bind().dialect.name == "postgresql":
        _functions()


def _functions() -> None:
    op.execute("CREATE POLICY jobs_owner_select ON jobs FOR SELECT TO CURRENT_USER USING (true)")
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar_one()
    jobs = op.get_bind().dialect.identifier_preparer.quote_identifier(schema) + ".jobs"
    op.execute(
        f"""
        CREATE FUNCTION {ORG_FUNCTION}(job uuid) RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$ SELECT org_id FROM {jobs} WHERE id = job $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    op.execute(
        f"""
        CREATE FUNCTION {DUE_FUNCTION}(now timestamptz, enqueued_before timestamptz, lim integer)
        RETURNS TABLE (id uuid, org_id text)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT j.id, j.org_id FROM {jobs} AS j
            WHERE (j.status = 'queued'
                   AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= now)
                   AND (j.enqueued_at IS NULL OR j.enqueued_at < enqueued_before))
               OR (j.status = 'running' AND j.lease_expires_at < now)
            ORDER BY j.created_at
            LIMIT lim
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    for signature in (
        f"{ORG_FUNCTION}(uuid)",
        f"{DUE_FUNCTION}(timestamptz, timestamptz, integer)",
    ):
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {DUE_FUNCTION}(timestamptz, timestamptz, integer)")
        op.execute(f"DROP FUNCTION IF EXISTS {ORG_FUNCTION}(uuid)")
        op.execute("DROP POLICY IF EXISTS jobs_owner_select ON jobs")
    op.drop_index("ix_jobs_status_next_attempt", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in (
            "finished_at",
            "started_at",
            "enqueued_at",
            "lease_owner",
            "thumbnail_format",
            "thumbnail_width",
            "thumbnail_count",
        ):
            batch.drop_column(name)
