"""One organisation's many slow requests leave connections to the others (PostgreSQL, HTTP).

Both pools the requests use are made four connections. Organisation A sends eight requests that
each hold a connection until the test lets them go: in the unit-of-work pool, storage-quota
inits, which wait for A's own organisation lock (the test holds it); in the read pool, reads of
A's asset that first wait for a lock the test holds (a test-only slow read). Then organisation B
sends one request. With each organisation's share (half a pool) B is answered while all of A's
requests are still held; with no share B waits behind A's — the same test, switched off, shows
the harm. The locks are let go once B answered, or after a few seconds when it cannot be.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from asyncpg.pool import PoolConnectionProxy
from litestar import Litestar

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.pg_reads import PgCatalogueReads, asset_from_record, asyncpg_dsn
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.bootstrap import build_adapters
from heimdex.domain.model import Asset
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.contract.test_repositories import new_org, stored_asset
from tests.fixtures.app import TEST_SECRET, bearer
from tests.fixtures.db import PostgresCatalogue

pytestmark = pytest.mark.postgres

POOL = 4
GREEDY_REQUESTS = 2 * POOL
#: how long the test holds A back when B cannot be answered (share off): B's wait is shown by
#: the order of the answers, not by this
HOLD_SECONDS = 3.0
#: the lock a slow read of the test waits for
SLOW_READ_LOCK = 7_226_001


class SlowReads(PgCatalogueReads):
    """The read path with a test-only slow read: reading one of ``slow_org``'s assets first
    waits, on the connection it reads with, for ``SLOW_READ_LOCK`` (which the test holds)."""

    def __init__(self, url: str, *, pool_size: int, slow_org: str) -> None:
        super().__init__(url, pool_size=pool_size)
        self.slow_org = slow_org

    async def asset(self, org_id: str, asset_id: uuid.UUID) -> Asset | None:
        if org_id != self.slow_org:
            return await super().asset(org_id, asset_id)

        async def slow_read(connection: PoolConnectionProxy) -> list[Any]:
            # One connection throughout, as a slow query holds it.
            await connection.execute("SELECT pg_advisory_lock_shared($1::bigint)", SLOW_READ_LOCK)
            try:
                rows: list[Any] = await connection.fetch(
                    "SELECT * FROM heimdex_read_asset($1, $2)", org_id, asset_id
                )
            finally:
                await connection.execute(
                    "SELECT pg_advisory_unlock_shared($1::bigint)", SLOW_READ_LOCK
                )
            return rows

        rows = await self._run(slow_read)
        return asset_from_record(rows[0]) if rows else None


def settings_for(catalogue: PostgresCatalogue, tmp_path: Path, share: float) -> Settings:
    return Settings.from_flat(
        data_dir=tmp_path,
        jwt_secret=TEST_SECRET,
        database_url=catalogue.runtime_url,
        database_read_pool_size=POOL,
        database_org_share=share,
        # Long enough that A's requests past its share are served in turn, not refused.
        database_org_wait_seconds=60.0,
        org_storage_quota_bytes=1 << 40,  # every init counts the quota under the org lock
        sweep_interval_seconds=3600.0,  # no sweep takes a connection meanwhile
    )


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` on this event loop, so that requests run at once (Litestar's test
    client answers one at a time from a thread of its own)."""
    async with (
        app.lifespan(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]  # an ASGI app
            base_url="http://heimdex.test",
        ) as client,
    ):
        yield client


def token(org: str) -> dict[str, str]:
    return bearer(jwt.encode({"org_id": org}, TEST_SECRET, algorithm="HS256"))


@asynccontextmanager
async def superuser(catalogue: PostgresCatalogue) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(catalogue.superuser_url))
    try:
        yield connection
    finally:
        await connection.close()


async def until_blocked(admin: asyncpg.Connection, count: int) -> None:
    """Until ``count`` backends of this database wait for an advisory lock: A's requests hold
    that many connections, held back."""
    for _ in range(500):
        waiting = await admin.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
        )
        if waiting == count:
            return
        assert waiting < count, f"{waiting} requests hold connections, more than {count}"
        await asyncio.sleep(0.02)
    raise AssertionError(f"A's requests never held {count} connections")


Send = Callable[[], Awaitable[httpx.Response]]


async def a_done_before_b_answered(
    admin: asyncpg.Connection,
    greedy: Send,
    other: Send,
    *,
    held: int,
    release: str,
    lock_args: list[Any],
) -> tuple[int, list[int], int]:
    """A sends ``GREEDY_REQUESTS`` at once, held back by the test's lock until ``held`` of them
    hold connections; then B sends one. Answers how many of A's were answered before B's, the
    statuses of A's and B's."""
    answered: list[str] = []

    async def send(org: str, request: Send) -> httpx.Response:
        response = await request()
        answered.append(org)
        return response

    greedy_tasks = [asyncio.create_task(send("A", greedy)) for _ in range(GREEDY_REQUESTS)]
    try:
        await until_blocked(admin, held)
        other_task = asyncio.create_task(send("B", other))
        await asyncio.wait({other_task}, timeout=HOLD_SECONDS)
    finally:
        await admin.execute(release, *lock_args)  # A's requests go on
        if sys.exc_info()[0] is not None:
            await asyncio.gather(*greedy_tasks, return_exceptions=True)
    other_response = await other_task
    greedy_responses = await asyncio.gather(*greedy_tasks)
    return (
        answered.index("B"),
        [response.status_code for response in greedy_responses],
        other_response.status_code,
    )


@pytest.mark.parametrize(("share", "expected_held"), [(0.5, POOL // 2), (0.0, POOL)])
async def test_a_greedy_org_leaves_unit_of_work_connections_to_another(
    postgres_catalogue: PostgresCatalogue, tmp_path: Path, share: float, expected_held: int
) -> None:
    settings = settings_for(postgres_catalogue, tmp_path, share)
    database = Database(postgres_catalogue.runtime_url, pool_size=POOL, max_overflow=0)
    adapters = dataclasses.replace(
        build_adapters(settings), database=database, uow=SqlUnitOfWorkFactory(database)
    )
    org_a, org_b = new_org(), new_org()
    body = {"source_name": "clip.mp4", "content_length": 1000, "content_type": "video/mp4"}
    lock = "hashtextextended($1, 0)"
    try:
        async with (
            superuser(postgres_catalogue) as admin,
            serving(create_app(settings=settings, adapters=adapters)) as client,
        ):
            # The organisation lock every quota-counted init of A takes, held by the test.
            await admin.execute(f"SELECT pg_advisory_lock({lock})", f"heimdex.org:{org_a}")
            b_after, a_statuses, b_status = await a_done_before_b_answered(
                admin,
                lambda: client.post("/v1/ingest/init", json=body, headers=token(org_a)),
                lambda: client.post("/v1/ingest/init", json=body, headers=token(org_b)),
                held=expected_held,
                release=f"SELECT pg_advisory_unlock({lock})",
                lock_args=[f"heimdex.org:{org_a}"],
            )
    finally:
        await database.dispose()
    assert b_status == 201
    assert a_statuses == [201] * GREEDY_REQUESTS  # A's past its share waited their turn
    if share:
        assert b_after == 0  # B was answered while every one of A's was still held
    else:
        assert b_after >= 1  # no share: B waited until A's requests let a connection go


@pytest.mark.parametrize(("share", "expected_held"), [(0.5, POOL // 2), (0.0, POOL)])
async def test_a_greedy_org_leaves_read_connections_to_another(
    postgres_catalogue: PostgresCatalogue, tmp_path: Path, share: float, expected_held: int
) -> None:
    settings = settings_for(postgres_catalogue, tmp_path, share)
    org_a, org_b = new_org(), new_org()
    writer = Database(postgres_catalogue.runtime_url)
    try:
        units = SqlUnitOfWorkFactory(writer)
        asset_a = await stored_asset(units, org_a)
        asset_b = await stored_asset(units, org_b)
    finally:
        await writer.dispose()
    reads = SlowReads(postgres_catalogue.runtime_url, pool_size=POOL, slow_org=org_a)
    adapters = dataclasses.replace(build_adapters(settings), reads=reads)
    app: Litestar = create_app(settings=settings, adapters=adapters)
    try:
        async with (
            superuser(postgres_catalogue) as admin,
            serving(app) as client,
        ):
            await admin.execute("SELECT pg_advisory_lock($1::bigint)", SLOW_READ_LOCK)
            b_after, a_statuses, b_status = await a_done_before_b_answered(
                admin,
                lambda: client.get(f"/v1/assets/{asset_a.id}", headers=token(org_a)),
                lambda: client.get(f"/v1/assets/{asset_b.id}", headers=token(org_b)),
                held=expected_held,
                release="SELECT pg_advisory_unlock($1::bigint)",
                lock_args=[SLOW_READ_LOCK],
            )
    finally:
        await reads.aclose()
    assert b_status == 200
    assert a_statuses == [200] * GREEDY_REQUESTS
    if share:
        assert b_after == 0
    else:
        assert b_after >= 1


async def test_past_its_share_and_the_wait_an_org_gets_429_database_busy_with_retry_after(
    postgres_catalogue: PostgresCatalogue, tmp_path: Path
) -> None:
    settings = settings_for(postgres_catalogue, tmp_path, 0.5).replace_flat(
        database_org_wait_seconds=0.0
    )
    org_a = new_org()
    writer = Database(postgres_catalogue.runtime_url)
    try:
        asset_a = await stored_asset(SqlUnitOfWorkFactory(writer), org_a)
    finally:
        await writer.dispose()
    reads = SlowReads(postgres_catalogue.runtime_url, pool_size=POOL, slow_org=org_a)
    app = create_app(
        settings=settings, adapters=dataclasses.replace(build_adapters(settings), reads=reads)
    )
    try:
        async with superuser(postgres_catalogue) as admin, serving(app) as client:
            await admin.execute("SELECT pg_advisory_lock($1::bigint)", SLOW_READ_LOCK)
            try:
                held = [
                    asyncio.create_task(
                        client.get(f"/v1/assets/{asset_a.id}", headers=token(org_a))
                    )
                    for _ in range(POOL // 2)
                ]
                await until_blocked(admin, POOL // 2)
                # Bounded: were A not held to its share, this read would wait for the lock.
                refused = await asyncio.wait_for(
                    client.get(f"/v1/assets/{asset_a.id}", headers=token(org_a)), HOLD_SECONDS
                )
                listing = await client.get("/v1/assets", headers=token(org_a))
                health = await client.get("/health")  # no organisation: no share to wait for
            finally:
                await admin.execute("SELECT pg_advisory_unlock($1::bigint)", SLOW_READ_LOCK)
            assert [r.status_code for r in await asyncio.gather(*held)] == [200] * (POOL // 2)
    finally:
        await reads.aclose()
    for response in (refused, listing):
        assert response.status_code == 429
        assert response.json()["code"] == "database_busy"
        assert response.headers["Retry-After"] == "1"
    assert health.status_code == 200
