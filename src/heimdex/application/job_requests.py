"""Asking for sidecar jobs: request one (within the organisation's quota), read one.

The job row is written first and is the truth; its id is then handed to the queue
(``JobHandOver``), and if the queue is down the runner's sweep hands it over later.
"""

from __future__ import annotations

from uuid import UUID

import msgspec

from heimdex.application.catalogue_reads import UnitOfWorkReads
from heimdex.application.job_handover import JobHandOver
from heimdex.application.job_policy import JobPolicy
from heimdex.domain.errors import JobQuotaExceeded, NotFound, SourceUriForbidden
from heimdex.domain.model import (
    AssetStatus,
    Job,
    JobKind,
    JobStatus,
    Principal,
    StoryboardSpec,
    ThumbnailSpec,
)
from heimdex.domain.ports import (
    CatalogueReads,
    Clock,
    JobDirectory,
    JobQueue,
    UnitOfWork,
    UnitOfWorkFactory,
)
from heimdex.logs import get_logger

log = get_logger(__name__)
_DEFAULT_STORYBOARD = StoryboardSpec()


class JobRequests:
    """The request side of sidecar jobs: what the API does with them. Running them is
    ``JobRunner``'s."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        directory: JobDirectory,
        queue: JobQueue,
        clock: Clock,
        policy: JobPolicy,
        reads: CatalogueReads | None = None,
    ) -> None:
        self._uow = uow
        self._reads: CatalogueReads = reads or UnitOfWorkReads(uow)
        self._clock = clock
        self._policy = policy
        self._hand_over = JobHandOver(queue, directory, clock)

    async def request_sidecar(
        self,
        principal: Principal,
        asset_id: UUID,
        spec: ThumbnailSpec,
        *,
        force: bool = False,
        source_uri: str | None = None,
        storyboard: StoryboardSpec | None = _DEFAULT_STORYBOARD,
    ) -> tuple[Job, bool]:
        """The job that makes the asset's sidecar (and its storyboard, unless ``storyboard``
        is ``None``), and whether it is new. A queued or running job is returned as it is; a
        finished one too, unless ``force`` asks to re-generate."""
        now = self._clock.now()
        async with self._uow(principal.org_id) as uow:
            # Held to the commit: two requests for one asset must not both find no active job
            # and start two, nor two of one organisation both fit its job quota.
            await uow.lock_org()
            asset = await uow.assets.get(asset_id)
            if asset is None:
                raise NotFound("no such asset")
            if source_uri is not None and source_uri != asset.source_uri:
                raise SourceUriForbidden("source_uri is not this asset's")
            latest = await uow.jobs.latest_for_asset(asset_id, JobKind.SIDECAR)
            if latest is not None and (
                latest.is_active or (latest.status is JobStatus.SUCCEEDED and not force)
            ):
                return latest, False
            await self._check_job_quota(uow)
            job = Job.created(
                org_id=principal.org_id,
                asset_id=asset_id,
                kind=JobKind.SIDECAR,
                thumbnails=spec,
                storyboard=storyboard,
                max_attempts=self._policy.max_attempts,
                now=now,
            )
            await uow.jobs.add(job)
            await uow.assets.save(
                msgspec.structs.replace(asset, status=AssetStatus.PROCESSING, updated_at=now)
            )
            await uow.commit()
        log.info("job_queued", job_id=str(job.id), asset_id=str(asset_id), kind=job.kind.value)
        await self._hand_over(job.id, job.org_id)
        return job, True

    async def _check_job_quota(self, uow: UnitOfWork) -> None:
        limit = self._policy.max_active_per_org
        if limit <= 0:
            return
        active = await uow.jobs.count_active()
        if active >= limit:
            raise JobQuotaExceeded(
                f"{active} jobs are queued or running, the most this organisation may have at "
                "once; try again when one has finished",
                retry_after=max(1, int(self._policy.quota_retry_after.total_seconds())),
            )

    async def get(self, principal: Principal, job_id: UUID) -> Job:
        job = await self._reads.job(principal.org_id, job_id)
        if job is None:
            raise NotFound("no such job")
        return job
