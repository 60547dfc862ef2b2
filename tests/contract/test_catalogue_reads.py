"""The ``CatalogueReads`` port: PostgreSQL's asyncpg adapter and ``UnitOfWorkReads`` (over
SQLite and the in-memory fake) answer what the repositories answer.

Rows are written through the unit of work and read through the port. On PostgreSQL the port is
``PgCatalogueReads`` connected as the runtime role, under row-level security.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any, cast

import pytest

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.pg_reads import PgCatalogueReads
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.application.catalogue_reads import UnitOfWorkReads
from heimdex.domain.model import (
    Asset,
    AssetFilter,
    AssetStatus,
    Job,
    JobFilter,
    JobKind,
    JobStatus,
    PageCursor,
)
from heimdex.domain.ports import CatalogueReads, UnitOfWorkFactory
from tests.builders import T0, make_job
from tests.contract.test_repositories import catalogue_for_filters, new_org, stored_asset
from tests.unit.fakes import FakeDatabase


@dataclass
class Reading:
    """Where rows are written (``uow``) and where they are read (``reads``)."""

    uow: UnitOfWorkFactory
    reads: CatalogueReads


@pytest.fixture
async def reading(backend: str) -> AsyncIterator[Reading]:
    if backend == "fake":
        # The fake keeps the contract (conftest.py's ``uow`` uses it the same way).
        fake = cast("UnitOfWorkFactory", FakeDatabase())
        yield Reading(fake, UnitOfWorkReads(fake))
        return
    database = Database(backend)
    uow = SqlUnitOfWorkFactory(database)
    reads: CatalogueReads = (
        PgCatalogueReads(backend, pool_size=3) if database.is_postgres else UnitOfWorkReads(uow)
    )
    try:
        yield Reading(uow, reads)
    finally:
        await reads.aclose()
        await database.dispose()


async def stored_jobs(uow: UnitOfWorkFactory, *jobs: Job) -> None:
    async with uow(jobs[0].org_id) as unit:
        for job in jobs:
            await unit.jobs.add(job)
        await unit.commit()


async def test_an_asset_and_a_job_read_back_as_stored(reading: Reading) -> None:
    org = new_org()
    asset = await stored_asset(reading.uow, org)
    job = make_job(asset, status=JobStatus.FAILED)
    await stored_jobs(reading.uow, job)

    assert await reading.reads.asset(org, asset.id) == asset
    assert await reading.reads.job(org, job.id) == job
    async with reading.uow(org) as unit:  # the repositories' answer, field for field
        by_repository = (await unit.assets.get(asset.id), await unit.jobs.get(job.id))
    assert by_repository == (
        await reading.reads.asset(org, asset.id),
        await reading.reads.job(org, job.id),
    )
    assert await reading.reads.asset(org, job.id) is None  # no such asset
    assert await reading.reads.job(org, asset.id) is None


async def test_another_organisations_rows_are_not_there(reading: Reading) -> None:
    org_a, org_b = new_org(), new_org()
    asset = await stored_asset(reading.uow, org_a)
    job = make_job(asset)
    await stored_jobs(reading.uow, job)

    assert await reading.reads.asset(org_b, asset.id) is None
    assert await reading.reads.job(org_b, job.id) is None
    assert (await reading.reads.assets(org_b, AssetFilter(), limit=10, after=None)).items == []
    assert (await reading.reads.jobs(org_b, JobFilter(), limit=10, after=None)).items == []
    assert await reading.reads.asset(org_a, asset.id) == asset


async def names(reading: Reading, org: str, assets: dict[str, Asset], **filters: Any) -> str:
    by_id = {asset.id: name for name, asset in assets.items()}
    page = await reading.reads.assets(org, AssetFilter(**filters), limit=50, after=None)
    async with reading.uow(org) as unit:
        same = await unit.assets.list(AssetFilter(**filters), limit=50, after=None)
    assert page == same  # the repository's page, to the last field
    return "".join(by_id[asset.id] for asset in page.items)


async def test_asset_listing_filters_alone_and_combined(reading: Reading) -> None:
    org = new_org()
    assets = await catalogue_for_filters(reading.uow, org)
    await stored_asset(reading.uow, new_org())  # another org's asset never shows

    assert await names(reading, org, assets) == "fedcba"
    assert await names(reading, org, assets, status=AssetStatus.COMMITTED) == "fdba"
    assert await names(reading, org, assets, min_duration=10.0) == "ecb"
    assert await names(reading, org, assets, max_duration=10.0) == "fba"
    assert await names(reading, org, assets, codec="aac") == "fea"
    assert await names(reading, org, assets, codec="MP3") == "d"
    assert await names(reading, org, assets, min_height=361) == "ecb"
    after_b = assets["b"].created_at
    assert await names(reading, org, assets, created_after=after_b) == "fedc"
    assert await names(reading, org, assets, created_before=after_b) == "a"
    assert (
        await names(
            reading,
            org,
            assets,
            status=AssetStatus.COMMITTED,
            codec="aac",
            min_duration=1.0,
            min_height=300,
            created_after=assets["a"].created_at.astimezone(UTC) - timedelta(seconds=1),
            created_before=assets["f"].created_at,
        )
        == "a"
    )


async def test_asset_listing_by_sha256(reading: Reading) -> None:
    org = new_org()
    mine = await stored_asset(reading.uow, org, sha256="ab" * 32)
    await stored_asset(reading.uow, org, sha256="cd" * 32)
    await stored_asset(reading.uow, new_org(), sha256="ab" * 32)
    page = await reading.reads.assets(org, AssetFilter(sha256="AB" * 32), limit=50, after=None)
    assert [a.id for a in page.items] == [mine.id]


async def test_asset_pages_newest_first_across_ties(reading: Reading) -> None:
    org = new_org()
    times = [T0, T0 + timedelta(seconds=1), *[T0 + timedelta(seconds=2)] * 4, T0 + timedelta(3)]
    created = [await stored_asset(reading.uow, org, created_at=moment) for moment in times]
    expected = sorted(created, key=lambda a: (a.created_at, a.id), reverse=True)

    seen: list[Asset] = []
    after: PageCursor | None = None
    pages = 0
    while True:
        page = await reading.reads.assets(org, AssetFilter(), limit=2, after=after)
        pages += 1
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        assert page.next_cursor == PageCursor(
            created_at=page.items[-1].created_at, id=page.items[-1].id
        )
        after = page.next_cursor
    assert [a.id for a in seen] == [a.id for a in expected]
    assert pages == 4
    everything = await reading.reads.assets(org, AssetFilter(), limit=7, after=None)
    assert len(everything.items) == 7
    assert everything.next_cursor is None


async def test_job_listing_filters_and_cursor(reading: Reading) -> None:
    org = new_org()
    asset = await stored_asset(reading.uow, org)
    other = await stored_asset(reading.uow, org)
    jobs = [
        make_job(asset, status=status, created_at=T0 + timedelta(seconds=i))
        for i, status in enumerate([JobStatus.FAILED, JobStatus.SUCCEEDED, JobStatus.FAILED])
    ]
    elsewhere = make_job(other, created_at=T0 + timedelta(seconds=2))  # ties with jobs[2]
    await stored_jobs(reading.uow, *jobs, elsewhere)
    await stored_jobs(reading.uow, make_job(await stored_asset(reading.uow, new_org())))

    failed = JobFilter(status=JobStatus.FAILED)
    page = await reading.reads.jobs(org, failed, limit=1, after=None)
    rest = await reading.reads.jobs(org, failed, limit=1, after=page.next_cursor)
    assert [j.id for j in page.items + rest.items] == [jobs[2].id, jobs[0].id]
    assert rest.next_cursor is None
    by_asset = await reading.reads.jobs(org, JobFilter(asset_id=asset.id), limit=10, after=None)
    assert [j.id for j in by_asset.items] == [j.id for j in reversed(jobs)]
    later = JobFilter(created_after=T0 + timedelta(seconds=1))
    assert {j.id for j in (await reading.reads.jobs(org, later, limit=10, after=None)).items} == {
        jobs[2].id,
        elsewhere.id,
    }
    earlier = JobFilter(created_before=T0 + timedelta(seconds=1), kind=JobKind.SIDECAR)
    assert [j.id for j in (await reading.reads.jobs(org, earlier, limit=10, after=None)).items] == [
        jobs[0].id
    ]
    every = JobFilter()
    whole = await reading.reads.jobs(org, every, limit=10, after=None)
    async with reading.uow(org) as unit:
        by_repository = await unit.jobs.list(every, limit=10, after=None)
    assert whole == by_repository
    assert len(whole.items) == 4
