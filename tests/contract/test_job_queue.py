"""The JobQueue contract on the in-process broker, on Redis streams (a real Redis) and on the
in-memory fake the application's unit tests use, plus the Redis traps the adapter must handle."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from taskiq.receiver import Receiver

from heimdex.adapters.queue.inprocess import InProcessJobQueue
from heimdex.adapters.queue.redis import (
    DEAD_LETTER_STREAM,
    RUN_JOB_TASK,
    HeimdexStreamBroker,
    RedisJobQueue,
    build_redis_broker,
)
from heimdex.domain.errors import QueueUnavailable
from tests.requirements import require_port
from tests.unit.fakes import FakeQueue

REDIS_URL = "redis://127.0.0.1:6379/0"
Handler = Callable[[uuid.UUID], Awaitable[None]]


class Delivered:
    """A handler that records the ids it is given; while ``open`` is clear, each call is held
    (a job still running)."""

    def __init__(self) -> None:
        self.ids: list[uuid.UUID] = []
        self.event = asyncio.Event()
        self.open = asyncio.Event()
        self.open.set()

    async def __call__(self, job_id: uuid.UUID) -> None:
        self.ids.append(job_id)
        self.event.set()
        await self.open.wait()

    async def wait_for(self, count: int, seconds: float = 15) -> None:
        with anyio.fail_after(seconds):
            while len(self.ids) < count:
                self.event.clear()
                await self.event.wait()


async def run_redis_worker(
    broker: HeimdexStreamBroker, handler: Handler, *, max_async_tasks: int = 10
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """A taskiq receiver for ``broker`` in this process, its task calling ``handler``."""

    async def run_job(job_id: str) -> None:
        await handler(uuid.UUID(job_id))

    broker.register_task(run_job, task_name=RUN_JOB_TASK)
    broker.is_worker_process = True
    await broker.startup()
    finished = asyncio.Event()
    receiver = Receiver(broker, run_startup=False, max_async_tasks=max_async_tasks)
    return finished, asyncio.create_task(receiver.listen(finished))


async def until_empty(redis: Redis, stream: str) -> None:
    with anyio.fail_after(5):
        while await redis.xlen(stream):  # noqa: ASYNC110 - polling Redis, not a local event
            await anyio.sleep(0.05)


@pytest.fixture
def stream() -> str:
    return f"heimdex:test:{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis(stream: str) -> AsyncIterator[Redis]:
    require_port("127.0.0.1", 6379, "Redis")
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.delete(stream, DEAD_LETTER_STREAM)
    await client.aclose()


@pytest.fixture(params=["inprocess", pytest.param("redis", marks=pytest.mark.redis), "fake"])
async def queue_and_delivered(
    request: pytest.FixtureRequest, stream: str
) -> AsyncIterator[tuple[Any, Delivered]]:
    """A running queue and a worker with one slot, which ``Delivered`` stands for."""
    delivered = Delivered()
    if request.param == "inprocess":
        queue = InProcessJobQueue(delivered, concurrency=1)
        await queue.startup()
        yield queue, delivered
        delivered.open.set()
        await queue.shutdown()
        return
    if request.param == "fake":
        fake = FakeQueue()
        serving = asyncio.create_task(fake.serve(delivered))
        yield fake, delivered
        serving.cancel()
        return
    require_port("127.0.0.1", 6379, "Redis")
    broker = build_redis_broker(REDIS_URL, queue_name=stream)
    finished, worker = await run_redis_worker(broker, delivered, max_async_tasks=1)
    redis_queue = RedisJobQueue(broker)
    yield redis_queue, delivered
    delivered.open.set()
    finished.set()
    worker.cancel()
    await broker.shutdown()
    cleanup = Redis.from_url(REDIS_URL)
    await cleanup.delete(stream)
    await cleanup.aclose()


@pytest.fixture(params=["inprocess", "redis", "fake"])
async def unavailable_queue(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A queue whose broker is out: not started (in-process), unreachable (Redis), ``down``."""
    if request.param == "inprocess":
        yield InProcessJobQueue(Delivered())
    elif request.param == "redis":
        queue = RedisJobQueue(build_redis_broker("redis://127.0.0.1:1/0"))
        await queue.startup()  # logs, does not fail: the API must start without Redis
        yield queue
        await queue.shutdown()
    else:
        fake = FakeQueue()
        fake.down = True
        yield fake


def to_the_millisecond(moment: datetime) -> datetime:
    """``moment`` rounded down as Redis's stream ids (its clock, in ms) are."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


async def test_every_enqueued_id_reaches_the_handler(
    queue_and_delivered: tuple[Any, Delivered],
) -> None:
    queue, delivered = queue_and_delivered
    ids = [uuid.uuid4() for _ in range(5)]
    for job_id in ids:
        await queue.enqueue(job_id)
    await delivered.wait_for(5)
    assert sorted(delivered.ids) == sorted(ids)


async def test_check_passes_while_running(queue_and_delivered: tuple[Any, Delivered]) -> None:
    queue, _ = queue_and_delivered
    await queue.check()


async def test_a_queue_whose_ids_were_all_run_holds_nothing_old(
    queue_and_delivered: tuple[Any, Delivered],
) -> None:
    queue, delivered = queue_and_delivered
    assert await queue.oldest_waiting() is None
    for _ in range(3):
        await queue.enqueue(uuid.uuid4())
    await delivered.wait_for(3)
    with anyio.fail_after(5):
        # Acknowledged just after the handler returns: poll the queue itself.
        while await queue.oldest_waiting() is not None:  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def test_ids_reach_a_one_slot_worker_first_in_first_out(
    queue_and_delivered: tuple[Any, Delivered],
) -> None:
    queue, delivered = queue_and_delivered
    ids = [uuid.uuid4() for _ in range(6)]
    for job_id in ids:
        await queue.enqueue(job_id)
    await delivered.wait_for(6)
    assert delivered.ids == ids


async def test_the_oldest_waiting_is_the_first_id_no_worker_is_running(
    queue_and_delivered: tuple[Any, Delivered],
) -> None:
    queue, delivered = queue_and_delivered
    delivered.open.clear()  # the worker's one slot stays busy with the first id
    await queue.enqueue(uuid.uuid4())
    await delivered.wait_for(1)
    assert await queue.oldest_waiting() is None  # being run is not waiting, however long
    await anyio.sleep(0.01)  # the next id's time differs from the first's, even in ms
    before = to_the_millisecond(datetime.now(UTC))
    await queue.enqueue(uuid.uuid4())
    await queue.enqueue(uuid.uuid4())
    after = datetime.now(UTC)
    oldest = await queue.oldest_waiting()
    assert oldest is not None
    assert before <= oldest <= after
    delivered.open.set()
    await delivered.wait_for(3)
    with anyio.fail_after(5):
        while await queue.oldest_waiting() is not None:  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def test_a_broker_outage_is_queue_unavailable(unavailable_queue: Any) -> None:
    with pytest.raises(QueueUnavailable):
        await unavailable_queue.enqueue(uuid.uuid4())
    with pytest.raises(QueueUnavailable):
        await unavailable_queue.oldest_waiting()
    with pytest.raises(QueueUnavailable):
        await unavailable_queue.check()


async def test_the_in_process_queue_runs_at_most_its_concurrency_and_holds_the_rest() -> None:
    # The jobs a slot cannot start yet wait in the queue, where the handler picks whose turn
    # it is (JobRunner.run), not inside the decoder; they count as waiting until started.
    release, running = asyncio.Event(), Delivered()

    async def held(job_id: uuid.UUID) -> None:
        await running(job_id)
        await release.wait()

    queue = InProcessJobQueue(held, concurrency=2)
    await queue.startup()
    try:
        ids = [uuid.uuid4() for _ in range(5)]
        before = datetime.now(UTC)
        for job_id in ids:
            await queue.enqueue(job_id)
        await running.wait_for(2)
        await anyio.sleep(0.05)  # room for a third to start, were it allowed to
        assert running.ids == ids[:2]  # first come, first started
        oldest = await queue.oldest_waiting()
        assert oldest is not None
        assert oldest >= before
        release.set()
        await running.wait_for(5)
        assert running.ids == ids
    finally:
        release.set()
        await queue.shutdown()


async def test_a_stopping_in_process_queue_cancels_its_jobs_and_takes_no_more() -> None:
    # Left running, a job would be cancelled only at the event loop's end, after the database
    # it records itself in was closed.
    running, cancelled = Delivered(), asyncio.Event()

    async def long_job(job_id: uuid.UUID) -> None:
        await running(job_id)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    queue = InProcessJobQueue(long_job, concurrency=1)
    await queue.startup()
    await queue.enqueue(uuid.uuid4())
    await queue.enqueue(uuid.uuid4())  # waits for the slot
    await running.wait_for(1)
    with anyio.fail_after(5):
        await queue.shutdown()
    assert cancelled.is_set()
    assert len(running.ids) == 1  # the waiting one was not started on the way out
    with pytest.raises(QueueUnavailable):  # a job handing itself back is refused, not run
        await queue.enqueue(uuid.uuid4())


# -- Redis specifics ------------------------------------------------------------------------------


@pytest.mark.redis
async def test_acknowledged_entries_leave_the_stream(redis: Redis, stream: str) -> None:
    delivered = Delivered()
    broker = build_redis_broker(REDIS_URL, queue_name=stream)
    finished, worker = await run_redis_worker(broker, delivered)
    try:
        queue = RedisJobQueue(broker)
        for _ in range(20):
            await queue.enqueue(uuid.uuid4())
        await delivered.wait_for(20)
        await until_empty(redis, stream)
    finally:
        finished.set()
        worker.cancel()
        await broker.shutdown()


@pytest.mark.redis
async def test_a_message_read_by_a_worker_that_stopped_renewing_waits_again(
    redis: Redis, stream: str
) -> None:
    broker = build_redis_broker(REDIS_URL, queue_name=stream, claim_idle_seconds=1.0)
    await broker.startup()
    queue = RedisJobQueue(broker)
    try:
        before = to_the_millisecond(datetime.now(UTC))
        await queue.enqueue(uuid.uuid4())
        await anyio.sleep(0.05)
        await queue.enqueue(uuid.uuid4())
        first = await queue.oldest_waiting()
        assert first is not None
        # Redis's clock is this machine's: the first message's time, not the second's.
        assert before <= first < before + timedelta(milliseconds=40)
        # A worker reads the first: while its claim is fresh the entry is running, not waiting.
        await redis.xreadgroup("heimdex-workers", "gone-consumer", {stream: ">"}, count=1)
        second = await queue.oldest_waiting()
        assert second is not None
        assert second >= first + timedelta(milliseconds=40)
        # It never renews the claim (it died): past claim_idle_seconds the entry waits again,
        # as old as it is.
        await anyio.sleep(1.1)
        assert await queue.oldest_waiting() == first
    finally:
        await broker.shutdown()


async def a_stuck_worker_leaves_the_rest_to_an_idle_one(
    redis: Redis,
    stream: str,
    messages: list[uuid.UUID],
    *,
    busy_seconds: float = 15,
    **broker_options: float,
) -> None:
    """A worker with one slot, stuck in the first of ``messages`` it gets, then an idle worker
    beside it: the idle one must run the other two, and every message run once is acknowledged.
    """
    release, busy = asyncio.Event(), Delivered()

    async def stuck(job_id: uuid.UUID) -> None:
        await busy(job_id)
        await release.wait()

    busy_broker = build_redis_broker(REDIS_URL, queue_name=stream, **broker_options)
    idle_broker = build_redis_broker(REDIS_URL, queue_name=stream, **broker_options)
    busy_finished, busy_worker = await run_redis_worker(busy_broker, stuck, max_async_tasks=1)
    idle = Delivered()
    try:
        await busy.wait_for(1, seconds=busy_seconds)
        idle_finished, idle_worker = await run_redis_worker(idle_broker, idle)
        try:
            await idle.wait_for(2, seconds=5)
            assert sorted(busy.ids + idle.ids) == sorted(messages)
            release.set()
            await until_empty(redis, stream)  # every entry acknowledged before shutting down
        finally:
            idle_finished.set()
            idle_worker.cancel()
    finally:
        release.set()
        busy_finished.set()
        busy_worker.cancel()
        await busy_broker.shutdown()
        await idle_broker.shutdown()


@pytest.mark.redis
async def test_a_busy_worker_leaves_waiting_messages_to_an_idle_one(
    redis: Redis, stream: str
) -> None:
    # A backlog, then a worker that can run one job at a time and is stuck in its first. The
    # rest must stay free for a second worker, not sit read-but-unrun in the busy one's hands
    # (renewed, so never taken over) while it runs.
    kicker = build_redis_broker(REDIS_URL, queue_name=stream)
    await kicker.startup()
    backlog = [uuid.uuid4() for _ in range(3)]
    for job_id in backlog:
        await RedisJobQueue(kicker).enqueue(job_id)
    await kicker.shutdown()
    await a_stuck_worker_leaves_the_rest_to_an_idle_one(redis, stream, backlog)


@pytest.mark.redis
async def test_a_poison_message_is_dead_lettered_not_redelivered(redis: Redis, stream: str) -> None:
    delivered = Delivered()
    broker = build_redis_broker(REDIS_URL, queue_name=stream)
    finished, worker = await run_redis_worker(broker, delivered)
    try:
        await redis.xadd(stream, {b"data": b"\x00 not a taskiq message"})
        good = uuid.uuid4()
        await RedisJobQueue(broker).enqueue(good)
        await delivered.wait_for(1)
        assert delivered.ids == [good]
        await until_empty(redis, stream)
        dead = await redis.xrange(DEAD_LETTER_STREAM)
        assert dead is not None
        assert any(
            fields is not None and b"not a taskiq message" in fields[b"data"] for _, fields in dead
        )
    finally:
        finished.set()
        worker.cancel()
        await broker.shutdown()


async def dead_consumer_reads(redis: Redis, stream: str, count: int) -> list[uuid.UUID]:
    """``count`` ids enqueued, then read by a consumer that dies without acknowledging them."""
    kicker = build_redis_broker(REDIS_URL, queue_name=stream)
    await kicker.startup()
    ids = [uuid.uuid4() for _ in range(count)]
    for job_id in ids:
        await RedisJobQueue(kicker).enqueue(job_id)
    await redis.xreadgroup("heimdex-workers", "dead-consumer", {stream: ">"}, count=count)
    await kicker.shutdown()
    return ids


@pytest.mark.redis
async def test_a_message_whose_worker_died_is_taken_over_on_a_quiet_stream(
    redis: Redis, stream: str
) -> None:
    # No other message comes to set reclaiming off (taskiq-redis reclaims only after a read
    # that returned new entries): a live worker takes the entry over once its claim lapsed.
    [lost] = await dead_consumer_reads(redis, stream, 1)
    delivered = Delivered()
    broker = build_redis_broker(REDIS_URL, queue_name=stream, claim_idle_seconds=0.3)
    finished, worker = await run_redis_worker(broker, delivered)
    try:
        await delivered.wait_for(1, seconds=5)
        assert delivered.ids == [lost]
        await until_empty(redis, stream)  # acknowledged by its new reader
        assert await RedisJobQueue(broker).oldest_waiting() is None
    finally:
        finished.set()
        worker.cancel()
        await broker.shutdown()


@pytest.mark.redis
async def test_a_dead_workers_messages_are_taken_over_one_per_free_slot(
    redis: Redis, stream: str
) -> None:
    # A worker with one slot, stuck in the first message it took over, must leave the rest to
    # another worker rather than take them all (XAUTOCLAIM's batch of 100).
    lost = await dead_consumer_reads(redis, stream, 3)
    # Renewed every 0.33 s: a busy worker's claim survives a loaded machine's stalls.
    await a_stuck_worker_leaves_the_rest_to_an_idle_one(
        redis, stream, lost, claim_idle_seconds=1.0, busy_seconds=5
    )


@pytest.mark.redis
async def test_a_live_worker_keeps_the_message_of_a_long_job(redis: Redis, stream: str) -> None:
    # The job runs for several times claim_idle_seconds beside an idle worker: its worker
    # renews the claim, so the idle one never takes the message over (no second delivery).
    release, running = asyncio.Event(), Delivered()

    async def long_job(job_id: uuid.UUID) -> None:
        await running(job_id)
        await release.wait()

    runner_broker = build_redis_broker(REDIS_URL, queue_name=stream, claim_idle_seconds=1.0)
    idle_broker = build_redis_broker(REDIS_URL, queue_name=stream, claim_idle_seconds=1.0)
    runner_finished, runner = await run_redis_worker(runner_broker, long_job, max_async_tasks=1)
    idle = Delivered()
    idle_finished, idle_worker = await run_redis_worker(idle_broker, idle)
    queue = RedisJobQueue(runner_broker)
    try:
        job_id = uuid.uuid4()
        await queue.enqueue(job_id)
        await running.wait_for(1)
        for _ in range(6):  # 3 s: past claim_idle_seconds three times over
            await anyio.sleep(0.5)
            [entry] = await redis.xpending_range(stream, "heimdex-workers", "-", "+", 10)
            consumer = entry["consumer"]
            assert isinstance(consumer, bytes)
            assert consumer.decode() == runner_broker.consumer_name
            assert entry["times_delivered"] == 1
            assert await queue.oldest_waiting() is None  # running, not waiting
        assert idle.ids == []
        release.set()
        await until_empty(redis, stream)
        assert running.ids == [job_id]
    finally:
        release.set()
        for finished, task in ((runner_finished, runner), (idle_finished, idle_worker)):
            finished.set()
            task.cancel()
        await runner_broker.shutdown()
        await idle_broker.shutdown()


@pytest.mark.redis
async def test_a_stopping_worker_hands_back_what_it_read_and_another_reads_it_at_once(
    redis: Redis, stream: str
) -> None:
    # A stopping worker's consumer holds a message it read and will never run. Left there, it
    # would wait for claim_idle_seconds (120 s by default) before another worker took it over.
    held = uuid.uuid4()
    stopping = build_redis_broker(REDIS_URL, queue_name=stream)
    await stopping.startup()
    await RedisJobQueue(stopping).enqueue(held)
    read: Any = await redis.xreadgroup(  # RESP2's reply: [[stream, [entries]]]
        "heimdex-workers", stopping.consumer_name, {stream: ">"}, count=10
    )
    assert len(read[0][1]) == 1
    try:
        assert await stopping.hand_back() == 1
    finally:
        await stopping.shutdown()
    assert await redis.xlen(stream) == 1  # the new entry only: nothing delivered twice over
    assert await redis.xinfo_consumers(stream, "heimdex-workers") == []  # it left the group
    delivered = Delivered()
    broker = build_redis_broker(REDIS_URL, queue_name=stream)  # claims lapse after 120 s
    finished, worker = await run_redis_worker(broker, delivered)
    try:
        await delivered.wait_for(1, seconds=5)
        assert delivered.ids == [held]
        await until_empty(redis, stream)
    finally:
        finished.set()
        worker.cancel()
        await broker.shutdown()


@pytest.mark.redis
async def test_an_ack_that_meets_a_dead_connection_is_tried_again(
    redis: Redis, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a Redis restart the pool's first connection is dead: the ack must still land, or
    the entry stays first in the stream and no newer lost job is ever handed over again."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    import heimdex.adapters.queue.redis as redis_queue

    broker = build_redis_broker(REDIS_URL, queue_name=stream)
    await broker.startup()
    try:
        await RedisJobQueue(broker).enqueue(uuid.uuid4())
        # redis-py types a reply as any shape RESP2 or RESP3 could give; this client speaks
        # RESP2: [[stream, [(entry id, fields)]]].
        read: Any = await redis.xreadgroup(
            broker.consumer_group_name, "test-consumer", {stream: ">"}, count=1
        )
        entry_id = read[0][1][0][0]
        failures = {"left": 2}
        real_pipeline = Redis.pipeline

        def failing_pipeline(self: Redis, *args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(self, *args, **kwargs)
            if failures["left"] > 0:
                failures["left"] -= 1

                async def dead(*_: Any, **__: Any) -> Any:
                    raise RedisConnectionError("Connection closed by server.")

                pipe.execute = dead  # type: ignore[method-assign]
            return pipe

        monkeypatch.setattr(Redis, "pipeline", failing_pipeline)  # the class the adapter uses
        monkeypatch.setattr(redis_queue, "_ACK_RETRY_SECONDS", 0.01)
        await broker._ack_generator(entry_id, stream)()
        monkeypatch.undo()
        assert failures["left"] == 0
        assert await redis.xlen(stream) == 0  # acknowledged and deleted after the retries
    finally:
        await broker.shutdown()
