"""The token bucket behind per-organisation rate limits: pure arithmetic, no clock, no storage.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; each request takes
one. A full bucket lets a client send ``burst`` requests at once, then ``rate`` a second for as
long as it keeps up. The in-process limiter keeps ``BucketState`` in a dict; the Redis limiter
runs the same arithmetic in a Lua script (``adapters/ratelimit/redis.py``), so both answer alike.
"""

from __future__ import annotations

import math

import msgspec


class RatePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """``rate`` tokens a second, at most ``burst`` in the bucket."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a rate policy needs a positive rate and a burst of at least 1")


class BucketState(msgspec.Struct, frozen=True):
    tokens: float
    updated_at: float  # seconds, on whatever monotonic clock the limiter uses


class RateDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The answer for one request: allowed or not, and what to tell the client."""

    allowed: bool
    limit: int  # the burst: requests allowed at once
    remaining: int  # whole tokens left after this request
    retry_after: float  # seconds until one token is back (0 when allowed)
    reset_after: float  # seconds until the bucket is full again

    @property
    def retry_after_seconds(self) -> int:
        """``Retry-After`` is whole seconds: rounded up, never 0 for a refusal."""
        return max(1, math.ceil(self.retry_after)) if not self.allowed else 0

    @property
    def reset_seconds(self) -> int:
        return math.ceil(self.reset_after)


def take(
    policy: RatePolicy, state: BucketState | None, now: float
) -> tuple[BucketState, RateDecision]:
    """Take one token at ``now``; answers the bucket's new state and the decision. A bucket not
    seen before (``None``) starts full. A clock that went backwards refills nothing."""
    if state is None:
        tokens = float(policy.burst)
    else:
        elapsed = max(0.0, now - state.updated_at)
        tokens = min(float(policy.burst), state.tokens + elapsed * policy.rate)
    allowed = tokens >= 1.0
    if allowed:
        tokens -= 1.0
    return BucketState(tokens=tokens, updated_at=now), decide(policy, allowed, tokens)


def decide(policy: RatePolicy, allowed: bool, tokens: float) -> RateDecision:
    """The decision for a bucket left with ``tokens`` after the request was (not) allowed."""
    return RateDecision(
        allowed=allowed,
        limit=policy.burst,
        remaining=max(0, int(tokens)),
        retry_after=0.0 if allowed else (1.0 - tokens) / policy.rate,
        reset_after=max(0.0, policy.burst - tokens) / policy.rate,
    )


def unlimited(policy: RatePolicy) -> RateDecision:
    """What a limiter that cannot answer says: allowed, the bucket as if full."""
    return decide(policy, True, float(policy.burst))
