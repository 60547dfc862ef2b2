"""``RedisJobQueue``: job ids over a Redis stream (taskiq-redis), for ``heimdex worker`` processes.

taskiq-redis's stream broker acknowledges a message only after its task finished, so a message
whose worker died is delivered again. Its known traps, and what this module does about each:

- A SIGKILLed worker holding the reclaim lock stops all reclaiming (taskiq-redis #131):
  ``unacknowledged_lock_timeout`` is always set.
- Acknowledged entries stay in the stream and Redis grows without limit, while ``maxlen``
  trimming can drop entries still pending: no ``maxlen``; acknowledging also deletes the entry
  (XACK + XDEL), so the stream holds only what is unread or pending.
- ``idle_timeout`` redelivers a message whose task is still running: the job's lease turns that
  second delivery into a no-op (``JobRunner.run``).
- A task that raises is acknowledged all the same: retries are the job layer's
  (``next_attempt_at`` + the sweep), never Redis's.
- ``xreadgroup`` takes up to 100 entries at once by default, and an entry read stays with its
  reader until ``idle_timeout``: a busy worker would sit on a backlog other workers could run.
  Each read takes one entry, and only when the worker has a free slot for it.
- A message that cannot be parsed, or names no task we know, would come back forever: it is
  copied to a bounded dead-letter stream, logged and acknowledged.
- No result backend: results are never stored, so no result key can outlive its use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq import AckableMessage
from taskiq.exceptions import SendTaskError
from taskiq.kicker import AsyncKicker
from taskiq_redis import RedisStreamBroker

from heimdex.domain.errors import QueueUnavailable
from heimdex.logs import get_logger

log = get_logger(__name__)

RUN_JOB_TASK = "heimdex.run_job"
DEAD_LETTER_STREAM = "heimdex:dead-letter"
DEAD_LETTER_MAXLEN = 10_000
_RECONNECT_FIRST = 0.5
_RECONNECT_MAX = 10.0
_ACK_ATTEMPTS = 5
_ACK_RETRY_SECONDS = 0.2


class HeimdexStreamBroker(RedisStreamBroker):
    """RedisStreamBroker with entries deleted on acknowledgement and a dead-letter stream."""

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            # A pooled connection that died with a Redis restart fails on first use. An entry
            # left unacknowledged stays first in the stream, and the sweep hands over no lost
            # job newer than the stream's first entry: so try again on a fresh connection.
            for attempt in range(_ACK_ATTEMPTS):
                try:
                    async with Redis(connection_pool=self.connection_pool) as redis:
                        pipe = redis.pipeline(transaction=True)
                        pipe.xack(queue_name, self.consumer_group_name, id)
                        pipe.xdel(queue_name, id)
                        await pipe.execute()
                    return
                except (RedisError, OSError) as exc:
                    if attempt + 1 == _ACK_ATTEMPTS:
                        log.error("queue_ack_failed", entry=id, error=str(exc))
                        raise
                    log.warning("queue_ack_retried", entry=id, error=str(exc))
                    await asyncio.sleep(_ACK_RETRY_SECONDS * (attempt + 1))

        return ack

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        # taskiq-redis lets a lost connection escape, which kills the worker process: ride out
        # a Redis restart here instead, so the worker (and its decode pool) lives on.
        delay = _RECONNECT_FIRST
        while True:
            try:
                async for message in super().listen():
                    delay = _RECONNECT_FIRST
                    reason = self._unusable(message.data)
                    if reason is None:
                        yield message
                    else:
                        await self._dead_letter(message, reason)
            except (RedisError, OSError) as exc:
                log.warning("queue_connection_lost", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
                with contextlib.suppress(RedisError, OSError):
                    await self._declare_consumer_group()

    async def hand_back(self) -> int:
        """Give back every entry this consumer read and has not acknowledged (a job stopped
        before it finished, a read the stop cut short): each goes on the stream again as a new
        entry, which another worker reads at once instead of after ``idle_timeout``, and the
        old one is acknowledged and deleted in the same transaction. Then this consumer (a
        random name per process) leaves the group, which would otherwise keep every stopped
        worker's name for ever. Answers how many entries were handed back."""
        handed = 0
        async with Redis(connection_pool=self.connection_pool) as redis:
            while pending := await redis.xpending_range(
                self.queue_name,
                self.consumer_group_name,
                min="-",
                max="+",
                count=100,
                consumername=self.consumer_name,
            ):
                for entry in pending:
                    entry_id = _text(entry["message_id"])
                    found = await redis.xrange(self.queue_name, min=entry_id, max=entry_id)
                    fields = found[0][1] if found else None
                    data = fields.get(b"data") if fields else None
                    pipe = redis.pipeline(transaction=True)
                    if data is not None:  # an entry deleted meanwhile is acknowledged only
                        pipe.xadd(self.queue_name, {b"data": data})
                    pipe.xack(self.queue_name, self.consumer_group_name, entry_id)
                    pipe.xdel(self.queue_name, entry_id)
                    await pipe.execute()
                    if data is not None:
                        handed += 1
                        log.info("queue_message_handed_back", entry=entry_id)
            await redis.xgroup_delconsumer(
                self.queue_name, self.consumer_group_name, self.consumer_name
            )
        return handed

    async def _dead_letter(self, message: AckableMessage, reason: str) -> None:
        log.error("queue_message_dead_lettered", reason=reason)
        async with Redis(connection_pool=self.connection_pool) as redis:
            await redis.xadd(
                DEAD_LETTER_STREAM,
                {b"data": message.data, b"reason": reason.encode()},
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
        await message.ack()  # type: ignore[misc]

    def _unusable(self, data: bytes) -> str | None:
        try:
            parsed = self.formatter.loads(data)
        except Exception as exc:  # any parse failure is a poison message
            return f"unparseable: {type(exc).__name__}"
        if self.find_task(parsed.task_name) is None and parsed.task_name != RUN_JOB_TASK:
            return f"unknown task {parsed.task_name!r}"
        return None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def build_redis_broker(
    url: str,
    *,
    queue_name: str = "heimdex:jobs",
    idle_timeout_ms: int = 600_000,
    lock_timeout_s: float = 30.0,
) -> HeimdexStreamBroker:
    return HeimdexStreamBroker(
        url,
        queue_name=queue_name,
        consumer_group_name="heimdex-workers",
        idle_timeout=idle_timeout_ms,
        unacknowledged_lock_timeout=lock_timeout_s,
        xread_block=1000,
        xread_count=1,  # never hold an entry this worker cannot start now (see above)
        # "0", not "$": a group created after the API kicked jobs still reads them.
        consumer_id="0",
    )


class RedisJobQueue:
    """Kicks job ids onto the stream; the workers' task does the rest."""

    def __init__(self, broker: HeimdexStreamBroker) -> None:
        self.broker = broker
        self._kicker: AsyncKicker[[str], None] = AsyncKicker(RUN_JOB_TASK, broker, labels={})
        self._started = False

    async def startup(self) -> None:
        try:
            await self.broker.startup()
        except RedisError as exc:
            # The API still starts: jobs wait in their rows (the outbox) until Redis is back.
            log.warning("queue_unavailable_at_startup", error=str(exc))
        self._started = True

    async def shutdown(self) -> None:
        if self._started:
            await self.broker.shutdown()
            self._started = False

    async def enqueue(self, job_id: UUID) -> None:
        try:
            await self._kicker.kiq(str(job_id))
        except (SendTaskError, RedisError, OSError) as exc:
            cause = exc.__cause__ or exc  # taskiq wraps the Redis error
            raise QueueUnavailable(f"Redis did not take the job: {cause}") from exc

    async def oldest_waiting(self) -> datetime | None:
        # Acknowledged entries are deleted (XACK + XDEL), so the stream's first entry is the
        # oldest one still unread or being run; its id is Redis's clock at XADD, in ms.
        try:
            async with Redis(connection_pool=self.broker.connection_pool) as redis:
                first = await redis.xrange(self.broker.queue_name, count=1)
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"Redis does not answer: {exc}") from exc
        entry_id = first[0][0] if first else None
        if entry_id is None:
            return None
        text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return datetime.fromtimestamp(int(text.split("-")[0]) / 1000, UTC)

    async def check(self) -> None:
        try:
            async with Redis(connection_pool=self.broker.connection_pool) as redis:
                await redis.ping()
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"Redis does not answer: {exc}") from exc
