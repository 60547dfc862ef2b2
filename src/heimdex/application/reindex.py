"""``heimdex reindex``: fingerprint the assets processed before frame fingerprints existed.

Fingerprints come from the frames the sidecar job decodes (its storyboard tiles and
thumbnails), so an asset is fingerprinted by running its sidecar job again, with the options of
its latest run: the same outputs at the same keys, a poster a user chose kept, and its frames
stored with the run's success. The jobs go through the queue like any other (organisations take
turns, the job quota holds: a refused request waits and asks again), ``concurrency`` of them in
flight at once.

Resumable: the assets to do are the ready video assets with no fingerprinted frame, asked again
on every run, so a run stopped part-way leaves the done ones done and the next run does the
rest (a job still queued or running from the stopped run is waited for, not asked twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

import anyio
import msgspec

from heimdex.application.job_requests import JobRequests
from heimdex.domain.errors import HeimdexError, LimitExceeded, NotFound
from heimdex.domain.model import JobKind, JobStatus, Principal, StoryboardSpec, ThumbnailSpec
from heimdex.domain.ports import FrameDirectory, UnitOfWorkFactory
from heimdex.logs import get_logger

log = get_logger(__name__)
_PAGE = 500
_POLL_SECONDS = 0.2
_QUOTA_WAIT_SECONDS = 1.0


class ReindexProgress(Protocol):
    """What the command line shows: an asset started, finished, a line above the display."""

    def started(self, name: str) -> None: ...

    def finished(self, name: str) -> None: ...

    def print(self, line: str) -> None: ...


class ReindexSummary(msgspec.Struct, kw_only=True):
    fingerprinted: int = 0
    #: jobs that failed, or assets that still had no frame after their job (all frames dull)
    failed: int = 0


class Reindexer:
    def __init__(
        self, uow: UnitOfWorkFactory, directory: FrameDirectory, jobs: JobRequests
    ) -> None:
        self._uow = uow
        self._directory = directory
        self._jobs = jobs

    async def pending(self, orgs: Sequence[str] | None) -> list[tuple[str, UUID]]:
        """(org_id, asset id) of every asset to fingerprint: of ``orgs``, or of every
        organisation when ``None``."""
        found: list[tuple[str, UUID]] = []
        if orgs is None:
            after: tuple[str, UUID] | None = None
            while page := await self._directory.unindexed(after=after, limit=_PAGE):
                found.extend(page)
                after = page[-1]
            return found
        for org in orgs:
            last: UUID | None = None
            async with self._uow(org) as unit:
                while ids := await unit.frames.unindexed_assets(after=last, limit=_PAGE):
                    found.extend((org, asset_id) for asset_id in ids)
                    last = ids[-1]
        return found

    async def run(
        self,
        assets: Sequence[tuple[str, UUID]],
        progress: ReindexProgress,
        *,
        concurrency: int = 2,
        timeout_seconds: float = 3600.0,
    ) -> ReindexSummary:
        """Run each asset's sidecar job again, ``concurrency`` at a time, and wait for each."""
        summary = ReindexSummary()
        slots = anyio.Semaphore(max(1, concurrency))

        async def one(org: str, asset_id: UUID) -> None:
            async with slots:
                name = f"{org}/{asset_id}"
                progress.started(name)
                try:
                    with anyio.fail_after(timeout_seconds):
                        done = await self._fingerprint(org, asset_id)
                except (HeimdexError, TimeoutError) as exc:
                    progress.print(f"{name}: {getattr(exc, 'message', None) or type(exc).__name__}")
                    done = False
                if done:
                    summary.fingerprinted += 1
                else:
                    summary.failed += 1
                progress.finished(name)

        async with anyio.create_task_group() as group:
            for org, asset_id in assets:
                group.start_soon(one, org, asset_id)
        return summary

    async def _fingerprint(self, org: str, asset_id: UUID) -> bool:
        principal = Principal(org_id=org, subject="heimdex-reindex")
        async with self._uow(org) as unit:
            latest = await unit.jobs.latest_for_asset(asset_id, JobKind.SIDECAR)
        spec = latest.thumbnails if latest is not None else ThumbnailSpec()
        storyboard = latest.storyboard if latest is not None else StoryboardSpec()
        while True:
            try:
                job, _ = await self._jobs.request_sidecar(
                    principal, asset_id, spec, force=True, storyboard=storyboard
                )
                break
            except LimitExceeded as exc:  # the organisation's job quota: wait for room
                await anyio.sleep(exc.retry_after or _QUOTA_WAIT_SECONDS)
        while job.is_active:
            await anyio.sleep(_POLL_SECONDS)
            async with self._uow(org) as unit:
                current = await unit.jobs.get(job.id)
            if current is None:
                raise NotFound("the asset was deleted while it was fingerprinted")
            job = current
        if job.status is not JobStatus.SUCCEEDED:
            error = job.error.message if job.error is not None else job.status.value
            log.warning("reindex_job_failed", asset_id=str(asset_id), org_id=org, error=error)
            return False
        async with self._uow(org) as unit:
            return bool(await unit.frames.of_asset(asset_id))
