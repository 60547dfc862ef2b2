"""The decode pool on both event loops the product runs on: asyncio (the API under test, the
embedded default) and uvloop (`heimdex serve`, taskiq workers).

uvloop leaves a descriptor it watched in non-blocking mode; a pool that then read a large
answer from its worker as if the pipe blocked took the EAGAIN for a dead worker and failed
the job with a false `decoder_crashed`, but only under uvloop and only for answers that
arrive in more than one piece. That is what these tests pin down.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from heimdex.adapters.media.decode_pool import DecodePool
from heimdex.domain.errors import DecoderCrashed, DecodersBusy
from tests.fixtures.thumbnail_media import answer_later, large_answer, segfault

WORKER_MODULE = "heimdex.adapters.media.pyav_thumbnailer"
LOOPS: dict[str, Callable[[Awaitable[None]], None]] = {
    "asyncio": lambda scenario: asyncio.run(scenario),  # type: ignore[arg-type]
    "uvloop": lambda scenario: uvloop.run(scenario),  # type: ignore[arg-type]
}


@pytest.fixture(params=sorted(LOOPS))
def run_on_loop(request: pytest.FixtureRequest) -> Callable[[Awaitable[None]], None]:
    return LOOPS[request.param]


def test_large_answers_arrive_whole_on_every_loop(
    run_on_loop: Callable[[Awaitable[None]], None],
) -> None:
    sizes = [1 << 20, 3 << 20, 200_000, 5 << 20, 65_537, 2 << 20]

    async def scenario() -> None:
        pool = DecodePool(2, preload=[WORKER_MODULE])
        try:
            for _ in range(3):  # the same workers again: their pipes were watched before
                answers = await asyncio.gather(
                    *(pool.run(large_answer, size, seed) for seed, size in enumerate(sizes))
                )
                for seed, (size, answer) in enumerate(zip(sizes, answers, strict=True)):
                    assert answer == bytes([seed]) * size
        finally:
            await pool.close()

    run_on_loop(scenario())


def test_a_crash_is_still_a_crash_on_every_loop(
    run_on_loop: Callable[[Awaitable[None]], None],
) -> None:
    async def scenario() -> None:
        pool = DecodePool(1, preload=[WORKER_MODULE])
        try:
            assert len(await pool.run(large_answer, 1 << 20, 1)) == 1 << 20
            with pytest.raises(DecoderCrashed, match="SIGSEGV"):
                await pool.run(segfault)
            assert await pool.run(answer_later, 0.0, 5) == 5  # a fresh worker took the slot
        finally:
            await pool.close()

    run_on_loop(scenario())


def test_the_pool_leaves_its_pipes_blocking(
    run_on_loop: Callable[[Awaitable[None]], None],
) -> None:
    """What a watched descriptor is left as decides whether the next read can fail."""

    async def scenario() -> None:
        pool = DecodePool(1, preload=[WORKER_MODULE])
        try:
            await pool.run(answer_later, 0.0, 1)
            (worker,) = pool._idle
            assert os.get_blocking(worker.conn.fileno())
            assert os.get_blocking(worker.process.sentinel)
        finally:
            await pool.close()

    run_on_loop(scenario())


def test_a_calls_time_limit_does_not_count_its_wait_for_a_worker() -> None:
    """Behind a call that takes its worker for a second, a call limited to half a second that
    needs only a tenth still succeeds: a probe or thumbnail run queued behind others under load
    must not be taken for a hostile file. Past its own limit, a call is still ended."""

    async def scenario() -> None:
        pool = DecodePool(1, preload=[WORKER_MODULE])
        try:
            busy = asyncio.ensure_future(pool.run(answer_later, 1.0, 1))
            await asyncio.sleep(0.2)  # let it take the only worker
            queued = await pool.run(answer_later, 0.1, 2, call_seconds=0.5)
            assert queued == 2
            assert await busy == 1
            with pytest.raises(TimeoutError):
                await pool.run(answer_later, 5.0, 3, call_seconds=0.3)
            assert await pool.run(answer_later, 0.0, 4) == 4  # a fresh worker
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_the_wait_for_a_worker_is_bounded() -> None:
    """Behind a call that holds the only worker, a call does not queue for ever: past the pool's
    ``wait_seconds`` it fails with the transient ``decoders_busy``, long before the busy call
    ends, and the pool serves the next call normally once a worker is free."""

    async def scenario() -> None:
        pool = DecodePool(1, preload=[WORKER_MODULE], wait_seconds=0.3)
        try:
            busy = asyncio.ensure_future(pool.run(answer_later, 3.0, 1))
            await asyncio.sleep(0.2)  # let it take the only worker
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(DecodersBusy) as caught:
                await pool.run(answer_later, 0.0, 2)
            waited = loop.time() - started
            assert caught.value.code == "decoders_busy"
            assert caught.value.transient
            assert waited < 2.0  # the busy call still holds its worker for seconds
            assert not busy.done()
            assert await busy == 1
            assert await pool.run(answer_later, 0.0, 3) == 3
            assert pool.started == 1  # the given-up wait left no slot or worker behind
        finally:
            await pool.close()

    asyncio.run(scenario())
