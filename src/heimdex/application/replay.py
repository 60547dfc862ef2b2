"""``heimdex replay``: requeue failed or stuck jobs and failed webhook deliveries, on purpose.

Selecting is one cross-organisation question per kind (ids only); each requeue then runs in its
own organisation's unit of work with a condition, so running it twice — or beside the sweep —
requeues nothing twice: a requeued job is ``queued`` and fresh (no longer stuck), a requeued
delivery ``pending``. A job goes back to ``queued`` with its attempts reset, and the sweep hands
it to the queue; a delivery keeps its ``webhook-id`` and starts a fresh retry schedule.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import msgspec

from heimdex.domain.model import AssetStatus, JobStatus
from heimdex.domain.ports import Clock, JobReplayDirectory, UnitOfWorkFactory, WebhookDirectory
from heimdex.domain.replay import JobReplayFilter
from heimdex.domain.webhooks import DeliveryFilter
from heimdex.logs import get_logger

log = get_logger(__name__)


class ReplayPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a replay selected: (id, org id) pairs."""

    jobs: list[tuple[UUID, str]]
    deliveries: list[tuple[UUID, str]]


class ReplayResult(msgspec.Struct, frozen=True, kw_only=True):
    jobs_requeued: int
    deliveries_requeued: int
    #: selected but changed meanwhile (already requeued, finished): left as they are
    skipped: int


class ReplayService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        jobs: JobReplayDirectory,
        deliveries: WebhookDirectory,
        clock: Clock,
    ) -> None:
        self._uow = uow
        self._jobs = jobs
        self._deliveries = deliveries
        self._clock = clock

    async def plan(
        self,
        jobs: JobReplayFilter | None,
        deliveries: DeliveryFilter | None,
        limit: int = 1000,
    ) -> ReplayPlan:
        """What a replay with these filters would requeue (``None``: none of that kind)."""
        return ReplayPlan(
            jobs=[] if jobs is None else await self._jobs.replayable_jobs(jobs, limit),
            deliveries=[]
            if deliveries is None
            else await self._deliveries.failed(deliveries, limit),
        )

    async def run(self, plan: ReplayPlan, stuck_before_seconds: float) -> ReplayResult:
        """Requeue what ``plan`` selected that is still failed or stuck."""
        requeued_jobs = requeued_deliveries = skipped = 0
        for job_id, org_id in plan.jobs:
            if await self._requeue_job(job_id, org_id, stuck_before_seconds):
                requeued_jobs += 1
            else:
                skipped += 1
        for delivery_id, org_id in plan.deliveries:
            now = self._clock.now()
            async with self._uow(org_id) as uow:
                current = await uow.deliveries.get(delivery_id)
                again = None
                if current is not None and current.status.value == "failed":
                    again = await uow.deliveries.requeue(delivery_id, now)
                await uow.commit()
            if again is None:
                skipped += 1
                continue
            requeued_deliveries += 1
            log.info(
                "replay_delivery_requeued",
                delivery_id=str(delivery_id),
                event_id=again.event_id,
                org_id=org_id,
            )
        log.info(
            "replay_done",
            jobs_requeued=requeued_jobs,
            deliveries_requeued=requeued_deliveries,
            skipped=skipped,
        )
        return ReplayResult(
            jobs_requeued=requeued_jobs, deliveries_requeued=requeued_deliveries, skipped=skipped
        )

    async def _requeue_job(self, job_id: UUID, org_id: str, stuck_seconds: float) -> bool:
        now = self._clock.now()
        stuck_before = now - timedelta(seconds=stuck_seconds)
        async with self._uow(org_id) as uow:
            await uow.lock_org()
            job = await uow.jobs.get(job_id)
            if job is None:
                return False
            stuck = (
                job.status is JobStatus.FAILED
                or (
                    job.status is JobStatus.RUNNING
                    and job.lease_expires_at is not None
                    and job.lease_expires_at < stuck_before
                )
                or (job.status is JobStatus.QUEUED and job.updated_at < stuck_before)
            )
            if not stuck:
                return False
            await uow.jobs.save(
                msgspec.structs.replace(
                    job,
                    status=JobStatus.QUEUED,
                    attempts=0,
                    progress=0.0,
                    error=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    next_attempt_at=now,
                    enqueued_at=None,  # the sweep hands it to the queue
                    finished_at=None,
                    updated_at=now,
                )
            )
            asset = await uow.assets.get(job.asset_id)
            if asset is not None and asset.status is AssetStatus.FAILED:
                await uow.assets.save(
                    msgspec.structs.replace(asset, status=AssetStatus.PROCESSING, updated_at=now)
                )
            await uow.commit()
        log.info("replay_job_requeued", job_id=str(job_id), org_id=org_id, was=job.status.value)
        return True
