"""Organisations take turns: which claimable job a free worker slot should run next.

- ``ix_jobs_org_id_started_at``: when each organisation's latest job started, one index probe per
  organisation with work.
- ``heimdex_next_job_in_turn(now, prefer)``: (id, org_id, enqueued_at) of one claimable job
  (queued and due, or running with an expired lease): of the organisation with the fewest jobs
  running now; among those tied, the one whose latest job started longest ago (or never), then
  ``prefer`` (the organisation whose message the slot holds); its oldest job. Ids and the
  hand-over time only, never job contents.

A SECURITY DEFINER function owned by the migrating role, which reads ``jobs`` under the owner
policy of migration 0002; the runtime role may execute it and still reads only its own
organisation's rows. SQLite needs no function: it has no row-level security.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
TURN_FUNCTION = "heimdex_next_job_in_turn"
SIGNATURE = f"{TURN_FUNCTION}(timestamptz, text)"


def upgrade() -> None:
    op.create_index("ix_jobs_org_id_started_at", "jobs", ["org_id", "started_at"])
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar_one()
    jobs = op.get_bind().dialect.identifier_preparer.quote_identifier(schema) + ".jobs"
    op.execute(
        f"""
        CREATE FUNCTION {TURN_FUNCTION}(now timestamptz, prefer text)
        RETURNS TABLE (id uuid, org_id text, enqueued_at timestamptz)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            WITH running AS (
                SELECT r.org_id, count(*) AS jobs FROM {jobs} AS r
                WHERE r.status = 'running' AND r.lease_expires_at >= now
                GROUP BY r.org_id
            ), claimable AS (
                SELECT c.id, c.org_id, c.enqueued_at, c.created_at FROM {jobs} AS c
                WHERE (c.status = 'queued'
                       AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= now))
                   OR (c.status = 'running' AND c.lease_expires_at < now)
            ), turns AS (
                SELECT o.org_id,
                       (SELECT max(s.started_at) FROM {jobs} AS s
                        WHERE s.org_id = o.org_id) AS last_started
                FROM (SELECT DISTINCT claimable.org_id FROM claimable) AS o
            )
            SELECT j.id, j.org_id, j.enqueued_at FROM claimable AS j
            JOIN turns ON turns.org_id = j.org_id
            LEFT JOIN running ON running.org_id = j.org_id
            ORDER BY coalesce(running.jobs, 0), turns.last_started NULLS FIRST,
                     j.org_id <> prefer, j.created_at, j.id
            LIMIT 1
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {APP_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
    op.drop_index("ix_jobs_org_id_started_at", table_name="jobs")
