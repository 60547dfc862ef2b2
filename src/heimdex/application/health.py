"""The admin health report: every dependency checked, each with its latency."""

from __future__ import annotations

import time
from collections.abc import Mapping

import anyio
import msgspec

from heimdex.domain.ports import HealthCheck


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None


class HealthReport(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


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
            try:
                with anyio.fail_after(self._timeout):
                    await check.check()
            except TimeoutError:
                error = f"no answer within {self._timeout:g} s"
            except Exception as exc:  # a health check reports every failure, never raises
                error = str(exc) or type(exc).__name__
            latency = round((time.perf_counter() - started) * 1000, 3)
            results[name] = CheckResult(
                name=name, ok=error is None, latency_ms=latency, error=error
            )

        async with anyio.create_task_group() as group:
            for name, check in self._checks.items():
                group.start_soon(run, name, check)
        checks = [results[name] for name in self._checks]
        return HealthReport(status="ok" if all(c.ok for c in checks) else "degraded", checks=checks)
