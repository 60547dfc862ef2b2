"""``InProcessRateLimiter``: token buckets in a dict, for one API process (the embedded default).

Every API process keeps its own buckets, so N processes behind a balancer allow N times the
rate: with several, use the Redis limiter (``HEIMDEX_RATE_LIMIT_BACKEND=redis``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from heimdex.domain.rate_limit import BucketState, RateDecision, RatePolicy, take

# Buckets are few (one per organisation seen), but never kept forever: past this many, the
# full ones (which hold nothing a new bucket would not) are dropped.
PRUNE_ABOVE = 10_000


class InProcessRateLimiter:
    """Token buckets in this process's memory: exact and free, but each API process counts on
    its own (N processes allow N times the rate)."""

    def __init__(self, policy: RatePolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._buckets: dict[str, BucketState] = {}

    async def acquire(self, key: str) -> RateDecision:
        # No await between reading and writing the bucket: atomic on the event loop.
        now = self._clock()
        state, decision = take(self._policy, self._buckets.get(key), now)
        self._buckets[key] = state
        if len(self._buckets) > PRUNE_ABOVE:
            self._prune(now)
        return decision

    def _prune(self, now: float) -> None:
        burst, rate = self._policy.burst, self._policy.rate
        self._buckets = {
            key: state
            for key, state in self._buckets.items()
            if state.tokens + (now - state.updated_at) * rate < burst
        }

    async def aclose(self) -> None:
        return None
