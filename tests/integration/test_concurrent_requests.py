"""Requests that read and then write on what they read, fired at once, on SQLite and on
PostgreSQL as the runtime role: a quota is never overshot and one asset never gets two active
jobs. Each use case runs concurrently on its own connections, as simultaneous API requests do."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.job_directory import SqlJobDirectory
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.application.ingest import IngestLimits, IngestService, UploadRequest
from heimdex.application.job_policy import JobPolicy
from heimdex.application.job_requests import JobRequests
from heimdex.domain.errors import JobQuotaExceeded, StorageQuotaExceeded
from heimdex.domain.model import Principal, ThumbnailSpec
from tests.contract.test_repositories import new_org, stored_asset
from tests.unit.fakes import (
    FakeClock,
    FakeMetrics,
    FakeProber,
    FakeQueue,
    FakeStorage,
)

AT_ONCE = 12
ROOM_FOR = 3
SIZE = 1000


@pytest.fixture
def uow(database: Database) -> SqlUnitOfWorkFactory:
    return SqlUnitOfWorkFactory(database)


def job_service(database: Database, uow: SqlUnitOfWorkFactory, **policy: Any) -> JobRequests:
    return JobRequests(
        uow, SqlJobDirectory(database), FakeQueue(), FakeClock(), JobPolicy(**policy)
    )


async def at_once(*calls: Any) -> list[Any]:
    """Every call started before any finishes; answers results and exceptions alike."""
    return await asyncio.gather(*calls, return_exceptions=True)


def unexpected(outcomes: list[Any], allowed: type[Exception]) -> list[Any]:
    return [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, allowed)]


async def test_simultaneous_inits_never_overshoot_the_storage_quota(
    uow: SqlUnitOfWorkFactory,
) -> None:
    ingest = IngestService(
        uow,
        FakeStorage(),
        FakeProber(),
        FakeClock(),
        IngestLimits(
            max_upload_size_bytes=SIZE,
            upload_url_ttl=timedelta(hours=1),
            upload_stall=timedelta(minutes=5),
            storage_quota_bytes=ROOM_FOR * SIZE,
        ),
        metrics=FakeMetrics(),
    )
    org = Principal(org_id=new_org())
    request = UploadRequest(source_name="c.mp4", content_length=SIZE, content_type="video/mp4")

    outcomes = await at_once(
        *(ingest.init_upload(org, request, "http://test") for _ in range(AT_ONCE))
    )

    assert not unexpected(outcomes, StorageQuotaExceeded), outcomes
    issued = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(issued) == ROOM_FOR
    async with uow(org.org_id) as work:
        assert await work.uploads.reserved_bytes(FakeClock().now()) == ROOM_FOR * SIZE


async def test_simultaneous_sidecar_requests_never_overshoot_the_job_quota(
    database: Database, uow: SqlUnitOfWorkFactory
) -> None:
    jobs = job_service(database, uow, max_active_per_org=ROOM_FOR)
    org = Principal(org_id=new_org())
    assets = [await stored_asset(uow, org.org_id) for _ in range(AT_ONCE)]

    outcomes = await at_once(
        *(jobs.request_sidecar(org, asset.id, ThumbnailSpec()) for asset in assets)
    )

    assert not unexpected(outcomes, JobQuotaExceeded), outcomes
    started = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(started) == ROOM_FOR
    async with uow(org.org_id) as work:
        assert await work.jobs.count_active() == ROOM_FOR


async def test_simultaneous_requests_for_one_asset_start_one_job(
    database: Database, uow: SqlUnitOfWorkFactory
) -> None:
    jobs = job_service(database, uow)
    org = Principal(org_id=new_org())
    asset = await stored_asset(uow, org.org_id)

    outcomes = await at_once(
        *(jobs.request_sidecar(org, asset.id, ThumbnailSpec()) for _ in range(AT_ONCE))
    )

    assert not unexpected(outcomes, Exception), outcomes
    assert len({job.id for job, _ in outcomes}) == 1, "every request must get the same job"
    assert sum(new for _, new in outcomes) == 1
    async with uow(org.org_id) as work:
        assert await work.jobs.count_active() == 1
        latest = await work.jobs.latest_for_asset(asset.id, outcomes[0][0].kind)
    assert latest is not None
    assert latest.id == outcomes[0][0].id
    assert uuid.UUID(str(latest.id)) == latest.id
