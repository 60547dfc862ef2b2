"""Limits on clients with in-memory fakes: the token bucket's arithmetic, the storage quota at
init and the concurrent-jobs quota at sidecar requests."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from heimdex.application.ingest import IngestLimits, IngestService, UploadRequest
from heimdex.application.job_policy import JobPolicy
from heimdex.application.job_requests import JobRequests
from heimdex.domain.errors import JobQuotaExceeded, StorageQuotaExceeded
from heimdex.domain.model import (
    Asset,
    JobStatus,
    Principal,
    ThumbnailSpec,
    UploadStatus,
)
from heimdex.domain.rate_limit import BucketState, RatePolicy, take
from heimdex.settings import SettingsError, load_settings
from tests.builders import make_asset, make_upload, short_media
from tests.unit.fakes import (
    FakeClock,
    FakeDatabase,
    FakeJobDirectory,
    FakeMetrics,
    FakeProber,
    FakeQueue,
    FakeStorage,
)

ORG_A = Principal(org_id="org-a")
ORG_B = Principal(org_id="org-b")


# -- the token bucket --------------------------------------------------------------------------
def test_a_new_bucket_allows_the_burst_then_refuses() -> None:
    policy = RatePolicy(rate=2.0, burst=3)
    state: BucketState | None = None
    remaining = []
    for _ in range(3):
        state, decision = take(policy, state, 100.0)
        assert decision.allowed
        assert decision.retry_after_seconds == 0
        remaining.append(decision.remaining)
    assert remaining == [2, 1, 0]
    state, refused = take(policy, state, 100.0)
    assert not refused.allowed
    assert refused.limit == 3
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(0.5)  # one token at 2 a second
    assert refused.retry_after_seconds == 1  # whole seconds, rounded up, never 0
    assert refused.reset_after == pytest.approx(1.5)
    assert refused.reset_seconds == 2


def test_the_bucket_refills_at_the_rate_and_never_above_the_burst() -> None:
    policy = RatePolicy(rate=2.0, burst=3)
    state = BucketState(tokens=0.0, updated_at=100.0)
    state, decision = take(policy, state, 100.4)  # 0.8 of a token: not yet
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(0.1)
    state, decision = take(policy, state, 100.5)  # a whole token back
    assert decision.allowed
    _, decision = take(policy, state, 1000.0)  # idle for long: full, not 1800 tokens
    assert decision.remaining == 2


def test_a_clock_going_backwards_refills_nothing() -> None:
    policy = RatePolicy(rate=1.0, burst=1)
    state, _ = take(policy, None, 50.0)
    _, decision = take(policy, state, 10.0)
    assert not decision.allowed


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 5), (1.0, 0)])
def test_a_policy_needs_a_positive_rate_and_burst(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="positive rate"):
        RatePolicy(rate=rate, burst=burst)


# -- the storage quota -------------------------------------------------------------------------
def ingest(database: FakeDatabase, clock: FakeClock, quota: int) -> IngestService:
    limits = IngestLimits(
        max_upload_size_bytes=10_000,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=30),
        storage_quota_bytes=quota,
    )
    return IngestService(database, FakeStorage(), FakeProber(), clock, limits, FakeMetrics())


def upload_request(size: int) -> UploadRequest:
    return UploadRequest(source_name="clip.mp4", content_length=size, content_type="video/mp4")


async def add_asset(database: FakeDatabase, clock: FakeClock, org_id: str, size: int) -> Asset:
    upload = make_upload(org_id, at=clock.now())
    asset = make_asset(upload, size_bytes=size, media=short_media(size_bytes=size))
    async with database(org_id) as uow:
        await uow.assets.add(asset)
        await uow.commit()
    return asset


async def test_the_storage_quota_counts_assets_and_open_uploads_of_the_org_only() -> None:
    database, clock = FakeDatabase(), FakeClock()
    service = ingest(database, clock, quota=1000)
    await add_asset(database, clock, "org-a", 600)
    await add_asset(database, clock, "org-b", 5000)  # another organisation's: not counted
    await service.init_upload(ORG_A, upload_request(300), "http://api")  # 900 of 1000
    with pytest.raises(StorageQuotaExceeded) as refused:
        await service.init_upload(ORG_A, upload_request(101), "http://api")
    assert refused.value.code == "storage_quota_exceeded"
    assert refused.value.retry_after is None  # waiting does not help; deleting does
    assert "900 of 1000" in refused.value.message
    await service.init_upload(ORG_A, upload_request(100), "http://api")  # exactly full: fits
    with pytest.raises(StorageQuotaExceeded) as refused_b:  # org-b's own 5000 bytes count
        await service.init_upload(ORG_B, upload_request(1), "http://api")
    assert "5000 of 1000" in refused_b.value.message


async def test_an_expired_slot_frees_its_reservation_but_a_received_one_does_not() -> None:
    database, clock = FakeDatabase(), FakeClock()
    service = ingest(database, clock, quota=1000)
    first = (await service.init_upload(ORG_A, upload_request(800), "http://api")).upload
    with pytest.raises(StorageQuotaExceeded):
        await service.init_upload(ORG_A, upload_request(300), "http://api")
    clock.advance(hours=2)  # the slot expired unused
    second = (await service.init_upload(ORG_A, upload_request(800), "http://api")).upload
    assert second.id != first.id
    async with database("org-a") as uow:  # its bytes arrived: they are in storage now
        await uow.uploads.save(msgspec.structs.replace(second, status=UploadStatus.RECEIVED))
        await uow.commit()
    clock.advance(hours=2)
    with pytest.raises(StorageQuotaExceeded):
        await service.init_upload(ORG_A, upload_request(300), "http://api")


async def test_no_quota_means_no_limit() -> None:
    database, clock = FakeDatabase(), FakeClock()
    service = ingest(database, clock, quota=0)
    await add_asset(database, clock, "org-a", 10**12)
    await service.init_upload(ORG_A, upload_request(10_000), "http://api")


# -- the concurrent-jobs quota -----------------------------------------------------------------
def job_service(database: FakeDatabase, clock: FakeClock, limit: int) -> JobRequests:
    return JobRequests(
        database,
        FakeJobDirectory(database),
        FakeQueue(),
        clock,
        JobPolicy(max_active_per_org=limit, quota_retry_after=timedelta(seconds=7)),
    )


async def test_the_job_quota_counts_queued_and_running_jobs_of_the_org() -> None:
    database, clock = FakeDatabase(), FakeClock()
    jobs = job_service(database, clock, limit=2)
    assets = [await add_asset(database, clock, "org-a", 1) for _ in range(3)]
    other = await add_asset(database, clock, "org-b", 1)
    first, _ = await jobs.request_sidecar(ORG_A, assets[0].id, ThumbnailSpec())
    await jobs.request_sidecar(ORG_A, assets[1].id, ThumbnailSpec())
    with pytest.raises(JobQuotaExceeded) as refused:
        await jobs.request_sidecar(ORG_A, assets[2].id, ThumbnailSpec())
    assert refused.value.code == "job_quota_exceeded"
    assert refused.value.retry_after == 7
    # The asset's own active job is answered as before: no new job, no quota spent.
    again, created = await jobs.request_sidecar(ORG_A, assets[0].id, ThumbnailSpec())
    assert (again.id, created) == (first.id, False)
    # Another organisation is not held back by org-a's jobs.
    _, created = await jobs.request_sidecar(ORG_B, other.id, ThumbnailSpec())
    assert created
    # A finished job frees its place.
    async with database("org-a") as uow:
        await uow.jobs.save(msgspec.structs.replace(first, status=JobStatus.SUCCEEDED))
        await uow.commit()
    _, created = await jobs.request_sidecar(ORG_A, assets[2].id, ThumbnailSpec())
    assert created


# -- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HEIMDEX_MAX_JSON_BODY_BYTES", "0"),
        ("HEIMDEX_RATE_LIMIT_BURST", "0"),
        ("HEIMDEX_RATE_LIMIT_PER_SECOND", "-1"),
        ("HEIMDEX_ORG_STORAGE_QUOTA_BYTES", "-5"),
        ("HEIMDEX_ORG_MAX_ACTIVE_JOBS", "-1"),
        ("HEIMDEX_RATE_LIMIT_BACKEND", "memcached"),
    ],
)
def test_a_bad_limit_setting_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({variable: value}, env_file=None)
    assert any(variable in problem for problem in refused.value.problems)


def test_limits_are_off_by_default_and_auto_follows_the_job_queue() -> None:
    settings = load_settings({}, env_file=None)
    assert (settings.limits.rate_limit_per_second, settings.limits.max_json_body_bytes) == (
        0.0,
        65_536,
    )
    assert (settings.limits.org_storage_quota_bytes, settings.limits.org_max_active_jobs) == (0, 0)
    assert settings.resolved_rate_limit_backend == "memory"
    redis = load_settings({"HEIMDEX_JOB_QUEUE_BACKEND": "redis"}, env_file=None)
    assert redis.resolved_rate_limit_backend == "redis"
    pinned = load_settings(
        {"HEIMDEX_JOB_QUEUE_BACKEND": "redis", "HEIMDEX_RATE_LIMIT_BACKEND": "memory"},
        env_file=None,
    )
    assert pinned.resolved_rate_limit_backend == "memory"
