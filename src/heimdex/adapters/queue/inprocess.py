"""``InProcessJobQueue``: taskiq's in-memory broker inside the API process (embedded default)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from taskiq import InMemoryBroker

from heimdex.domain.errors import QueueUnavailable

JobHandler = Callable[[UUID], Awaitable[None]]
# How long a stopping queue waits for its cancelled jobs to record themselves (one database
# write each); the rest are left to their leases.
_STOP_SECONDS = 10.0


class InProcessJobQueue:
    """Runs each job id through ``handler`` in the same process, as a background task, at most
    ``concurrency`` at once; the rest wait for a free slot in the order they came (the handler
    picks which organisation's job a slot runs)."""

    def __init__(self, handler: JobHandler, *, concurrency: int = 2) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.broker = InMemoryBroker()
        # Ids kicked and not started yet, with when.
        self._waiting: dict[str, datetime] = {}
        # The broker starts every kicked task at once: without slots, every job of a backlog
        # would claim its row at once and wait inside the decoder, first come first served,
        # where no turn can be taken. asyncio.Semaphore wakes its waiters in order.
        self._slots = asyncio.Semaphore(concurrency)
        # Jobs running or waiting for a slot: the broker would leave them to the event loop's
        # end, which cancels them after everything they need (the database) is closed.
        self._running: set[asyncio.Task[Any]] = set()

        async def run_job(job_id: str) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                async with self._slots:
                    self._waiting.pop(job_id, None)
                    await handler(UUID(job_id))
            except asyncio.CancelledError:
                # Only ``shutdown`` cancels: the job recorded itself as queued again. Ending
                # normally keeps taskiq from logging the cancellation as the task's error.
                return
            finally:
                if task is not None:
                    self._running.discard(task)

        self._task = self.broker.register_task(run_job, task_name="heimdex.run_job")
        self._started = False

    async def startup(self) -> None:
        await self.broker.startup()
        self._started = True

    async def shutdown(self) -> None:
        """Stop at once: each job still running is cancelled, which records it as queued again
        (``interrupted``) for the next start's sweep; nothing new is taken meanwhile."""
        if self._started:
            self._started = False  # a job stopped below is handed to the next start, not here
            for task in self._running:
                task.cancel()
            if self._running:
                await asyncio.wait(set(self._running), timeout=_STOP_SECONDS)
            await self.broker.shutdown()
            self._waiting.clear()  # gone with the process's memory; the job rows remain

    async def enqueue(self, job_id: UUID) -> None:
        if not self._started:
            raise QueueUnavailable("the in-process broker has not been started")
        key = str(job_id)
        self._waiting.setdefault(key, datetime.now(UTC))
        try:
            await self._task.kiq(key)
        except BaseException:
            self._waiting.pop(key, None)
            raise

    async def oldest_waiting(self) -> datetime | None:
        if not self._started:  # as enqueue: what it held went with shutdown
            raise QueueUnavailable("the in-process broker has not been started")
        return min(self._waiting.values(), default=None)

    async def check(self) -> None:
        if not self._started:
            raise QueueUnavailable("the in-process broker has not been started")
