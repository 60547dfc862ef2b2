"""Handing a job's id to the queue: the send side of the job row's outbox."""

from __future__ import annotations

from uuid import UUID

from heimdex.domain.errors import QueueUnavailable
from heimdex.domain.ports import Clock, JobDirectory, JobQueue
from heimdex.logs import get_logger

log = get_logger(__name__)


class JobHandOver:
    """Gives a job's id to the queue and marks the row (``enqueued_at``) once it took it. Used
    by a request (at once) and by the sweep (whatever the queue missed)."""

    def __init__(self, queue: JobQueue, directory: JobDirectory, clock: Clock) -> None:
        self._queue = queue
        self._directory = directory
        self._clock = clock

    async def __call__(self, job_id: UUID, org_id: str) -> bool:
        """Give the id to the queue; a broker outage is the sweep's to repair, not the client's.
        Answers whether the queue took it."""
        try:
            await self._queue.enqueue(job_id)
        except QueueUnavailable as exc:  # the adapters translate their transport's errors
            log.warning("job_enqueue_deferred", job_id=str(job_id), error=str(exc))
            return False
        await self._directory.mark_enqueued(job_id, org_id, self._clock.now())
        return True
