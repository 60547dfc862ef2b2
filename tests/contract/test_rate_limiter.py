"""The RateLimiter contract on the in-process buckets and on Redis (a real Redis): a burst, then
refusals with a time to wait, buckets per key, refilling at the rate; Redis down lets requests
through."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest

from heimdex.adapters.ratelimit.memory import PRUNE_ABOVE, InProcessRateLimiter
from heimdex.adapters.ratelimit.redis import RedisRateLimiter
from heimdex.domain.rate_limit import RatePolicy
from tests.requirements import require_port

REDIS_URL = "redis://127.0.0.1:6379/0"
# Slow enough that the few milliseconds a test takes between requests refill nothing that
# matters, fast enough that waiting for a token is a fraction of a second.
POLICY = RatePolicy(rate=10.0, burst=3)

Limiter = InProcessRateLimiter | RedisRateLimiter


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    made: Limiter
    if request.param == "redis":
        require_port("127.0.0.1", 6379, "Redis")
        made = RedisRateLimiter(REDIS_URL, POLICY, prefix=f"heimdex:test:{uuid.uuid4().hex}:")
    else:
        made = InProcessRateLimiter(POLICY)
    yield made
    await made.aclose()


async def test_the_burst_is_allowed_then_refused_with_a_time_to_wait(limiter: Limiter) -> None:
    key = uuid.uuid4().hex
    decisions = [await limiter.acquire(key) for _ in range(POLICY.burst)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert {d.limit for d in decisions} == {POLICY.burst}
    refused = await limiter.acquire(key)
    assert not refused.allowed
    assert 0 < refused.retry_after <= 1 / POLICY.rate
    assert refused.retry_after_seconds == 1
    assert refused.reset_seconds >= 1


async def test_each_key_has_its_own_bucket(limiter: Limiter) -> None:
    busy, quiet = uuid.uuid4().hex, uuid.uuid4().hex
    for _ in range(POLICY.burst + 2):
        await limiter.acquire(busy)
    assert not (await limiter.acquire(busy)).allowed
    fresh = await limiter.acquire(quiet)
    assert fresh.allowed
    assert fresh.remaining == POLICY.burst - 1


async def test_tokens_come_back_at_the_rate(limiter: Limiter) -> None:
    key = uuid.uuid4().hex
    for _ in range(POLICY.burst):
        await limiter.acquire(key)
    refused = await limiter.acquire(key)
    assert not refused.allowed
    await anyio.sleep(refused.retry_after + 0.05)
    assert (await limiter.acquire(key)).allowed
    assert not (await limiter.acquire(key)).allowed  # one token, not the whole burst


async def test_redis_down_lets_requests_through() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{port}/0", POLICY, timeout=0.2)
    try:
        decisions = [await limiter.acquire("org") for _ in range(POLICY.burst + 2)]
    finally:
        await limiter.aclose()
    assert all(d.allowed for d in decisions)


async def test_in_process_buckets_are_pruned_once_full_again() -> None:
    now = [0.0]
    limiter = InProcessRateLimiter(POLICY, clock=lambda: now[0])
    for index in range(PRUNE_ABOVE):
        await limiter.acquire(f"org-{index}")
    now[0] = 60.0  # every bucket is full again: nothing worth keeping
    await limiter.acquire("one-more")
    await limiter.acquire("and-another")
    assert len(limiter._buckets) <= 2
