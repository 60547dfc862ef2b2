"""Is tenant isolation actually in force? A catalog check of the PostgreSQL the service runs on.

Row-level security only protects if every tenant table has it enabled AND forced, with a policy,
and the role the service connects as can neither ignore it (superuser, ``BYPASSRLS``) nor turn
it off (owner of a table, or member of the owner). ``tenancy_report`` checks exactly that, as
the connected role; its ``problems`` are empty when the set-up is safe. Called at start-up and
from the admin health endpoint.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import bindparam, text

from heimdex.adapters.db.engine import Database, database_errors
from heimdex.adapters.db.tables import TENANT_TABLES
from heimdex.domain.errors import TenancyUnsafe


class TableSecurity(msgspec.Struct, frozen=True, kw_only=True):
    """Row-level security of one tenant table, as the catalog says."""

    name: str
    rls_enabled: bool
    rls_forced: bool
    policies: int
    owned_by_current_role: bool  # owner, or a member of the owner: could disable RLS


class TenancyReport(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict and the facts behind it. ``problems`` empty means tenant-safe.

    On SQLite (the embedded, single-tenant-process default) there is no row-level security to
    check: ``enforced`` is false and there are no problems; repositories still filter by org.
    """

    backend: str
    enforced: bool
    role: str | None = None
    superuser: bool = False
    bypass_rls: bool = False
    privileged_memberships: list[str] = msgspec.field(default_factory=list)
    tables: list[TableSecurity] = msgspec.field(default_factory=list)
    problems: list[str] = msgspec.field(default_factory=list)


_ROLE = text(
    """
    SELECT r.rolname AS role, r.rolsuper AS superuser, r.rolbypassrls AS bypass_rls,
           ARRAY(
               SELECT p.rolname FROM pg_catalog.pg_roles AS p
               WHERE (p.rolsuper OR p.rolbypassrls) AND p.oid <> r.oid
                 AND pg_catalog.pg_has_role(r.oid, p.oid, 'MEMBER')
               ORDER BY p.rolname
           ) AS privileged_memberships
    FROM pg_catalog.pg_roles AS r
    WHERE r.rolname = current_user
    """
)

_TABLES = text(
    """
    SELECT c.relname AS name, c.relrowsecurity AS rls_enabled,
           c.relforcerowsecurity AS rls_forced,
           (SELECT count(*) FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid) AS policies,
           pg_catalog.pg_has_role(current_user, c.relowner, 'MEMBER') AS owned
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
      AND c.relname IN :tables
    """
).bindparams(bindparam("tables", expanding=True))


async def tenancy_report(database: Database) -> TenancyReport:
    """Check the catalog as the role ``database`` connects as."""
    if not database.is_postgres:
        return TenancyReport(backend=database.backend, enforced=False)
    with database_errors():
        async with database.engine.connect() as connection:
            role = (await connection.execute(_ROLE)).mappings().one()
            rows = (
                (await connection.execute(_TABLES, {"tables": list(TENANT_TABLES)}))
                .mappings()
                .all()
            )
    tables = [
        TableSecurity(
            name=row["name"],
            rls_enabled=row["rls_enabled"],
            rls_forced=row["rls_forced"],
            policies=int(row["policies"]),
            owned_by_current_role=row["owned"],
        )
        for row in sorted(rows, key=lambda row: TENANT_TABLES.index(row["name"]))
    ]
    problems: list[str] = []
    name = role["role"]
    if role["superuser"]:
        problems.append(f"role {name} is a superuser: row-level security does not apply to it")
    if role["bypass_rls"]:
        problems.append(f"role {name} has BYPASSRLS: row-level security does not apply to it")
    for other in role["privileged_memberships"]:
        problems.append(f"role {name} is a member of {other}, which bypasses row-level security")
    found = {table.name for table in tables}
    for missing in TENANT_TABLES:
        if missing not in found:
            problems.append(f"tenant table {missing} does not exist (not migrated?)")
    for table in tables:
        if not table.rls_enabled:
            problems.append(f"table {table.name} does not have row-level security enabled")
        if not table.rls_forced:
            problems.append(f"table {table.name} does not FORCE row-level security")
        if table.policies == 0:
            problems.append(f"table {table.name} has no row-level security policy")
        if table.owned_by_current_role:
            problems.append(
                f"role {name} owns table {table.name} (or is a member of its owner) and could "
                "switch row-level security off"
            )
    return TenancyReport(
        backend=database.backend,
        enforced=True,
        role=name,
        superuser=role["superuser"],
        bypass_rls=role["bypass_rls"],
        privileged_memberships=list(role["privileged_memberships"]),
        tables=tables,
        problems=problems,
    )


class TenancyCheck:
    """The tenancy report as a health check: unhealthy while any problem stands."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def check(self) -> None:
        report = await tenancy_report(self._database)
        if report.problems:
            raise TenancyUnsafe("; ".join(report.problems))
