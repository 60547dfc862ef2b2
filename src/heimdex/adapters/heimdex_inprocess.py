"""The ``IngestTarget`` port on the use cases of this process: ``heimdex ingest`` without
``--api``, on the embedded default (the same ./data as ``heimdex serve``; SQLite runs in WAL
mode with a busy timeout, so both can write at once)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from heimdex.application.assets import AssetService
from heimdex.application.bulk_ingest import (
    LIMIT_WAIT_SECONDS,
    IngestFailure,
    KnownAsset,
    UploadSlot,
)
from heimdex.application.ingest import IngestService, UploadRequest
from heimdex.application.job_requests import JobRequests
from heimdex.application.resumable_uploads import ResumableUploads
from heimdex.domain.errors import HeimdexError, LimitExceeded
from heimdex.domain.model import AssetFilter, AssetStatus, JobStatus, Principal, ThumbnailSpec

_POLL_SECONDS = 0.25
T = TypeVar("T")


class InProcessIngestTarget:
    """The organisation ``org_id`` of this process's Heimdex."""

    def __init__(
        self,
        org_id: str,
        *,
        ingest: IngestService,
        resumable: ResumableUploads,
        assets: AssetService,
        jobs: JobRequests,
    ) -> None:
        self._principal = Principal(org_id=org_id, subject="heimdex-ingest")
        self._ingest, self._resumable = ingest, resumable
        self._assets, self._jobs = assets, jobs

    async def find_asset(self, sha256: str) -> KnownAsset | None:
        try:
            page = await self._assets.list(self._principal, AssetFilter(sha256=sha256), 1, None)
        except HeimdexError as exc:
            raise IngestFailure(exc.code, exc.message) from None
        if not page.items:
            return None
        asset = page.items[0]
        # COMMITTED: no sidecar job was ever asked for (a request makes it PROCESSING).
        return KnownAsset(
            asset_id=str(asset.id), needs_sidecar=asset.status is AssetStatus.COMMITTED
        )

    async def init_upload(
        self, name: str, size: int, content_type: str, sha256: str, *, resumable: bool = False
    ) -> UploadSlot:
        request = UploadRequest(
            source_name=name,
            content_length=size,
            content_type=content_type,
            sha256=sha256,
            resumable=resumable,
        )
        principal = self._principal
        issued = await _waiting_out_limits(
            lambda: self._ingest.init_upload(principal, request, "http://localhost/")
        )
        target = issued.target
        return UploadSlot(
            upload_id=str(issued.upload.id),
            url=target.url,
            method=target.method,
            headers=dict(target.headers),
            resumable=resumable,
        )

    async def upload(self, slot: UploadSlot, size: int, chunks: AsyncIterator[bytes]) -> None:
        org_id, upload_id = self._principal.org_id, UUID(slot.upload_id)
        try:
            if not slot.resumable:
                await self._ingest.receive_upload(org_id, upload_id, chunks)
                return
            try:
                await self._resumable.append(org_id, upload_id, 0, chunks)
            except BaseException:
                # After Ctrl-C too (its cancellation reaches this task once): the slot would
                # hold one of the organisation's few unfinished resumable uploads for a day.
                with contextlib.suppress(HeimdexError):
                    await self._resumable.terminate(org_id, upload_id)
                raise
        except HeimdexError as exc:
            raise IngestFailure(exc.code, exc.message) from None

    async def commit(self, upload_id: str) -> str:
        principal, upload = self._principal, UUID(upload_id)
        asset, _ = await _waiting_out_limits(lambda: self._ingest.commit_upload(principal, upload))
        return str(asset.id)

    async def request_sidecar(self, asset_id: str) -> str:
        principal, asset = self._principal, UUID(asset_id)
        job, _ = await _waiting_out_limits(
            lambda: self._jobs.request_sidecar(principal, asset, ThumbnailSpec())
        )
        return str(job.id)

    async def wait_for_job(self, job_id: str) -> str | None:
        while True:
            try:
                job = await self._jobs.get(self._principal, UUID(job_id))
            except HeimdexError as exc:
                raise IngestFailure(exc.code, exc.message) from None
            if job.status is JobStatus.SUCCEEDED:
                return None
            if job.status is JobStatus.FAILED:
                return job.error.code if job.error else "job_failed"
            await asyncio.sleep(_POLL_SECONDS)


async def _waiting_out_limits(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``; a per-organisation limit that says when to try again (the probe cap when
    several large files commit at once, the job cap) is waited out as the HTTP target waits
    out a 429, for up to ``LIMIT_WAIT_SECONDS``. Any other refusal is the file's failure."""
    waited = 0.0
    while True:
        try:
            return await call()
        except LimitExceeded as exc:
            pause = max(1, exc.retry_after or 0)
            if exc.retry_after is None or waited + pause > LIMIT_WAIT_SECONDS:
                raise IngestFailure(exc.code, exc.message) from None
        except HeimdexError as exc:
            raise IngestFailure(exc.code, exc.message) from None
        await asyncio.sleep(pause)
        waited += pause
