"""Delete means deleted: a job running while its asset is deleted leaves no derived file behind
and its old signed URLs answer 404; what a killed job left is swept. On SQLite and PostgreSQL,
local storage and S3 (a moto server)."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.adapters.auth.url_signing import HmacUrlSigner
from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.job_directory import SqlJobDirectory
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.adapters.media.ffmpeg_thumbnailer import FfmpegThumbnailer
from heimdex.adapters.storage.local import LocalStorage
from heimdex.application.assets import AssetService
from heimdex.application.derived_files import DerivedFileSweeper
from heimdex.application.ingest import IngestLimits, IngestService, UploadRequest
from heimdex.application.job_policy import JobPolicy
from heimdex.application.job_requests import JobRequests
from heimdex.application.job_runner import JobRunner
from heimdex.application.sidecars import SidecarService
from heimdex.bootstrap import build_adapters
from heimdex.domain.errors import NotFound
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Asset, JobKind, Principal, Thumbnail, ThumbnailSpec
from heimdex.domain.ports import Storage, Thumbnailer
from heimdex.domain.storage_keys import (
    asset_derived_prefix,
    derived_prefix,
    sidecar_key,
    sidecars_prefix,
    thumbnail_key,
)
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.app import TokenFactory, bearer, ingest_file, services_of, wait_for_job
from tests.fixtures.probers import shared_pyav_prober
from tests.fixtures.s3 import MotoServer, s3_storage
from tests.unit.fakes import FakeClock, FakeMetrics, FakeQueue

SPEC = ThumbnailSpec(count=3, width=64)


class GatedThumbnailer:
    """A real thumbnailer that, while ``armed``, stops once its thumbnails are made (before the
    job writes any) until ``release`` is set: whatever the test does meanwhile lands mid-job.

    Thread events: the app under ``AsyncTestClient`` runs on an event loop of its own."""

    def __init__(self, inner: Thumbnailer) -> None:
        self._inner = inner
        self.name = inner.name
        self.armed = True
        self.made = threading.Event()
        self.release = threading.Event()
        #: raised once released, instead of answering the thumbnails
        self.fail_with: Exception | None = None

    async def thumbnails(
        self, path: Path, media: MediaInfo, spec: ThumbnailSpec
    ) -> Sequence[Thumbnail]:
        made = await self._inner.thumbnails(path, media, spec)
        if self.armed:
            self.made.set()
            await anyio.to_thread.run_sync(self.release.wait, 60.0)
        if self.fail_with is not None:
            raise self.fail_with
        return made

    async def check(self) -> None:
        await self._inner.check()

    async def reached(self) -> None:
        """Return once a run stopped at the gate."""
        assert await anyio.to_thread.run_sync(self.made.wait, 60.0), "no job reached the gate"


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "storage", HmacUrlSigner("deleted-assets-secret-of-32-bytes"))
        return
    moto: MotoServer = request.getfixturevalue("moto_server")
    store = s3_storage(moto, request.getfixturevalue("s3_bucket"), tmp_path / "tmp")
    try:
        yield store
    finally:
        await store.aclose()


class World:
    """The use cases over a real database and storage, with a gated real thumbnailer."""

    def __init__(self, database: Database, storage: Storage) -> None:
        self.clock = FakeClock()
        self.uow = SqlUnitOfWorkFactory(database)
        self.storage = storage
        self.metrics = FakeMetrics()
        limits = IngestLimits(
            max_upload_size_bytes=1 << 30,
            upload_url_ttl=timedelta(hours=1),
            upload_stall=timedelta(minutes=30),
        )
        self.ingest = IngestService(
            self.uow, storage, shared_pyav_prober(), self.clock, limits, metrics=self.metrics
        )
        self.assets = AssetService(self.uow, storage)
        self.sidecars = SidecarService(self.uow, storage, self.clock, url_ttl_seconds=3600)
        self.thumbnailer = GatedThumbnailer(FfmpegThumbnailer(concurrency=1))
        self.queue = FakeQueue()
        self.jobs = JobRequests(
            self.uow, SqlJobDirectory(database), self.queue, self.clock, JobPolicy()
        )
        self.runner = JobRunner(
            self.uow,
            SqlJobDirectory(database),
            self.queue,
            storage,
            self.thumbnailer,
            self.clock,
            JobPolicy(),
            prober_name="pyav",
            metrics=self.metrics,
        )
        self.sweeper = DerivedFileSweeper(self.uow, storage, every=timedelta(hours=1))

    async def asset(self, org: Principal, media: Path) -> Asset:
        data = media.read_bytes()
        issued = await self.ingest.init_upload(
            org,
            UploadRequest(
                source_name=media.name, content_length=len(data), content_type="video/mp4"
            ),
            "http://testserver",
        )

        async def body() -> AsyncIterator[bytes]:
            yield data

        await self.ingest.receive_upload(org.org_id, issued.upload.id, body())
        asset, _ = await self.ingest.commit_upload(org, issued.upload.id)
        return asset

    async def derived_names(self, org_id: str) -> list[str]:
        """Everything under the organisation's derived prefix, sidecars included."""
        names = [n async for n in self.storage.list_names(derived_prefix(org_id))]
        names += [n async for n in self.storage.list_names(sidecars_prefix(org_id))]
        return sorted(n for n in names if n != "sidecars/")


def an_org() -> Principal:
    return Principal(org_id=f"org-{uuid.uuid4().hex[:10]}")


async def test_a_job_whose_asset_is_deleted_mid_run_publishes_nothing(
    database: Database, storage: Storage, h264_aac_mp4: Path
) -> None:
    world = World(database, storage)
    org = an_org()
    asset = await world.asset(org, h264_aac_mp4)

    # A first run publishes thumbnails and a sidecar, and hands out signed URLs for them.
    world.thumbnailer.armed = False
    job, _ = await world.jobs.request_sidecar(org, asset.id, SPEC)
    await world.runner.run(job.id)
    links = (await world.sidecars.thumbnails(org, asset.id, "http://testserver")).items
    assert len(links) == SPEC.count
    keys = [thumbnail_key(org.org_id, asset.id, i, SPEC.format) for i in range(SPEC.count)]
    assert await storage.stat(keys[0]) is not None

    # A forced re-run is stopped after decoding; the asset is deleted; then it goes on.
    world.thumbnailer.armed = True
    rerun, created = await world.jobs.request_sidecar(org, asset.id, SPEC, force=True)
    assert created
    async with anyio.create_task_group() as group:
        group.start_soon(world.runner.run, rerun.id)
        await world.thumbnailer.reached()
        await world.assets.delete(org, asset.id)
        world.thumbnailer.release.set()

    for key in [*keys, sidecar_key(org.org_id, asset.id)]:
        assert await storage.stat(key) is None, key
    assert await world.derived_names(org.org_id) == []
    assert world.metrics.job_outcomes == ["succeeded", "failed"]
    # The URLs handed out before answer 404: the API's own (local) and S3's presigned ones.
    for link in links:
        if isinstance(storage, LocalStorage):
            path = urlsplit(link.url).path.removeprefix("/v1/files/")
            with pytest.raises(NotFound):
                await world.sidecars.signed_file(org.org_id, path)
        else:
            async with httpx.AsyncClient() as client:
                assert (await client.get(link.url)).status_code == 404
    assert await world.sweeper.sweep_now() == 0  # the job cleaned up after itself


async def test_a_run_that_fails_after_its_asset_was_deleted_removes_what_was_written(
    database: Database, storage: Storage, h264_aac_mp4: Path
) -> None:
    world = World(database, storage)
    org = an_org()
    asset = await world.asset(org, h264_aac_mp4)
    world.thumbnailer.fail_with = OSError("the disk went away")
    job, _ = await world.jobs.request_sidecar(org, asset.id, SPEC)
    leftover = thumbnail_key(org.org_id, asset.id, 0, SPEC.format)
    async with anyio.create_task_group() as group:
        group.start_soon(world.runner.run, job.id)
        await world.thumbnailer.reached()
        await world.assets.delete(org, asset.id)
        # What another run of the job (its lease lost, still going) wrote after the delete.
        await storage.write_bytes(leftover, b"\xff\xd8half")
        world.thumbnailer.release.set()

    assert await storage.stat(leftover) is None
    assert await world.derived_names(org.org_id) == []
    assert world.metrics.job_outcomes == ["failed"]


async def test_the_sweep_removes_derived_files_of_assets_that_are_gone(
    database: Database, storage: Storage, h264_aac_mp4: Path
) -> None:
    world = World(database, storage)
    acme, other = an_org(), an_org()
    live = await world.asset(acme, h264_aac_mp4)
    elsewhere = await world.asset(other, h264_aac_mp4)
    for org, asset in ((acme, live), (other, elsewhere)):  # what their jobs wrote
        for index in range(SPEC.count):
            await storage.write_bytes(thumbnail_key(org.org_id, asset.id, index, "jpg"), b"x")
        await storage.write_bytes(sidecar_key(org.org_id, asset.id), b"{}")
    kept = sorted(await world.derived_names(acme.org_id))
    kept_elsewhere = await world.derived_names(other.org_id)
    assert kept == sorted([f"{live.id}/", f"{live.id}.json"])

    # What a job killed after its asset was deleted leaves: thumbnails and a sidecar of an
    # asset id the catalogue does not hold (in both organisations), and a sidecar alone.
    gone, gone_sidecar_only, gone_elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for org_id, asset_id in ((acme.org_id, gone), (other.org_id, gone_elsewhere)):
        for index in range(3):
            await storage.write_bytes(thumbnail_key(org_id, asset_id, index, "jpg"), b"x")
        await storage.write_bytes(sidecar_key(org_id, asset_id), b"{}")
    await storage.write_bytes(sidecar_key(acme.org_id, gone_sidecar_only), b"{}")
    # Not an asset's at all: never the sweep's to touch.
    stranger = f"{derived_prefix(acme.org_id)}notes/readme.txt"
    await storage.write_bytes(stranger, b"mine")

    assert await world.sweeper.sweep() == 3
    assert await world.derived_names(acme.org_id) == sorted([*kept, "notes/"])
    assert await world.derived_names(other.org_id) == kept_elsewhere
    for asset_id in (gone, gone_sidecar_only):
        assert await storage.stat(sidecar_key(acme.org_id, asset_id)) is None
        prefix = asset_derived_prefix(acme.org_id, asset_id)
        assert [name async for name in storage.list_names(prefix)] == []
    assert await storage.stat(stranger) is not None
    assert await storage.stat(thumbnail_key(acme.org_id, live.id, 0, "jpg")) is not None

    # A pass at most once an interval: the next sweep soon after does nothing, even with work.
    await storage.write_bytes(sidecar_key(acme.org_id, gone), b"{}")
    assert await world.sweeper.sweep() == 0
    assert await world.sweeper.sweep_now() == 1


# -- through HTTP, on the embedded default's local storage ------------------------------------
@pytest.fixture
def gate() -> GatedThumbnailer:
    gated = GatedThumbnailer(FfmpegThumbnailer(concurrency=1))
    gated.armed = False
    return gated


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "thumbnailer": "ffmpeg"}


@pytest.fixture
def app(settings: Settings, gate: GatedThumbnailer) -> Litestar:
    """The app as configured, its thumbnailer gated (passed through the real wiring)."""
    adapters = dataclasses.replace(build_adapters(settings), thumbnailer=gate)
    return create_app(settings=settings, adapters=adapters)


def _jobs_finished(app: Litestar) -> float:
    registry = services_of(app).metrics.registry
    return sum(
        registry.get_sample_value(
            "heimdex_job_duration_seconds_count",
            {"kind": JobKind.SIDECAR.value, "outcome": outcome},
        )
        or 0.0
        for outcome in ("succeeded", "failed", "retry")
    )


async def test_old_signed_urls_answer_404_once_the_asset_is_deleted_mid_job(
    app: Litestar,
    client: AsyncTestClient[Litestar],
    gate: GatedThumbnailer,
    make_token: TokenFactory,
    org_a: str,
    h264_aac_mp4: Path,
) -> None:
    token = make_token(org_a)
    asset = await ingest_file(client, token, h264_aac_mp4)
    url = f"/v1/assets/{asset['asset_id']}"
    small = {"thumbnails": {"count": 3, "width": 64}}
    first = await client.post(f"{url}/sidecar", json=small, headers=bearer(token))
    assert (await wait_for_job(client, token, first.headers["location"]))["status"] == "succeeded"
    items = (await client.get(f"{url}/thumbnails", headers=bearer(token))).json()["items"]
    urls = [urlsplit(item["url"]) for item in items]
    assert (await client.get(f"{urls[0].path}?{urls[0].query}")).status_code == 200

    gate.armed = True
    forced = await client.post(
        f"{url}/sidecar", json={**small, "force": True}, headers=bearer(token)
    )
    assert forced.status_code == 202, forced.text
    await gate.reached()
    assert (await client.delete(url, headers=bearer(token))).status_code == 204
    gate.release.set()
    with anyio.fail_after(60):
        while True:  # the re-run ends: outputs written, and removed again
            if _jobs_finished(app) >= 2:
                break
            await anyio.sleep(0.02)

    for parts in urls:
        answer = await client.get(f"{parts.path}?{parts.query}")
        assert answer.status_code == 404, answer.text
        assert answer.json()["code"] == "not_found"
    storage: Storage = services_of(app).adapters.storage
    org_id, asset_id = org_a, uuid.UUID(asset["asset_id"])
    assert await storage.stat(sidecar_key(org_id, asset_id)) is None
    for index in range(len(urls)):
        assert await storage.stat(thumbnail_key(org_id, asset_id, index, "jpg")) is None
    # A file that outlived its asset (a job killed before its clean-up) is not served either.
    await storage.write_bytes(thumbnail_key(org_id, asset_id, 0, "jpg"), b"\xff\xd8\xffold")
    assert (await client.get(f"{urls[0].path}?{urls[0].query}")).status_code == 404
    # ... and the app's periodic sweep removes it (run on the app's own event loop).
    services = services_of(app)
    assert services.derived_files.sweep in services.sweeps()
    swept = await anyio.to_thread.run_sync(
        client.blocking_portal.call, services.derived_files.sweep_now
    )
    assert swept == 1
    assert await storage.stat(thumbnail_key(org_id, asset_id, 0, "jpg")) is None
