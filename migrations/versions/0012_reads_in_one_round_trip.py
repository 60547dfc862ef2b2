"""PostgreSQL: one function per hot single-row read, so a read is one round trip.

``heimdex_read_asset(org, id)`` and ``heimdex_read_job(org, id)`` set ``heimdex.org_id`` with
``set_config(…, true)`` and return the organisation's row. Called as one statement outside a
transaction block, the setting lives exactly as long as that statement's own transaction: the
same transaction-local scope as the unit of work's, in one message instead of ``BEGIN``,
``set_config``, the query and ``ROLLBACK``. SECURITY INVOKER (the default, said here): they run
as the caller, the runtime role, so row-level security confines the SELECT as it confines every
other; each also filters on ``org_id`` itself, as every repository statement does. PL/pgSQL so
the SELECT's plan is cached per connection. Only ``heimdex_app`` may execute them.

SQLite has nothing to do.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "heimdex_app"
ORG_SETTING = "heimdex.org_id"
READS = {"heimdex_read_asset": "assets", "heimdex_read_job": "jobs"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function, table in READS.items():
        op.execute(
            f"""
            CREATE FUNCTION {function}(p_org text, p_id uuid) RETURNS SETOF {table}
            LANGUAGE plpgsql VOLATILE SECURITY INVOKER
            AS $$
            BEGIN
                PERFORM set_config('{ORG_SETTING}', p_org, true);
                RETURN QUERY SELECT * FROM {table} WHERE org_id = p_org AND id = p_id;
            END
            $$
            """  # noqa: S608 - our own names
        )
        op.execute(f"REVOKE ALL ON FUNCTION {function}(text, uuid) FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function}(text, uuid) TO {APP_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in READS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}(text, uuid)")
