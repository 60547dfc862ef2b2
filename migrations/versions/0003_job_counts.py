"""The job queue depth for ``/metrics``: how many jobs are queued and running, across every
organisation.

- ``heimdex_active_job_counts()``: (status, jobs) for ``queued`` and ``running``. Counts only, no
  organisation or id, and only the active jobs (the status index bounds the work), never the
  ever-growing finished ones.

A SECURITY DEFINER function owned by the migrating role, which reads ``jobs`` under the owner
policy of migration 0002; the runtime role may execute it and still reads only its own
organisation's rows. SQLite needs no function: it has no row-level security.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
COUNTS_FUNCTION = "heimdex_active_job_counts"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar_one()
    jobs = op.get_bind().dialect.identifier_preparer.quote_identifier(schema) + ".jobs"
    op.execute(
        f"""
        CREATE FUNCTION {COUNTS_FUNCTION}()
        RETURNS TABLE (status text, jobs bigint)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT j.status::text, count(*) FROM {jobs} AS j
            WHERE j.status IN ('queued', 'running')
            GROUP BY j.status
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    op.execute(f"REVOKE ALL ON FUNCTION {COUNTS_FUNCTION}() FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {COUNTS_FUNCTION}() TO {APP_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {COUNTS_FUNCTION}()")
