"""The repository questions quotas ask, on SQLite and PostgreSQL (as the runtime role, under
row-level security) and the in-memory fake: an organisation's stored bytes, its open uploads,
its active jobs."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from heimdex.domain.model import JobStatus, UploadStatus
from heimdex.domain.ports import UnitOfWorkFactory
from tests.builders import T0, make_job, make_upload
from tests.contract.test_repositories import new_org, stored_asset


async def committed_asset(uow: UnitOfWorkFactory, org: str, size: int) -> None:
    """An asset and its upload as a commit leaves them: the upload ``committed``."""
    asset = await stored_asset(uow, org, size_bytes=size)
    async with uow(org) as work:
        upload = await work.uploads.get(asset.upload_id)
        assert upload is not None
        await work.uploads.save(msgspec.structs.replace(upload, status=UploadStatus.COMMITTED))
        await work.commit()


async def test_stored_and_reserved_bytes_are_the_organisations_own(
    uow: UnitOfWorkFactory,
) -> None:
    org, other = new_org(), new_org()
    async with uow(org) as work:
        assert await work.assets.total_size() == 0
        assert await work.uploads.reserved_bytes(T0) == 0
    await committed_asset(uow, org, 1000)
    await committed_asset(uow, org, 234)
    await committed_asset(uow, other, 10**9)
    later = T0 + timedelta(hours=2)
    uploads = [
        make_upload(org, content_length=100),  # open until T0 + 1 h
        make_upload(org, content_length=20, expires_at=T0 + timedelta(hours=3)),
        make_upload(org, content_length=3, status=UploadStatus.RECEIVED),  # bytes are stored
        make_upload(org, content_length=10**6, status=UploadStatus.COMMITTED),  # an asset's
    ]
    async with uow(org) as work:
        for upload in uploads:
            await work.uploads.add(upload)
        await work.commit()
    async with uow(other) as work:
        await work.uploads.add(make_upload(other, content_length=10**9))
        await work.commit()
    async with uow(org) as work:
        # Committed uploads count as their assets, not twice.
        assert await work.assets.total_size() == 1234
        assert await work.uploads.reserved_bytes(T0) == 123
        assert await work.uploads.reserved_bytes(later) == 23  # the first slot expired


async def test_active_jobs_are_queued_and_running_ones_of_the_organisation(
    uow: UnitOfWorkFactory,
) -> None:
    org, other = new_org(), new_org()
    asset = await stored_asset(uow, org)
    theirs = await stored_asset(uow, other)
    async with uow(org) as work:
        for status in JobStatus:
            await work.jobs.add(make_job(asset, status=status))
        await work.jobs.add(make_job(asset, status=JobStatus.QUEUED))
        await work.commit()
    async with uow(other) as work:
        await work.jobs.add(make_job(theirs, status=JobStatus.RUNNING))
        await work.commit()
    async with uow(org) as work:
        assert await work.jobs.count_active() == 3
        job = make_job(asset, status=JobStatus.RUNNING)
        await work.jobs.add(job)
        await work.jobs.save(msgspec.structs.replace(job, status=JobStatus.FAILED))
        assert await work.jobs.count_active() == 3
