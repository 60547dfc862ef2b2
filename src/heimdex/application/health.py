"""The admin health report: every dependency checked, each with its latency."""

from __future__ import annotations

import time
from collections.abc import Mapping

import anyio
import msgspec

from heimdex.domain.errors import HeimdexError
from heimdex.domain.ports import HealthCheck


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None
    #: for a failed check: whether it should pass again by itself (a dependency restarting, no
    #: answer in time) rather than needing someone to fix the configuration
    transient: bool | None = None


class HealthReport(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def transient(self) -> bool:
        """Every failed check is expected to pass again by itself: worth asking again later."""
        return all(c.ok or c.transient for c in self.checks)


class HealthService:
    """Runs all checks concurrently, each bounded by ``timeout_seconds``."""

    def __init__(self, checks: Mapping[str, HealthCheck], timeout_seconds: float = 5.0) -> None:
        self._checks = dict(checks)
        self._timeout = timeout_seconds

    async def report(self) -> HealthReport:
        results: dict[str, CheckResult] = {}

        async def run(name: str, check: HealthCheck) -> None:
            started = time.perf_counter()
            error: str | None = None
            transient: bool | None = None
            try:
                with anyio.fail_after(self._timeout):
                    await check.check()
            except TimeoutError:
                error, transient = f"no answer within {self._timeout:g} s", True
            except HeimdexError as exc:
                error, transient = exc.message, exc.transient
            except Exception as exc:  # a health check reports every failure, never raises
                error, transient = str(exc) or type(exc).__name__, False
            latency = round((time.perf_counter() - started) * 1000, 3)
            results[name] = CheckResult(
                name=name, ok=error is None, latency_ms=latency, error=error, transient=transient
            )

        async with anyio.create_task_group() as group:
            for name, check in self._checks.items():
                group.start_soon(run, name, check)
        checks = [results[name] for name in self._checks]
        return HealthReport(status="ok" if all(c.ok for c in checks) else "degraded", checks=checks)
