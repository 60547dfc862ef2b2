"""Events go into the outbox inside the use cases' own transactions: one delivery per enabled,
subscribed endpoint, nothing when the change is not committed."""

from __future__ import annotations

import uuid
from datetime import timedelta

import msgspec

from heimdex.application.abandoned_uploads import AbandonedUploadSweeper
from heimdex.application.ingest import IngestLimits, IngestService
from heimdex.application.webhook_events import record_event
from heimdex.domain.errors import InvalidMedia
from heimdex.domain.webhooks import (
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookSecret,
    new_secret,
)
from tests.unit.fakes import FakeDatabase, FakeMetrics, FakeProber, FakeUploadDirectory
from tests.unit.test_abandoned_uploads import FailingDeletes, slot
from tests.unit.test_jobs import ORG, SPEC, World


async def subscribe(
    database: FakeDatabase, *events: WebhookEventType, enabled: bool = True
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        org_id=ORG.org_id,
        url="https://hooks.example.com/",
        events=events,
        description=None,
        enabled=enabled,
        secrets=(WebhookSecret(value=new_secret(), created_at=_T0),),
        created_at=_T0,
        updated_at=_T0,
    )
    async with database(ORG.org_id) as uow:
        await uow.webhooks.add(endpoint)
        await uow.commit()
    return endpoint


def events(database: FakeDatabase) -> list[tuple[WebhookEventType, dict[str, object]]]:
    found: list[WebhookDelivery] = sorted(
        database.tables.deliveries.values(), key=lambda d: d.created_at
    )
    return [(d.event_type, msgspec.json.decode(d.payload)["data"]) for d in found]


_T0 = World().clock.now()


async def test_a_job_that_fails_for_good_tells_asset_failed_and_job_failed() -> None:
    world = World()
    await subscribe(world.database)
    await subscribe(world.database, WebhookEventType.JOB_FAILED)
    await subscribe(world.database, enabled=False)
    asset = await world.asset()
    world.thumbnailer.error = InvalidMedia("not a video")
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    await world.runner.run(job.id)
    found = events(world.database)
    types = [t for t, _ in found]
    assert types.count(WebhookEventType.ASSET_FAILED) == 1
    assert types.count(WebhookEventType.JOB_FAILED) == 2  # both endpoints that want it
    data = dict(found)[WebhookEventType.JOB_FAILED]
    assert data["job_id"] == str(job.id)
    assert data["error"] == {"code": "invalid_media", "message": "not a video"}
    # One event, one webhook-id, whichever endpoint it goes to.
    ids = {
        d.event_id
        for d in world.database.tables.deliveries.values()
        if d.event_type is WebhookEventType.JOB_FAILED
    }
    assert len(ids) == 1


async def test_a_job_that_succeeds_tells_asset_ready_with_links() -> None:
    world = World()
    await subscribe(world.database, WebhookEventType.ASSET_READY, WebhookEventType.JOB_SUCCEEDED)
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    await world.runner.run(job.id)
    found = dict(events(world.database))
    ready = found[WebhookEventType.ASSET_READY]
    assert ready["status"] == "ready"
    assert ready["job_id"] == str(job.id)
    assert ready["links"] == {
        "asset": f"/v1/assets/{asset.id}",
        "sidecar": f"/v1/assets/{asset.id}/sidecar",
        "thumbnails": f"/v1/assets/{asset.id}/thumbnails",
        "job": f"/v1/jobs/{job.id}",
    }
    assert found[WebhookEventType.JOB_SUCCEEDED]["status"] == "succeeded"


async def test_the_abandoned_upload_sweep_tells_upload_expired() -> None:
    world = World()
    database, storage, clock = world.database, FailingDeletes(), world.clock
    await subscribe(database, WebhookEventType.UPLOAD_EXPIRED)
    limits = IngestLimits(
        max_upload_size_bytes=1000,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=5),
    )
    ingest = IngestService(database, storage, FakeProber(), clock, limits, metrics=FakeMetrics())
    upload = await slot(ingest)
    sweeper = AbandonedUploadSweeper(
        database, FakeUploadDirectory(database), storage, clock, grace=timedelta(hours=2)
    )
    clock.advance(hours=3, seconds=1)
    assert await sweeper.sweep() == 1
    [(event_type, data)] = events(database)
    assert event_type is WebhookEventType.UPLOAD_EXPIRED
    assert data["upload_id"] == str(upload.id)


async def test_an_event_not_committed_is_not_sent() -> None:
    database = FakeDatabase()
    await subscribe(database)
    async with database(ORG.org_id) as uow:
        assert await record_event(uow, WebhookEventType.ASSET_CREATED, {}, _T0) == 1
        # leaving without commit(): the change and its event are both rolled back
    assert database.tables.deliveries == {}
