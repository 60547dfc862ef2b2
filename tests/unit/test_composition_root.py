"""The composition root takes fakes: adapters built from the settings, some swapped for the
in-memory fakes, and the real use cases wired on top by ``build_services``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from heimdex.bootstrap import (
    Adapters,
    build_adapters,
    build_connection_share,
    build_services,
    build_worker_broker,
)
from heimdex.domain.model import AssetStatus, JobStatus, Principal, ThumbnailSpec
from heimdex.settings import Settings
from tests.builders import make_asset, make_upload, short_media
from tests.unit.fakes import (
    FakeClock,
    FakeDatabase,
    FakeJobDirectory,
    FakeProber,
    FakeQueue,
    FakeStorage,
    FakeThumbnailer,
    FakeUploadDirectory,
    FakeWebhookDirectory,
    FakeWebhookSender,
)

ORG = Principal(org_id="org-a")
SECRET = "composition-secret-that-is-at-least-32-bytes"


class Fakes:
    """The in-memory fakes one test swaps in."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.database = FakeDatabase()
        self.webhooks = FakeWebhookDirectory(self.database)
        self.storage = FakeStorage()
        self.queue = FakeQueue(self.clock)
        self.thumbnailer = FakeThumbnailer()

    def into(self, adapters: Adapters) -> Adapters:
        return replace(
            adapters,
            clock=self.clock,
            uow=self.database,
            job_directory=FakeJobDirectory(self.database),
            upload_directory=FakeUploadDirectory(self.database),
            webhook_directory=self.webhooks,
            replay_directory=self.webhooks,
            storage=self.storage,
            prober=FakeProber(),
            thumbnailer=self.thumbnailer,
            picture_maker=None,
            queue=self.queue,
            webhook_sender=FakeWebhookSender(),
        )


async def test_a_job_runs_through_the_real_wiring_on_fakes(tmp_path: Path) -> None:
    settings = Settings.from_flat(data_dir=tmp_path / "data", jwt_secret=SECRET)
    fakes = Fakes()
    services = build_services(settings, fakes.into(build_adapters(settings)))
    database, storage, queue = fakes.database, fakes.storage, fakes.queue
    try:
        upload = make_upload("org-a", at=fakes.clock.now(), source_uri="mem://clip")
        asset = make_asset(upload, size_bytes=3, sha256="ab" * 32, media=short_media(size_bytes=3))
        async with database("org-a") as uow:
            await uow.assets.add(asset)
            await uow.commit()
        await storage.write_bytes(asset.key, b"abc")

        job, created = await services.jobs.request_sidecar(ORG, asset.id, ThumbnailSpec())
        assert created
        assert queue.waiting() == [job.id]  # the fake queue the use case was given
        await services.job_runner.run(job.id)
        assert fakes.thumbnailer.calls == 1

        done = await services.jobs.get(ORG, job.id)
        assert done.status is JobStatus.SUCCEEDED
        assert sorted(k for k in storage.objects if k.startswith("derived/")) == [
            f"derived/org-a/{asset.id}/thumbs/0000.jpg",
            f"derived/org-a/{asset.id}/thumbs/0001.jpg",
            f"derived/org-a/sidecars/{asset.id}.json",
        ]
        assert (await services.assets.get(ORG, asset.id)).status is AssetStatus.READY
        # The real metrics adapter, kept, timed the fake thumbnailer the runner was given.
        assert b'heimdex_thumbnail_duration_seconds_count{outcome="ok",thumbnailer="fake"} 1.0' in (
            services.metrics.render()
        )
        report = await services.health.report()
        assert report.ok
    finally:
        await services.aclose()


def test_the_redis_broker_takes_the_claim_idle_time_from_the_settings(tmp_path: Path) -> None:
    settings = Settings.from_flat(
        data_dir=tmp_path / "data",
        jwt_secret=SECRET,
        redis_queue_name="heimdex:elsewhere",
        redis_claim_idle_seconds=45,
    )
    broker = build_worker_broker(settings)
    assert (broker.queue_name, broker.claim_idle_seconds) == ("heimdex:elsewhere", 45)
    # Unset, twice the job lease: the default lease's 60 s, or the lease that was set.
    assert build_worker_broker(Settings.from_flat(data_dir=tmp_path)).claim_idle_seconds == 120
    longer = Settings.from_flat(data_dir=tmp_path, job_lease_seconds=300)
    assert build_worker_broker(longer).claim_idle_seconds == 600


def test_each_pool_gets_a_share_of_its_own_size_and_none_when_switched_off() -> None:
    settings = Settings.from_flat(jwt_secret=SECRET, database_org_share=0.5)
    reads = build_connection_share(settings, 20, "read")
    units = build_connection_share(settings, 15, "unit-of-work")
    assert reads is not None
    assert units is not None
    assert (reads.rule.capacity, reads.rule.per_org) == (20, 10)
    assert (units.rule.capacity, units.rule.per_org) == (15, 7)
    off = settings.replace_flat(database_org_share=0.0)
    assert build_connection_share(off, 20, "read") is None
