"""Row-level security on PostgreSQL: the second line of tenant isolation, proven from raw SQL.

The repositories always filter by org; these tests run queries that do NOT, as the runtime role,
and show the database itself confines them: to the unit of work's organisation, to nothing when
no organisation is set, and never to a previous transaction's organisation on a reused pooled
connection. The catalog checks (``tenancy_report``) show the set-up that makes this hold.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.tables import TENANT_TABLES
from heimdex.adapters.db.tenancy_report import tenancy_report
from heimdex.adapters.db.unit_of_work import SqlUnitOfWork, SqlUnitOfWorkFactory
from heimdex.domain.frames import FrameFingerprint
from tests.contract.test_repositories import new_org, stored_asset
from tests.fixtures.db import PostgresCatalogue

pytestmark = pytest.mark.postgres

ALL_ASSETS = text("SELECT org_id FROM assets")  # no WHERE: the point of these tests


@pytest.fixture
async def runtime(postgres_catalogue: PostgresCatalogue) -> AsyncIterator[Database]:
    """The session's database as the service's runtime role."""
    database = Database(postgres_catalogue.runtime_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def two_orgs(runtime: Database) -> tuple[str, str]:
    """Two organisations with two assets each (and their uploads, and a fingerprinted frame
    each: the same fingerprint in both organisations)."""
    uow = SqlUnitOfWorkFactory(runtime)
    org_a, org_b = new_org(), new_org()
    for org in (org_a, org_a, org_b, org_b):
        asset = await stored_asset(uow, org)
        async with uow(org) as unit:
            await unit.frames.replace(asset.id, [FrameFingerprint(time=1.0, fingerprint=42)])
            await unit.commit()
    return org_a, org_b


async def visible_orgs(unit: SqlUnitOfWork) -> list[str]:
    result = await unit.session.execute(ALL_ASSETS)
    return sorted(set(result.scalars()))


async def test_a_query_without_org_filter_sees_only_its_own_org(
    runtime: Database, two_orgs: tuple[str, str]
) -> None:
    org_a, org_b = two_orgs
    uow = SqlUnitOfWorkFactory(runtime)
    async with uow(org_a) as unit:
        rows = (await unit.session.execute(ALL_ASSETS)).scalars().all()
        assert rows == [org_a, org_a]
        for table in TENANT_TABLES:  # every tenant table, not just assets
            query = text(f"SELECT DISTINCT org_id FROM {table}")  # noqa: S608 - our names
            orgs = (await unit.session.execute(query)).all()
            assert all(row.org_id == org_a for row in orgs), table
    async with uow(org_b) as unit:
        assert await visible_orgs(unit) == [org_b]


async def test_org_a_cannot_change_or_create_org_b_rows(
    runtime: Database, two_orgs: tuple[str, str]
) -> None:
    org_a, org_b = two_orgs
    uow = SqlUnitOfWorkFactory(runtime)
    async with uow(org_a) as unit:
        changed = await unit.session.execute(
            text("UPDATE assets SET status = 'failed' WHERE org_id = :org"), {"org": org_b}
        )
        assert changed.rowcount == 0  # type: ignore[attr-defined]
        deleted = await unit.session.execute(
            text("DELETE FROM assets WHERE org_id = :org"), {"org": org_b}
        )
        assert deleted.rowcount == 0  # type: ignore[attr-defined]
        with pytest.raises(DBAPIError, match="row-level security"):
            await unit.session.execute(
                text("UPDATE assets SET org_id = :org WHERE org_id = :own"),
                {"org": org_b, "own": org_a},
            )
    async with uow(org_b) as unit:
        assert (await unit.session.execute(ALL_ASSETS)).scalars().all() == [org_b, org_b]


async def test_a_transaction_begun_after_commit_is_scoped_too(
    runtime: Database, two_orgs: tuple[str, str]
) -> None:
    org_a, _ = two_orgs
    async with SqlUnitOfWorkFactory(runtime)(org_a) as unit:
        await unit.commit()
        assert await visible_orgs(unit) == [org_a]  # not [] (unscoped) and not everyone's


async def test_with_no_org_set_nothing_is_visible_and_inserts_are_refused(
    runtime: Database, two_orgs: tuple[str, str]
) -> None:
    async with runtime.engine.connect() as connection:
        assert (await connection.execute(ALL_ASSETS)).all() == []
        for table in TENANT_TABLES:
            query = text(f"SELECT count(*) FROM {table}")  # noqa: S608 - our names
            count = (await connection.execute(query)).scalar()
            assert count == 0, table
        with pytest.raises(DBAPIError, match="row-level security"):
            await connection.execute(
                text(
                    "INSERT INTO idempotency_records (id, org_id, method, route, key, "
                    "fingerprint, lease_until, expires_at, created_at) VALUES (:id, 'org-x', "
                    "'POST', '/r', 'k', 'f', :now, :now, :now)"
                ),
                {"id": uuid.uuid4(), "now": datetime.now(UTC)},
            )


async def test_the_org_setting_never_leaks_to_the_next_user_of_a_pooled_connection(
    postgres_catalogue: PostgresCatalogue, two_orgs: tuple[str, str]
) -> None:
    org_a, org_b = two_orgs
    database = Database(postgres_catalogue.runtime_url, pool_size=1, max_overflow=0)
    try:
        uow = SqlUnitOfWorkFactory(database)
        backends: set[int] = set()
        async with uow(org_a) as unit:
            backends.add((await unit.session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            assert await visible_orgs(unit) == [org_a]
            await unit.commit()
        async with uow(org_b) as unit:
            backends.add((await unit.session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            assert await visible_orgs(unit) == [org_b]
            # left without commit: a rollback ends the setting just the same
        async with database.engine.connect() as connection:
            backends.add((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            setting = await connection.execute(
                text("SELECT current_setting('heimdex.org_id', true)")
            )
            assert setting.scalar_one() == ""  # an ended set_config leaves '' (NULLIF's job)
            assert (await connection.execute(ALL_ASSETS)).all() == []
        assert len(backends) == 1, "the three transactions must share one connection"
    finally:
        await database.dispose()


async def test_the_runtime_role_passes_the_tenancy_report(
    runtime: Database, postgres_catalogue: PostgresCatalogue
) -> None:
    report = await tenancy_report(runtime)
    assert report.problems == []
    assert report.enforced
    assert report.role == postgres_catalogue.runtime
    assert not report.superuser
    assert not report.bypass_rls
    assert [table.name for table in report.tables] == list(TENANT_TABLES)
    for table in report.tables:
        assert table.rls_enabled
        assert table.rls_forced
        assert table.policies >= 1
        assert not table.owned_by_current_role


async def test_the_tables_belong_to_the_owner_role_that_migrated_them(
    postgres_catalogue: PostgresCatalogue,
) -> None:
    database = Database(postgres_catalogue.owner_url)
    try:
        report = await tenancy_report(database)
    finally:
        await database.dispose()
    assert not report.superuser
    assert not report.bypass_rls
    assert all(table.owned_by_current_role for table in report.tables)
    assert any("owns table assets" in problem for problem in report.problems)


async def test_the_tenancy_report_flags_a_superuser(
    postgres_catalogue: PostgresCatalogue,
) -> None:
    database = Database(postgres_catalogue.superuser_url)
    try:
        report = await tenancy_report(database)
    finally:
        await database.dispose()
    assert report.superuser
    assert any("is a superuser" in problem for problem in report.problems)
    assert any("BYPASSRLS" in problem for problem in report.problems)


async def test_the_tenancy_report_has_nothing_to_check_on_sqlite(sqlite_url: str) -> None:
    database = Database(sqlite_url)
    try:
        report = await tenancy_report(database)
    finally:
        await database.dispose()
    assert report.backend == "sqlite"
    assert not report.enforced
    assert report.problems == []
