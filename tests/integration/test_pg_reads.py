"""PostgreSQL's read path (``PgCatalogueReads``): as strict as the unit of work, and robust.

Through HTTP, another organisation's asset and job are 404 on the asyncpg path too. On the
pool's own connections: the organisation set for a read ends with its transaction (the next
user of the connection sees no organisation, so row-level security shows it nothing); a pooled
connection whose backend was terminated is replaced without a failed read; the pool never holds
more connections than it is sized to.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import jwt
import pytest
from litestar.testing import AsyncTestClient

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.pg_reads import APPLICATION_NAME, PgCatalogueReads, asyncpg_dsn
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.domain.errors import DatabaseUnavailable
from heimdex.domain.model import AssetFilter, JobFilter
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.builders import make_job
from tests.contract.test_repositories import new_org, stored_asset
from tests.fixtures.app import TEST_SECRET, bearer, services_of
from tests.fixtures.db import PostgresCatalogue

pytestmark = pytest.mark.postgres


@pytest.fixture
async def stored(
    postgres_catalogue: PostgresCatalogue,
) -> AsyncIterator[tuple[str, uuid.UUID, uuid.UUID]]:
    """Organisation A's asset and job, written through the unit of work as the runtime role."""
    database = Database(postgres_catalogue.runtime_url)
    try:
        uow = SqlUnitOfWorkFactory(database)
        org = new_org()
        asset = await stored_asset(uow, org)
        job = make_job(asset)
        async with uow(org) as unit:
            await unit.jobs.add(job)
            await unit.commit()
        yield org, asset.id, job.id
    finally:
        await database.dispose()


@pytest.fixture
async def reads(postgres_catalogue: PostgresCatalogue) -> AsyncIterator[PgCatalogueReads]:
    adapter = PgCatalogueReads(postgres_catalogue.runtime_url, pool_size=2)
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def superuser(catalogue: PostgresCatalogue) -> asyncpg.Connection:
    return await asyncpg.connect(asyncpg_dsn(catalogue.superuser_url))


async def backends_of(catalogue: PostgresCatalogue) -> list[int]:
    """The read pools' connections (the other fixtures' SQLAlchemy pools are not counted)."""
    admin = await superuser(catalogue)
    try:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE usename = $1 AND datname = $2 AND application_name = $3",
            catalogue.runtime,
            catalogue.database,
            APPLICATION_NAME,
        )
        return [row["pid"] for row in rows]
    finally:
        await admin.close()


async def test_another_organisation_gets_404_through_the_asyncpg_path(
    postgres_catalogue: PostgresCatalogue,
    stored: tuple[str, uuid.UUID, uuid.UUID],
    tmp_path: Path,
) -> None:
    org_a, asset_id, job_id = stored
    org_b = new_org()
    settings = Settings.from_flat(
        data_dir=tmp_path, jwt_secret=TEST_SECRET, database_url=postgres_catalogue.runtime_url
    )
    app = create_app(settings=settings)
    ours = bearer(jwt.encode({"org_id": org_a}, TEST_SECRET, algorithm="HS256"))
    theirs = bearer(jwt.encode({"org_id": org_b}, TEST_SECRET, algorithm="HS256"))
    async with AsyncTestClient(app=app) as client:
        for path in (f"/v1/assets/{asset_id}", f"/v1/jobs/{job_id}"):
            assert (await client.get(path, headers=ours)).status_code == 200, path
            refused = await client.get(path, headers=theirs)
            assert refused.status_code == 404, path
            assert refused.json()["code"] == "not_found"
        for path in ("/v1/assets", "/v1/jobs"):
            assert len((await client.get(path, headers=ours)).json()["items"]) == 1
            assert (await client.get(path, headers=theirs)).json()["items"] == []
        reads = services_of(app).adapters.reads
        assert isinstance(reads, PgCatalogueReads)
        assert reads.pool is not None  # the reads above went through it


async def test_the_organisation_set_for_a_read_ends_with_its_transaction(
    postgres_catalogue: PostgresCatalogue,
    stored: tuple[str, uuid.UUID, uuid.UUID],
) -> None:
    org, asset_id, _ = stored
    reads = PgCatalogueReads(postgres_catalogue.runtime_url, pool_size=1)
    try:
        assert await reads.asset(org, asset_id) is not None
        assert reads.pool is not None
        # The one pooled connection, as the next read would get it.
        async with reads.pool.acquire() as connection:
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SELECT current_setting('heimdex.org_id', true)") in (
                None,
                "",
            )
            # No organisation: row-level security shows nothing, even unfiltered.
            assert await connection.fetchval("SELECT count(*) FROM assets") == 0
            assert await connection.fetchval("SELECT count(*) FROM jobs") == 0
    finally:
        await reads.aclose()


async def test_reads_are_read_only_transactions(
    postgres_catalogue: PostgresCatalogue, reads: PgCatalogueReads
) -> None:
    await reads.assets(new_org(), AssetFilter(), limit=1, after=None)
    assert reads.pool is not None
    async with reads.pool.acquire() as connection:
        await connection.execute("BEGIN READ ONLY")  # what a read begins with
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await connection.execute("DELETE FROM assets")
        await connection.execute("ROLLBACK")


def terminate_without_telling(catalogue: PostgresCatalogue, pids: list[int]) -> None:
    """Terminate backends and wait until they exited, from another thread, while this thread's
    event loop stands still: its pooled connections have not noticed when the next read takes
    one (as when a PostgreSQL restart races a request)."""

    async def terminate() -> None:
        admin = await superuser(catalogue)
        try:
            for pid in pids:
                assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
        finally:
            await admin.close()

    worker = threading.Thread(target=asyncio.run, args=(terminate(),))
    worker.start()
    worker.join()


async def test_a_dead_pooled_connection_is_tried_again_on_a_new_one(
    postgres_catalogue: PostgresCatalogue,
    stored: tuple[str, uuid.UUID, uuid.UUID],
) -> None:
    org, asset_id, job_id = stored
    reads = PgCatalogueReads(postgres_catalogue.runtime_url, pool_size=1)
    try:
        assert await reads.asset(org, asset_id) is not None
        before = await backends_of(postgres_catalogue)
        assert len(before) == 1
        terminate_without_telling(postgres_catalogue, before)
        assert await reads.asset(org, asset_id) is not None  # no pre-ping, no failed read
        assert reads.retried == 1
        assert await reads.job(org, job_id) is not None
        assert reads.retried == 1
        after = await backends_of(postgres_catalogue)
        assert len(after) == 1
        assert after != before  # served by a new backend
    finally:
        await reads.aclose()


async def test_a_read_fails_as_unavailable_when_the_retry_fails_too(
    postgres_catalogue: PostgresCatalogue,
    stored: tuple[str, uuid.UUID, uuid.UUID],
) -> None:
    org, asset_id, _ = stored
    reads = PgCatalogueReads(postgres_catalogue.runtime_url, pool_size=1)
    try:
        assert await reads.asset(org, asset_id) is not None
        assert reads.pool is not None
        reads.pool.set_connect_args("postgresql://postgres@127.0.0.1:1/none")  # a lost server
        terminate_without_telling(postgres_catalogue, await backends_of(postgres_catalogue))
        with pytest.raises(DatabaseUnavailable):
            await reads.asset(org, asset_id)
        assert reads.retried == 1
    finally:
        await reads.aclose()


async def test_the_pool_never_holds_more_connections_than_its_size(
    postgres_catalogue: PostgresCatalogue,
    stored: tuple[str, uuid.UUID, uuid.UUID],
) -> None:
    org, asset_id, _ = stored
    reads = PgCatalogueReads(postgres_catalogue.runtime_url, pool_size=3)
    try:
        results = await asyncio.gather(
            *(reads.asset(org, asset_id) for _ in range(20)),
            *(reads.jobs(org, JobFilter(), limit=5, after=None) for _ in range(20)),
        )
        assert all(result is not None for result in results)
        assert 1 <= len(await backends_of(postgres_catalogue)) <= 3
    finally:
        await reads.aclose()


async def test_an_unreachable_database_is_database_unavailable() -> None:
    reads = PgCatalogueReads("postgresql+asyncpg://postgres@127.0.0.1:1/none", pool_size=1)
    try:
        with pytest.raises(DatabaseUnavailable):
            await reads.asset("org-x", uuid.uuid4())
    finally:
        await reads.aclose()


async def test_an_organisation_outside_the_alphabet_is_refused_before_sql(
    reads: PgCatalogueReads,
) -> None:
    with pytest.raises(ValueError, match="not an organisation id"):
        await reads.asset("x'; DROP TABLE assets; --", uuid.uuid4())


async def test_the_read_functions_run_as_the_caller_and_only_for_the_service(
    postgres_catalogue: PostgresCatalogue,
) -> None:
    admin = await superuser(postgres_catalogue)
    try:
        rows = await admin.fetch(
            "SELECT proname, prosecdef, proconfig FROM pg_proc"
            " WHERE proname IN ('heimdex_read_asset', 'heimdex_read_job') ORDER BY proname"
        )
        assert [row["proname"] for row in rows] == ["heimdex_read_asset", "heimdex_read_job"]
        # SECURITY INVOKER: row-level security binds them as it binds the runtime role.
        assert not any(row["prosecdef"] for row in rows)
        for name in ("heimdex_read_asset", "heimdex_read_job"):
            signature = f"{name}(text, uuid)"
            assert not await admin.fetchval(
                "SELECT has_function_privilege('public', $1, 'EXECUTE')", signature
            )
            assert await admin.fetchval(
                "SELECT has_function_privilege($1, $2, 'EXECUTE')",
                postgres_catalogue.runtime,
                signature,
            )
    finally:
        await admin.close()


async def test_a_read_function_leaves_no_organisation_behind_in_a_transaction_block(
    postgres_catalogue: PostgresCatalogue, stored: tuple[str, uuid.UUID, uuid.UUID]
) -> None:
    """Called inside a caller's transaction, the setting is that transaction's and ends with it
    (what ``set_config(…, true)`` always means); called alone, it ends with the statement."""
    org, asset_id, _ = stored
    runtime = await asyncpg.connect(asyncpg_dsn(postgres_catalogue.runtime_url))
    try:
        assert (
            len(await runtime.fetch("SELECT * FROM heimdex_read_asset($1, $2)", org, asset_id)) == 1
        )
        assert await runtime.fetchval("SELECT current_setting('heimdex.org_id', true)") in (
            None,
            "",
        )
        assert await runtime.fetchval("SELECT count(*) FROM assets") == 0
        async with runtime.transaction():
            await runtime.fetch("SELECT * FROM heimdex_read_asset($1, $2)", org, asset_id)
        assert await runtime.fetchval("SELECT count(*) FROM assets") == 0
        # Another organisation's id through the function: nothing, even with the right row id.
        assert (
            await runtime.fetch("SELECT * FROM heimdex_read_asset($1, $2)", new_org(), asset_id)
            == []
        )
    finally:
        await runtime.close()
