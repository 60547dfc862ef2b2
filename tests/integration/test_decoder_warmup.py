"""`heimdex serve` starts its decode processes as it starts, so the first commit and the first
job do not wait seconds for a fresh process to import FFmpeg; other apps (tests, embedding)
start them on first use."""

from __future__ import annotations

from pathlib import Path

import anyio
from litestar.testing import AsyncTestClient

from heimdex.adapters.media.pyav import PyAVProber
from heimdex.adapters.media.pyav_thumbnailer import PyAVThumbnailer
from heimdex.bootstrap import Services
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.app import TEST_SECRET, services_of


def decoders(services: Services) -> tuple[PyAVProber, PyAVThumbnailer]:
    assert isinstance(services.adapters.prober, PyAVProber)
    assert isinstance(services.adapters.thumbnailer, PyAVThumbnailer)
    return services.adapters.prober, services.adapters.thumbnailer


async def test_a_warmed_app_starts_its_decode_processes_in_the_background(
    data_dir: Path,
) -> None:
    settings = Settings.from_flat(data_dir=data_dir, jwt_secret=TEST_SECRET, probe_workers=1)
    app = create_app(settings=settings, warm_decoders=True)
    prober, thumbnailer = decoders(services_of(app))
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/health")).status_code == 200  # serving while they start
        with anyio.fail_after(60):
            while prober.pool.started < 1 or thumbnailer.pool.started < 2:  # noqa: ASYNC110
                await anyio.sleep(0.05)


async def test_an_app_not_asked_to_warm_starts_none_until_used(data_dir: Path) -> None:
    app = create_app(settings=Settings.from_flat(data_dir=data_dir, jwt_secret=TEST_SECRET))
    prober, thumbnailer = decoders(services_of(app))
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/health")).status_code == 200
        await anyio.sleep(0.5)
        assert (prober.pool.started, thumbnailer.pool.started) == (0, 0)


async def test_an_api_whose_jobs_run_on_workers_warms_only_its_prober(data_dir: Path) -> None:
    settings = Settings.from_flat(
        data_dir=data_dir,
        jwt_secret=TEST_SECRET,
        probe_workers=1,
        job_queue_backend="redis",
        redis_url="redis://127.0.0.1:9/0",  # nothing listens: the API starts all the same
    )
    app = create_app(settings=settings, warm_decoders=True)
    prober, thumbnailer = decoders(services_of(app))
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/health")).status_code == 200
        with anyio.fail_after(60):
            while prober.pool.started < 1:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await anyio.sleep(0.3)
        assert thumbnailer.pool.started == 0  # workers make the thumbnails, not the API
