"""What Heimdex checks of its Redis at start-up and in the admin health report, against real
redis-server processes of the test's own: ``maxmemory-policy`` must be ``noeviction`` (a queued
job's message is a key an evicting Redis may drop), and taskiq results — if a result backend is
ever added — must expire. Production refuses to start with one line; development warns."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs
from taskiq_redis import RedisAsyncResultBackend

from heimdex.adapters.queue.redis import build_redis_broker
from heimdex.adapters.queue.redis_checks import redis_config_report, result_expiry_problem
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.app import TEST_SECRET, TokenFactory, bearer
from tests.fixtures.processes import SECRET, PrivateRedis, free_port, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def lru_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path / "lru", maxmemory_policy="allkeys-lru")
    redis.workdir.mkdir()
    redis.start()
    yield redis
    redis.stop()


def environment(tmp_path: Path, redis_url: str, env: str) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    values.update(
        HEIMDEX_ENV=env,
        HEIMDEX_JWT_SECRET=SECRET,
        HEIMDEX_DATA_DIR=str(tmp_path / "data"),
        HEIMDEX_JOB_QUEUE_BACKEND="redis",
        HEIMDEX_REDIS_URL=redis_url,
        HEIMDEX_LOG_FORMAT="json",
    )
    return values


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_production_refuses_to_start_on_a_redis_that_evicts(
    tmp_path: Path, lru_redis: PrivateRedis, command: str
) -> None:
    args = ["serve", "--port", str(free_port())] if command == "serve" else ["worker"]
    result = subprocess.run(
        [sys.executable, "-m", "heimdex", *args],
        env=environment(tmp_path, lru_redis.url, "production"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("heimdex: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("heimdex: queue_misconfigured: refusing to start: ")
    assert "maxmemory-policy is 'allkeys-lru'" in lines[0]
    assert "maxmemory-policy noeviction" in lines[0]  # what to set
    assert "Traceback" not in result.stderr + result.stdout


def test_production_starts_on_a_noeviction_redis_and_health_reports_it(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    port = free_port()
    env = environment(tmp_path, private_redis.url, "production")
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "heimdex", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).is_success
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, "heimdex serve did not start on a noeviction Redis")
        token = subprocess.run(
            [sys.executable, "-m", "heimdex", "token", "--org", "ops", "--scope", "admin"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        health = httpx.get(
            f"http://127.0.0.1:{port}/v1/admin/health",
            headers={"Authorization": f"Bearer {token}"},
        )
        checks = {check["name"]: check for check in health.json()["checks"]}
        assert checks["queue_config"]["ok"] is True, health.text
        assert checks["queue"]["ok"] is True
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "redis_misconfigured" not in (tmp_path / "serve.log").read_text()


async def test_development_warns_and_health_names_the_policy(
    tmp_path: Path, lru_redis: PrivateRedis, make_token: TokenFactory
) -> None:
    settings = Settings.from_flat(
        data_dir=tmp_path / "data",
        jwt_secret=TEST_SECRET,
        job_queue_backend="redis",
        redis_url=lru_redis.url,
    )
    with capture_logs() as logs:
        async with AsyncTestClient(app=create_app(settings=settings)) as client:
            response = await client.get(
                "/v1/admin/health", headers=bearer(make_token("ops", scopes=["admin"]))
            )
    assert response.status_code == 503, response.text
    assert "retry-after" not in response.headers  # a setting to fix, not a wait
    checks = {check["name"]: check for check in response.json()["checks"]}
    assert checks["queue"]["ok"] is True
    assert checks["queue_config"]["ok"] is False
    assert checks["queue_config"]["transient"] is False
    assert "'allkeys-lru'" in checks["queue_config"]["error"]
    assert any(line["event"] == "redis_misconfigured" for line in logs)


async def test_a_redis_without_config_is_a_note_not_a_refusal(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path, extra=("--rename-command", "CONFIG", ""))
    redis.start()
    broker = build_redis_broker(redis.url)
    try:
        report = await redis_config_report(broker)
    finally:
        await broker.connection_pool.disconnect()
        redis.stop()
    assert report.problems == []
    assert len(report.notes) == 1
    assert "cannot read Redis maxmemory-policy" in report.notes[0]


async def test_an_unreachable_redis_is_a_note(tmp_path: Path) -> None:
    broker = build_redis_broker(f"redis://127.0.0.1:{free_port()}/0")
    try:
        report = await redis_config_report(broker)
    finally:
        await broker.connection_pool.disconnect()
    assert report.problems == []
    assert "cannot reach Redis" in report.notes[0]


def test_results_are_not_stored_and_a_backend_without_expiry_would_be_refused() -> None:
    broker = build_redis_broker("redis://127.0.0.1:1/0")
    assert result_expiry_problem(broker) is None  # no result backend: nothing stored
    broker.with_result_backend(RedisAsyncResultBackend("redis://127.0.0.1:1/0"))
    problem = result_expiry_problem(broker)
    assert problem is not None
    assert "without an expiry" in problem
    broker.with_result_backend(
        RedisAsyncResultBackend("redis://127.0.0.1:1/0", result_ex_time=3600)
    )
    assert result_expiry_problem(broker) is None
