"""Organisations take turns at the job queue: one organisation's backlog of heavy sidecar jobs
does not hold up another's light one. On the embedded default (in-process queue, SQLite) and on
Redis streams with a taskiq worker (PostgreSQL), through real HTTP handling and real decoding.

Each run measures org B's job alone, then behind org A's backlog, in one run: a ratio, not an
absolute time. First in, first out, B's job would start last and wait for the whole backlog.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from taskiq.receiver import Receiver

from heimdex.adapters.queue.redis import RUN_JOB_TASK, build_redis_broker
from heimdex.bootstrap import build
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.app import TEST_SECRET, bearer, ingest_file
from tests.fixtures.db import PostgresCatalogue
from tests.fixtures.media import MediaFactory
from tests.requirements import require_port

BACKLOG = 16
HEAVY = {"thumbnails": {"count": 12, "width": 640}}
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def heavy_clip(media_factory: MediaFactory) -> Path:
    """720p, 10 s, one keyframe: each thumbnail decodes the frames before it, so a dozen cost
    many times a default sidecar of a small clip, without a large upload."""
    return media_factory(
        "fair_heavy_720p.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "10"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p"),
    )


@dataclass
class Deployment:
    client: AsyncTestClient[Litestar]
    org_a: str
    org_b: str

    def token(self, org: str) -> str:
        return jwt.encode({"org_id": org}, TEST_SECRET, algorithm="HS256")

    async def request(self, org: str, asset_id: str, body: dict[str, Any]) -> str:
        answer = await self.client.post(
            f"/v1/assets/{asset_id}/sidecar", json=body, headers=bearer(self.token(org))
        )
        assert answer.status_code == 202, answer.text
        location: str = answer.headers["location"]
        return location

    async def finished(self, org: str, location: str, seconds: float = 240) -> dict[str, Any]:
        with anyio.fail_after(seconds):
            while True:
                job: dict[str, Any] = (
                    await self.client.get(location, headers=bearer(self.token(org)))
                ).json()
                if job["status"] in ("succeeded", "failed"):
                    assert job["status"] == "succeeded", job
                    return job
                await anyio.sleep(0.05)


def _settings(tmp_path: Path, **values: Any) -> Settings:
    # One decode worker: one job at a time, so the order jobs start in is the order of turns.
    return Settings.from_flat(
        data_dir=tmp_path / "data", jwt_secret=TEST_SECRET, decode_workers=1, **values
    )


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(settings=_settings(tmp_path))) as client:
        yield client


@pytest.fixture
def redis_settings(
    tmp_path: Path, private_postgres_catalogue: PostgresCatalogue
) -> Iterator[Settings]:
    require_port("127.0.0.1", 6379, "Redis")
    stream = f"heimdex:test:fair:{uuid.uuid4().hex[:8]}"
    yield _settings(
        tmp_path,
        database_url=private_postgres_catalogue.runtime_url,
        job_queue_backend="redis",
        redis_url=REDIS_URL,
        redis_queue_name=stream,
    )

    async def cleanup() -> None:
        redis = Redis.from_url(REDIS_URL)
        keys = [key async for key in redis.scan_iter(f"{stream}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()

    asyncio.run(cleanup())


@pytest.fixture
async def with_worker(redis_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The API enqueues to Redis; a taskiq worker in this process runs one job at a time."""
    broker = build_redis_broker(REDIS_URL, queue_name=redis_settings.redis.queue_name)
    services = build(redis_settings, broker=broker)

    async def run_job(job_id: str) -> None:
        await services.job_runner.run(uuid.UUID(job_id))

    broker.register_task(run_job, task_name=RUN_JOB_TASK)
    broker.is_worker_process = True
    async with AsyncTestClient(app=create_app(settings=redis_settings)) as client:
        await services.startup(start_queue=False)
        await broker.startup()
        finished = asyncio.Event()
        receiver = Receiver(broker, run_startup=False, max_async_tasks=1)
        worker = asyncio.create_task(receiver.listen(finished))
        try:
            yield client
        finally:
            finished.set()
            worker.cancel()
            await broker.shutdown()
            await services.aclose()


async def _measure(
    client: AsyncTestClient[Litestar], heavy_clip: Path, light_clip: Path
) -> tuple[float, float, int, list[float]]:
    """Org B's latency alone, then behind org A's backlog; B's place among the jobs started;
    how long A's heavy jobs ran."""
    suffix = uuid.uuid4().hex[:8]
    deployment = Deployment(client, f"org-a-{suffix}", f"org-b-{suffix}")
    token_a, token_b = deployment.token(deployment.org_a), deployment.token(deployment.org_b)
    light_assets = [(await ingest_file(client, token_b, light_clip))["asset_id"] for _ in "abc"]
    heavy_assets = [
        (await ingest_file(client, token_a, heavy_clip))["asset_id"] for _ in range(BACKLOG)
    ]

    # The first job starts the decoder's processes: measure the second.
    for asset in light_assets[:2]:
        started = time.perf_counter()
        alone = await deployment.request(deployment.org_b, asset, {})
        await deployment.finished(deployment.org_b, alone)
        latency_alone = time.perf_counter() - started

    backlog = [await deployment.request(deployment.org_a, a, HEAVY) for a in heavy_assets]
    started = time.perf_counter()
    late = await deployment.request(deployment.org_b, light_assets[2], {})
    late_job = await deployment.finished(deployment.org_b, late)
    latency_loaded = time.perf_counter() - started

    heavy_jobs = [await deployment.finished(deployment.org_a, loc) for loc in backlog]
    starts = sorted(datetime.fromisoformat(job["started_at"]) for job in [*heavy_jobs, late_job])
    place = starts.index(datetime.fromisoformat(late_job["started_at"])) + 1
    heavy = [
        (
            datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        ).total_seconds()
        for job in heavy_jobs
    ]
    return latency_alone, latency_loaded, place, heavy


def _check(alone: float, loaded: float, place: int, heavy: list[float]) -> None:
    typical = statistics.median(heavy)
    print(  # the figures, for the record (pytest -s)
        f"org B alone {alone:.2f} s, behind {BACKLOG} heavy jobs of org A {loaded:.2f} s "
        f"(x{loaded / alone:.1f}); a heavy job {typical:.2f} s; B started {place}."
    )
    # B's job was asked for after the whole backlog: first in, first out it would start last
    # and wait for all of it. In turn, it waits for the heavy job running when it came at most.
    assert place <= 3, place
    assert loaded < alone + 3 * typical, (alone, loaded, typical)
    assert loaded < sum(heavy) / 3, (loaded, sum(heavy))


async def test_a_light_job_of_one_organisation_overtakes_another_s_backlog_in_process(
    embedded: AsyncTestClient[Litestar], heavy_clip: Path, h264_aac_mp4: Path
) -> None:
    _check(*await _measure(embedded, heavy_clip, h264_aac_mp4))


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_light_job_of_one_organisation_overtakes_another_s_backlog_on_redis(
    with_worker: AsyncTestClient[Litestar], heavy_clip: Path, h264_aac_mp4: Path
) -> None:
    _check(*await _measure(with_worker, heavy_clip, h264_aac_mp4))
