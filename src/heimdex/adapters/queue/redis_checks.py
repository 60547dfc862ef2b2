"""What the Redis queue needs from its server, checked at start-up and in the admin health report.

- ``maxmemory-policy noeviction``: a queued job's message is a stream entry, i.e. a key. Any
  other policy lets Redis drop it under memory pressure; the sweep would hand the job over
  again after ``HEIMDEX_JOB_REDELIVER_SECONDS``, but evicting the consumer group or a pending
  entry loses far more than a delay. With ``noeviction`` a full Redis refuses writes instead:
  the API keeps the job in its row (the outbox) and the sweep hands it over later.
- Result expiry: taskiq stores each task's result only when the broker has a result backend.
  Heimdex's has none (results are never stored; the job row holds the outcome), so no result
  key can pile up. Should one be added, its keys must expire: a backend without an expiry is
  reported as a problem.

Managed Redis services often disable ``CONFIG``; the policy cannot be read then, which is said
(a warning), not held against the service.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from taskiq import AsyncBroker
from taskiq.result_backends.dummy import DummyResultBackend

from heimdex.domain.errors import QueueMisconfigured

NOEVICTION = "noeviction"


class RedisConfigReport(msgspec.Struct, frozen=True, kw_only=True):
    """``problems`` are wrong and must be fixed; ``notes`` are what could not be checked."""

    problems: list[str]
    notes: list[str]


def result_expiry_problem(broker: AsyncBroker) -> str | None:
    """A result backend whose keys never expire, or None (none stored, or they expire)."""
    backend: Any = broker.result_backend
    if isinstance(backend, DummyResultBackend):
        return None
    if getattr(backend, "result_ex_time", None) or getattr(backend, "result_px_time", None):
        return None
    return (
        f"the taskiq result backend {type(backend).__name__} stores results without an expiry: "
        "give it result_ex_time (or result_px_time)"
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def redis_config_report(broker: Any) -> RedisConfigReport:
    """Ask the broker's Redis for its eviction policy and look at the result backend."""
    problems: list[str] = []
    notes: list[str] = []
    try:
        async with Redis(connection_pool=broker.connection_pool) as redis:
            config = await redis.config_get("maxmemory-policy")
    except ResponseError as exc:  # CONFIG renamed or forbidden (managed Redis, ACLs)
        notes.append(
            f"cannot read Redis maxmemory-policy (CONFIG GET refused: {exc}); make sure the "
            f"server's policy is {NOEVICTION}"
        )
    except (RedisError, OSError) as exc:
        notes.append(f"cannot reach Redis to check its maxmemory-policy: {exc}")
    else:
        found = {_text(k): _text(v) for k, v in config.items()}.get("maxmemory-policy")
        if found is None:
            notes.append(f"Redis did not say its maxmemory-policy; make sure it is {NOEVICTION}")
        elif found != NOEVICTION:
            problems.append(
                f"Redis maxmemory-policy is {found!r}, it must be {NOEVICTION!r} (it would evict "
                f"queued jobs): set 'maxmemory-policy {NOEVICTION}' in redis.conf or run "
                f"'CONFIG SET maxmemory-policy {NOEVICTION}'"
            )
    expiry = result_expiry_problem(broker)
    if expiry is not None:
        problems.append(expiry)
    return RedisConfigReport(problems=problems, notes=notes)


class RedisConfigCheck:
    """The admin health report's ``queue_config``: fails when the policy is wrong; a policy it
    cannot read (``CONFIG`` disabled) passes, since there is nothing the check can tell."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker

    async def check(self) -> None:
        report = await redis_config_report(self._broker)
        if report.problems:
            raise QueueMisconfigured("; ".join(report.problems))
