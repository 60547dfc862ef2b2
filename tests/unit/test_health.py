from __future__ import annotations

import anyio

from heimdex.application.health import HealthService


class Healthy:
    async def check(self) -> None:
        return None


class Broken:
    async def check(self) -> None:
        raise RuntimeError("disk on fire")


class Hanging:
    async def check(self) -> None:
        await anyio.sleep(60)


async def test_all_healthy_is_ok_with_latencies() -> None:
    report = await HealthService({"database": Healthy(), "storage": Healthy()}).report()
    assert report.status == "ok"
    assert [c.name for c in report.checks] == ["database", "storage"]
    assert all(c.ok and c.latency_ms >= 0 and c.error is None for c in report.checks)


async def test_a_failing_check_degrades_the_report_and_says_why() -> None:
    report = await HealthService({"database": Healthy(), "storage": Broken()}).report()
    assert report.status == "degraded"
    assert not report.ok
    storage = report.checks[1]
    assert storage.ok is False
    assert storage.error == "disk on fire"


async def test_a_hanging_check_times_out_instead_of_hanging_the_report() -> None:
    with anyio.fail_after(5):
        report = await HealthService({"queue": Hanging()}, timeout_seconds=0.05).report()
    assert report.checks[0].ok is False
    assert "no answer within" in (report.checks[0].error or "")
