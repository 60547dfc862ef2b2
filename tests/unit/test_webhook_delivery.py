"""The deliverer with fakes and a clock the test moves: schedules, disabling, leases."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import msgspec

from heimdex.application.webhook_delivery import DeliveryPolicy, WebhookDeliverer
from heimdex.application.webhook_events import record_event
from heimdex.domain.ports import WebhookResponse
from heimdex.domain.webhooks import (
    DeliveryStatus,
    WebhookEndpoint,
    WebhookEventType,
    WebhookSecret,
    new_secret,
)
from tests.unit.fakes import (
    FakeClock,
    FakeDatabase,
    FakeMetrics,
    FakeWebhookDirectory,
    FakeWebhookSender,
)

ORG = "acme"
URL = "https://hooks.example.com/heimdex"


def setup(
    policy: DeliveryPolicy | None = None,
) -> tuple[FakeDatabase, FakeClock, FakeWebhookSender, FakeMetrics, WebhookDeliverer]:
    database, clock, sender, metrics = (
        FakeDatabase(),
        FakeClock(),
        FakeWebhookSender(),
        FakeMetrics(),
    )
    deliverer = WebhookDeliverer(
        database, FakeWebhookDirectory(database), sender, clock, metrics, policy or DeliveryPolicy()
    )
    return database, clock, sender, metrics, deliverer


async def with_endpoint(database: FakeDatabase, clock: FakeClock) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        org_id=ORG,
        url=URL,
        events=(),
        description=None,
        enabled=True,
        secrets=(WebhookSecret(value=new_secret(), created_at=clock.now()),),
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    async with database(ORG) as uow:
        await uow.webhooks.add(endpoint)
        await record_event(uow, WebhookEventType.ASSET_CREATED, {"asset_id": "a"}, clock.now())
        await uow.commit()
    return endpoint


async def run_sweep(deliverer: WebhookDeliverer) -> int:
    started = await deliverer.sweep()
    for _ in range(50):  # let the delivery tasks finish (fakes answer at once)
        await asyncio.sleep(0)
    return started


async def test_failures_follow_the_schedule_with_one_id_then_fail() -> None:
    database, clock, sender, metrics, deliverer = setup()
    await with_endpoint(database, clock)
    sender.answers[URL] = WebhookResponse(status_code=503, error_code="http_error", detail="down")
    for attempt in range(1, 9):
        assert await run_sweep(deliverer) == 1, attempt
        [delivery] = database.tables.deliveries.values()
        assert delivery.attempts == attempt
        assert await run_sweep(deliverer) == 0  # not due before its next attempt
        if delivery.status is DeliveryStatus.FAILED:
            break
        assert delivery.next_attempt_at is not None
        clock.current = delivery.next_attempt_at
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.attempts == 8
    assert delivery.last_status_code == 503
    assert {headers["webhook-id"] for _, headers, _ in sender.sent} == {delivery.event_id}
    assert [o for _, o, _ in metrics.webhooks] == ["retry"] * 7 + ["failed"]


async def test_an_endpoint_failing_for_days_is_disabled_and_says_why() -> None:
    policy = DeliveryPolicy(disable_after=timedelta(hours=20))
    database, clock, sender, _, deliverer = setup(policy)
    endpoint = await with_endpoint(database, clock)
    sender.answers[URL] = WebhookResponse(status_code=None, error_code="timeout", detail="slow")
    for _ in range(8):
        await run_sweep(deliverer)
        [delivery] = database.tables.deliveries.values()
        if delivery.next_attempt_at is None:
            break
        clock.current = delivery.next_attempt_at
    current = database.tables.endpoints[endpoint.id]
    assert not current.enabled
    assert current.disabled_reason is not None
    assert "failed since" in current.disabled_reason


async def test_a_success_clears_the_failing_streak() -> None:
    database, clock, sender, _, deliverer = setup()
    endpoint = await with_endpoint(database, clock)
    sender.answers[URL] = WebhookResponse(status_code=500, error_code="http_error")
    await run_sweep(deliverer)
    assert database.tables.endpoints[endpoint.id].failing_since is not None
    del sender.answers[URL]
    clock.advance(seconds=10)
    await run_sweep(deliverer)
    assert database.tables.endpoints[endpoint.id].failing_since is None
    [delivery] = database.tables.deliveries.values()
    assert delivery.status is DeliveryStatus.SUCCEEDED


async def test_a_lease_left_by_a_dead_worker_is_taken_over_with_the_same_id() -> None:
    database, clock, sender, _, deliverer = setup()
    await with_endpoint(database, clock)
    [delivery] = database.tables.deliveries.values()
    # Another process claimed it and died mid-send.
    async with database(ORG) as uow:
        await uow.deliveries.claim(
            delivery.id, "dead", clock.now(), clock.now() + timedelta(seconds=35)
        )
        await uow.commit()
    assert await run_sweep(deliverer) == 0
    clock.advance(seconds=36)
    assert await run_sweep(deliverer) == 1
    [done] = database.tables.deliveries.values()
    assert done.status is DeliveryStatus.SUCCEEDED
    assert done.attempts == 2
    assert sender.sent[0][1]["webhook-id"] == delivery.event_id


async def test_a_disabled_endpoint_gets_nothing() -> None:
    database, clock, sender, _, deliverer = setup()
    endpoint = await with_endpoint(database, clock)
    database.tables.endpoints[endpoint.id] = msgspec.structs.replace(endpoint, enabled=False)
    await run_sweep(deliverer)
    [delivery] = database.tables.deliveries.values()
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.last_error_code == "endpoint_disabled"
    assert sender.sent == []


async def test_closing_cancels_deliveries_without_starting_a_sweep_nobody_awaits() -> None:
    database, clock, sender, _, deliverer = setup()
    await with_endpoint(database, clock)
    hang, sending = asyncio.Event(), asyncio.Event()

    async def hanging(url: str, headers: dict[str, str], body: bytes) -> WebhookResponse:
        sending.set()
        await hang.wait()
        return WebhookResponse(status_code=200, error_code=None)

    sender.send = hanging  # type: ignore[method-assign]
    assert await deliverer.sweep() == 1
    await asyncio.wait_for(sending.wait(), 5)  # the delivery is in flight
    deliverer._backlog = True  # as under load: an ending delivery would sweep again at once
    directory = deliverer._directory
    asked_after_close: list[object] = []
    due = directory.due

    async def counted_due(
        now: datetime, per_endpoint: int, per_org: int, limit: int
    ) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
        asked_after_close.append((now, per_endpoint, per_org, limit))
        return await due(now, per_endpoint, per_org, limit)

    directory.due = counted_due  # type: ignore[method-assign]
    await deliverer.aclose()
    for _ in range(20):  # give any task the close left behind its chance to run
        await asyncio.sleep(0)
    # The cancelled delivery's ending started no sweep after close.
    assert asked_after_close == []
