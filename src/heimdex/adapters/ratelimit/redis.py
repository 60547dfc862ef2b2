"""``RedisRateLimiter``: token buckets in Redis, shared by every API process of a deployment.

One Lua script reads, refills, takes and writes a bucket atomically on Redis's own clock
(``TIME``), so processes on machines whose clocks disagree still share one rate. A bucket is a
hash that expires once it would be full again, so idle organisations cost nothing.

When Redis does not answer (within ``timeout``), the request is allowed and a warning logged: a
limiter must not turn a Redis outage into an API outage.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from heimdex.domain.rate_limit import RateDecision, RatePolicy, decide, unlimited
from heimdex.logs import get_logger

log = get_logger(__name__)

# KEYS[1]: the bucket; ARGV: rate (tokens/s), burst. Answers {allowed, tokens left as text}
# (Lua numbers would come back truncated to integers).
TAKE_SCRIPT = """
redis.replicate_commands()
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = burst
if state[1] and state[2] then
  local elapsed = math.max(0, now - tonumber(state[2]))
  tokens = math.min(burst, tonumber(state[1]) + elapsed * rate)
end
local allowed = 0
if tokens >= 1 then
  allowed = 1
  tokens = tokens - 1
end
local left = string.format('%.6f', tokens)
redis.call('HSET', KEYS[1], 'tokens', left, 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, left}
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every API process: one Lua script per request, on
    Redis's clock. Lets requests through (and logs) when Redis does not answer in time."""

    def __init__(
        self,
        url: str,
        policy: RatePolicy,
        *,
        prefix: str = "heimdex:ratelimit:",
        timeout: float = 0.5,
    ) -> None:
        self._policy = policy
        self._prefix = prefix
        self._redis: Redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._script: Any = self._redis.register_script(TAKE_SCRIPT)

    async def acquire(self, key: str) -> RateDecision:
        try:
            allowed, tokens = await self._script(
                keys=[self._prefix + key], args=[self._policy.rate, self._policy.burst]
            )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("rate_limiter_unavailable", error=str(exc) or type(exc).__name__)
            return unlimited(self._policy)
        return decide(self._policy, bool(int(allowed)), float(tokens))

    async def aclose(self) -> None:
        await self._redis.aclose()
