"""``RedisJobQueue``: job ids over a Redis stream (taskiq-redis), for ``heimdex worker`` processes.

taskiq-redis's stream broker acknowledges a message only after its task finished, so a message
whose worker died is delivered again. Its known traps, and what this module does about each:

- It reclaims a dead worker's entries (XAUTOCLAIM past ``idle_timeout``, 10 minutes by default)
  only after a read that returned new entries: on a quiet stream never, and in up to 100 at a
  time, more than the worker has slots for. Meanwhile the entry pins the stream's oldest entry,
  so the backlog looked that old. Here each worker's read first takes over one entry whose
  claim lapsed (idle ``claim_idle_seconds``), then reads new ones, one per free slot; and a
  worker keeps the claims of the entries it is running fresh (XCLAIM to itself, every third of
  ``claim_idle_seconds``), so a live job's entry never lapses however long it runs. A worker
  that stalls past that all the same loses the entry to another, whose run is then a no-op:
  the job's lease is still held (``JobRunner.run``).
- A SIGKILLed worker holding taskiq-redis's reclaim lock stopped all reclaiming (taskiq-redis
  #131): that lock is not used; taking over an entry is one atomic script.
- Acknowledged entries stay in the stream and Redis grows without limit, while ``maxlen``
  trimming can drop entries still pending: no ``maxlen``; acknowledging also deletes the entry
  (XACK + XDEL), so the stream holds only what is unread or pending.
- A task that raises is acknowledged all the same: retries are the job layer's
  (``next_attempt_at`` + the sweep), never Redis's.
- ``xreadgroup`` takes up to 100 entries at once by default, and an entry read stays with its
  reader: a busy worker would sit on a backlog other workers could run. Each read takes one
  entry, and only when the worker has a free slot for it.
- A message that cannot be parsed, or names no task we know, would come back forever: it is
  copied to a bounded dead-letter stream, logged and acknowledged.
- No result backend: results are never stored, so no result key can outlive its use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast
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
#: how long an entry's reader may leave its claim unrenewed before another worker takes it over
DEFAULT_CLAIM_IDLE_SECONDS = 120.0
_RECONNECT_FIRST = 0.5
_RECONNECT_MAX = 10.0
_ACK_ATTEMPTS = 5
_ACK_RETRY_SECONDS = 0.2

# The first pending entry idle at least ARGV[3] ms, claimed for consumer ARGV[2] (XCLAIM
# re-checks the idle time, and a script runs alone: no two workers take the same entry). An
# entry deleted while pending is dropped from the pending list and the next one looked at.
_TAKE_OVER_LAPSED = """
for _ = 1, 10 do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 1)
  if #pending == 0 then return false end
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], pending[1][1])
  if #claimed == 1 and claimed[1] then return claimed[1] end
  redis.call('XACK', KEYS[1], ARGV[1], pending[1][1])
end
return false
"""

# Renews (XCLAIM ... JUSTID: idle time back to 0, delivery count unchanged) each entry ARGV[3..]
# still pending for consumer ARGV[2]; answers the ones that are not (taken over, or gone).
_KEEP_CLAIMS = """
local lost = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #pending == 1 and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# What waits, in one atomic look: the first entry no worker has read (after the group's
# last-delivered-id; every entry when there is no group yet) and the first pending entry whose
# claim lapsed (idle at least ARGV[2] ms). Entries whose readers keep their claims are running.
_FIRST_WAITING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {false, false} end
local last = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, delivered = nil, nil
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then delivered = group[i + 1] end
  end
  if name == ARGV[1] then last = delivered end
end
local unread, lapsed = false, false
local first
if last == nil then
  first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
else
  first = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[2], '-', '+', 1)
  if #pending == 1 then lapsed = pending[1][1] end
end
if #first == 1 then unread = first[1][1] end
return {unread, lapsed}
"""


# What XREADGROUP answers: per stream, its entries' ids and fields.
_Read = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_time(entry_id: str | bytes) -> tuple[int, int]:
    """A stream id's (ms, sequence): ms is Redis's clock when the entry was added."""
    ms, _, sequence = _text(entry_id).partition("-")
    return int(ms), int(sequence or 0)


class HeimdexStreamBroker(RedisStreamBroker):
    """RedisStreamBroker with prompt, one-at-a-time take-over of lapsed entries, claims kept
    fresh while their tasks run, entries deleted on acknowledgement and a dead-letter stream."""

    def __init__(
        self, url: str, *, claim_idle_seconds: float = DEFAULT_CLAIM_IDLE_SECONDS, **kwargs: Any
    ) -> None:
        if claim_idle_seconds <= 0:
            raise ValueError("claim_idle_seconds must be positive")
        # idle_timeout is what taskiq-redis's own reclaiming would use; listen() replaces that.
        super().__init__(url, idle_timeout=round(claim_idle_seconds * 1000), **kwargs)
        self.claim_idle_seconds = claim_idle_seconds
        #: entries this worker read and has not acknowledged: the claims it keeps fresh
        self._held: set[str] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._take_over_lapsed: Any = None
        self._keep_claims: Any = None

    def _scripts(self, redis: Redis) -> tuple[Any, Any]:
        if self._take_over_lapsed is None:
            self._take_over_lapsed = redis.register_script(_TAKE_OVER_LAPSED)
            self._keep_claims = redis.register_script(_KEEP_CLAIMS)
        return self._take_over_lapsed, self._keep_claims

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            # No longer renewed from here on: should every try below fail, the entry lapses and
            # another worker takes it over (a no-op run for a finished job).
            self._held.discard(_text(id))
            # A pooled connection that died with a Redis restart fails on first use. An entry
            # left unacknowledged comes back as waiting once it lapses, and the sweep hands
            # over no lost job newer than the oldest waiting entry until another worker took
            # it over and ran it for nothing: so try again on a fresh connection.
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
        if self._keeper is None:
            # Till shutdown, not till this generator closes: a stopping worker stops reading
            # first, then lets its running tasks finish.
            self._keeper = asyncio.create_task(self._keep_claims_fresh())
        delay = _RECONNECT_FIRST
        while True:
            try:
                async for message in self._deliveries():
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

    async def shutdown(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await super().shutdown()

    async def _deliveries(self) -> AsyncGenerator[AckableMessage, None]:
        """One entry per call for a free slot: first an entry whose claim lapsed (its worker
        died or stalled: it has waited longest), else the next new one, waiting up to
        ``xread_block`` ms for it, then looking for lapsed ones again."""
        async with Redis(connection_pool=self.connection_pool) as redis:
            take_over, _ = self._scripts(redis)
            while True:
                lapsed = await take_over(
                    keys=[self.queue_name],
                    args=[
                        self.consumer_group_name,
                        self.consumer_name,
                        round(self.claim_idle_seconds * 1000),
                    ],
                    client=redis,
                )
                if lapsed:
                    entry_id, fields = lapsed
                    log.info("queue_entry_taken_over", entry=_text(entry_id))
                    yield self._held_message(entry_id, fields)
                    continue
                fetched = cast(
                    _Read,
                    await redis.xreadgroup(
                        self.consumer_group_name,
                        self.consumer_name,
                        {self.queue_name: ">"},
                        block=self.block,
                        count=1,
                    ),
                )
                for _stream, entries in fetched or []:
                    for entry_id, fields in entries:
                        yield self._held_message(entry_id, fields)

    def _held_message(self, entry_id: str | bytes, fields: Any) -> AckableMessage:
        if isinstance(fields, list):  # a script's answer: [field, value, ...]
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        entry = _text(entry_id)
        self._held.add(entry)
        return AckableMessage(
            data=fields.get(b"data", b""),  # none: a poison message, dead-lettered
            ack=self._ack_generator(id=entry, queue_name=self.queue_name),
        )

    async def _keep_claims_fresh(self) -> None:
        """Renew the claims of the entries this worker is running, every third of
        ``claim_idle_seconds``, so that none lapses while its task runs."""
        while True:
            await asyncio.sleep(self.claim_idle_seconds / 3)
            held = sorted(self._held)
            if not held:
                continue
            try:
                async with Redis(connection_pool=self.connection_pool) as redis:
                    _, keep = self._scripts(redis)
                    lost = await keep(
                        keys=[self.queue_name],
                        args=[self.consumer_group_name, self.consumer_name, *held],
                        client=redis,
                    )
            except (RedisError, OSError) as exc:  # the next beat tries again
                log.warning("queue_claims_not_renewed", count=len(held), error=str(exc))
                continue
            for entry in map(_text, lost):
                if entry in self._held:  # not acknowledged meanwhile: another worker took it
                    self._held.discard(entry)
                    log.warning("queue_claim_lost", entry=entry)

    async def hand_back(self) -> int:
        """Give back every entry this consumer read and has not acknowledged (a job stopped
        before it finished, a read the stop cut short): each goes on the stream again as a new
        entry, which another worker reads at once instead of after ``claim_idle_seconds``, and the
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
                    self._held.discard(entry_id)  # no claim of it to keep any more
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


def build_redis_broker(
    url: str,
    *,
    queue_name: str = "heimdex:jobs",
    claim_idle_seconds: float = DEFAULT_CLAIM_IDLE_SECONDS,
) -> HeimdexStreamBroker:
    return HeimdexStreamBroker(
        url,
        queue_name=queue_name,
        consumer_group_name="heimdex-workers",
        claim_idle_seconds=claim_idle_seconds,
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
        self._first_waiting: Any = None

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
        # Acknowledged entries are deleted (XACK + XDEL), so the stream holds what is unread and
        # what is pending. A pending entry whose reader keeps its claim fresh is running, not
        # waiting; one whose claim lapsed (its worker died) waits to be taken over. Either way
        # an entry's id is Redis's clock when it was added, in ms.
        try:
            async with Redis(connection_pool=self.broker.connection_pool) as redis:
                if self._first_waiting is None:
                    self._first_waiting = redis.register_script(_FIRST_WAITING)
                found = await self._first_waiting(
                    keys=[self.broker.queue_name],
                    args=[
                        self.broker.consumer_group_name,
                        round(self.broker.claim_idle_seconds * 1000),
                    ],
                    client=redis,
                )
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"Redis does not answer: {exc}") from exc
        waiting = [_entry_time(entry) for entry in found if entry]
        if not waiting:
            return None
        return datetime.fromtimestamp(min(waiting)[0] / 1000, UTC)

    async def check(self) -> None:
        try:
            async with Redis(connection_pool=self.broker.connection_pool) as redis:
                await redis.ping()
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"Redis does not answer: {exc}") from exc
