"""Organisations take turns for webhook deliveries: ``heimdex_due_webhook_deliveries`` gains a
per-organisation cap and answers each organisation's oldest due delivery first, then each one's
second, and so on, so one organisation's backlog over many endpoints hides no one else's.

Replaces ``heimdex_due_webhook_deliveries(now, per_endpoint, lim)`` of 0006 with
``heimdex_due_webhook_deliveries(now, per_endpoint, per_org, lim)``; SECURITY DEFINER as before,
answering ids only.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
OLD = "heimdex_due_webhook_deliveries(timestamptz, integer, integer)"
NEW = "heimdex_due_webhook_deliveries(timestamptz, integer, integer, integer)"


def _deliveries() -> str:
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar_one()
    quoted = op.get_bind().dialect.identifier_preparer.quote_identifier(schema)
    return quoted + ".webhook_deliveries"


def _secure(signature: str) -> None:
    op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no functions: the adapter runs the same query itself
    op.execute(f"DROP FUNCTION IF EXISTS {OLD}")
    op.execute(
        f"""
        CREATE FUNCTION heimdex_due_webhook_deliveries(
            now timestamptz, per_endpoint integer, per_org integer, lim integer
        )
        RETURNS TABLE (id uuid, org_id text, endpoint_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT o.id, o.org_id, o.endpoint_id FROM (
                SELECT e.id, e.org_id, e.endpoint_id, e.next_attempt_at,
                       row_number() OVER (
                           PARTITION BY e.org_id ORDER BY e.next_attempt_at, e.id
                       ) AS turn
                FROM (
                    SELECT w.id, w.org_id, w.endpoint_id, w.next_attempt_at,
                           row_number() OVER (
                               PARTITION BY w.endpoint_id ORDER BY w.next_attempt_at, w.id
                           ) AS place
                    FROM {_deliveries()} AS w
                    WHERE w.status = 'pending' AND w.next_attempt_at <= now
                      AND (w.lease_expires_at IS NULL OR w.lease_expires_at < now)
                ) AS e
                WHERE e.place <= per_endpoint
            ) AS o
            WHERE o.turn <= per_org
            ORDER BY o.turn, o.next_attempt_at, o.id
            LIMIT lim
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    _secure(NEW)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS {NEW}")
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
                FROM {_deliveries()} AS w
                WHERE w.status = 'pending' AND w.next_attempt_at <= now
                  AND (w.lease_expires_at IS NULL OR w.lease_expires_at < now)
            ) AS d
            WHERE d.place <= per_endpoint
            ORDER BY d.next_attempt_at
            LIMIT lim
        $$
        """  # noqa: S608 - the schema name comes from the server and is quoted
    )
    _secure(OLD)
