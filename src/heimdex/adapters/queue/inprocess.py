"""``InProcessJobQueue``: taskiq's in-memory broker inside the API process (embedded default)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from taskiq import InMemoryBroker

from heimdex.domain.errors import QueueUnavailable

JobHandler = Callable[[UUID], Awaitable[None]]


class InProcessJobQueue:
    """Runs each job id through ``handler`` in the same process, as a background task."""

    def __init__(self, handler: JobHandler) -> None:
        self.broker = InMemoryBroker()

        async def run_job(job_id: str) -> None:
            await handler(UUID(job_id))

        self._task = self.broker.register_task(run_job, task_name="heimdex.run_job")
        self._started = False

    async def startup(self) -> None:
        await self.broker.startup()
        self._started = True

    async def shutdown(self) -> None:
        if self._started:
            await self.broker.shutdown()
            self._started = False

    async def enqueue(self, job_id: UUID) -> None:
        if not self._started:
            raise QueueUnavailable("the in-process broker has not been started")
        await self._task.kiq(str(job_id))

    async def check(self) -> None:
        if not self._started:
            raise QueueUnavailable("the in-process broker has not been started")
