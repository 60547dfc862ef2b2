"""Webhook endpoints, deliveries (the outbox) and the delivery directory: one contract, on
SQLite, PostgreSQL (runtime role, row-level security) and the in-memory fake the unit tests use.

The PostgreSQL database is shared by the session, so cross-organisation answers (``due``,
``failed``) are narrowed to this test's own rows before comparing.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.adapters.db.webhook_directory import SqlWebhookDirectory
from heimdex.domain.model import JobError, JobFilter, JobKind, JobStatus
from heimdex.domain.ports import UnitOfWorkFactory, WebhookDirectory
from heimdex.domain.replay import JobReplayFilter
from heimdex.domain.webhooks import (
    DeliveryFilter,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookSecret,
    new_event_id,
    new_secret,
)
from tests.builders import T0, make_job
from tests.contract.test_repositories import new_org, stored_asset
from tests.fixtures.db import PostgresCatalogue
from tests.unit.fakes import FakeDatabase, FakeWebhookDirectory


@dataclass
class Backend:
    uow: UnitOfWorkFactory
    directory: WebhookDirectory
    sql: bool


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """``None`` for the fake; else a migrated database (sync: the session fixtures migrate)."""
    if request.param == "fake":
        return None
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "heimdex.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    catalogue: PostgresCatalogue = request.getfixturevalue("postgres_catalogue")
    return catalogue.runtime_url


@pytest.fixture
async def backend(backend_url: str | None) -> AsyncIterator[Backend]:
    if backend_url is None:
        fake = FakeDatabase()
        yield Backend(uow=fake, directory=FakeWebhookDirectory(fake), sql=False)
        return
    database = Database(backend_url)
    try:
        yield Backend(
            uow=SqlUnitOfWorkFactory(database), directory=SqlWebhookDirectory(database), sql=True
        )
    finally:
        await database.dispose()


def make_endpoint(org: str, **changes: Any) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        org_id=org,
        url="https://hooks.example.com/heimdex",
        events=(WebhookEventType.ASSET_READY, WebhookEventType.JOB_FAILED),
        description="pipeline",
        enabled=True,
        secrets=(WebhookSecret(value=new_secret(), created_at=T0),),
        created_at=T0,
        updated_at=T0,
    )
    return msgspec.structs.replace(endpoint, **changes)


def make_delivery(endpoint: WebhookEndpoint, **changes: Any) -> WebhookDelivery:
    delivery = WebhookDelivery(
        id=uuid.uuid4(),
        org_id=endpoint.org_id,
        endpoint_id=endpoint.id,
        event_id=new_event_id(uuid.uuid4()),
        event_type=WebhookEventType.ASSET_READY,
        payload='{"type":"asset.ready","timestamp":"2026-03-01T10:00:00Z","data":{}}',
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=T0,
        created_at=T0,
        updated_at=T0,
    )
    return msgspec.structs.replace(delivery, **changes)


async def stored(backend: Backend, *items: WebhookEndpoint | WebhookDelivery) -> None:
    org = items[0].org_id
    async with backend.uow(org) as work:
        for item in items:
            if isinstance(item, WebhookEndpoint):
                await work.webhooks.add(item)
            else:
                await work.deliveries.add(item)
        await work.commit()


async def test_endpoint_round_trips_and_is_invisible_to_another_org(backend: Backend) -> None:
    org, other = new_org(), new_org()
    endpoint = make_endpoint(
        org,
        secrets=(
            WebhookSecret(value=new_secret(), created_at=T0, expires_at=T0 + timedelta(hours=1)),
            WebhookSecret(value=new_secret(), created_at=T0),
        ),
        failing_since=T0,
        disabled_reason="receiver answered 410 Gone",
        enabled=False,
    )
    await stored(backend, endpoint)
    async with backend.uow(org) as work:
        assert await work.webhooks.get(endpoint.id) == endpoint
        assert await work.webhooks.list_all() == [endpoint]
    async with backend.uow(other) as work:
        assert await work.webhooks.get(endpoint.id) is None
        assert await work.webhooks.list_all() == []
        assert not await work.webhooks.delete(endpoint.id)


async def test_subscribed_is_enabled_endpoints_that_want_the_type(backend: Backend) -> None:
    org = new_org()
    wants_all = make_endpoint(org, events=())
    wants_ready = make_endpoint(org, created_at=T0 + timedelta(seconds=1))
    disabled = make_endpoint(org, enabled=False, events=())
    await stored(backend, wants_all, wants_ready, disabled)
    async with backend.uow(org) as work:
        ready = await work.webhooks.subscribed(WebhookEventType.ASSET_READY)
        deleted = await work.webhooks.subscribed(WebhookEventType.ASSET_DELETED)
    assert [e.id for e in ready] == [wants_all.id, wants_ready.id]
    assert [e.id for e in deleted] == [wants_all.id]


async def test_deleting_an_endpoint_deletes_its_deliveries(backend: Backend) -> None:
    org = new_org()
    endpoint = make_endpoint(org)
    delivery = make_delivery(endpoint)
    await stored(backend, endpoint, delivery)
    async with backend.uow(org) as work:
        assert await work.webhooks.delete(endpoint.id)
        await work.commit()
    async with backend.uow(org) as work:
        assert await work.webhooks.get(endpoint.id) is None
        assert await work.deliveries.get(delivery.id) is None


async def test_delivery_round_trips_and_lists_newest_first_in_pages(backend: Backend) -> None:
    org = new_org()
    endpoint = make_endpoint(org)
    deliveries = [
        make_delivery(endpoint, created_at=T0 + timedelta(seconds=i), last_error="x" * 10)
        for i in range(5)
    ]
    await stored(backend, endpoint, *deliveries)
    async with backend.uow(org) as work:
        assert await work.deliveries.get(deliveries[0].id) == deliveries[0]
        first = await work.deliveries.list_for_endpoint(
            endpoint.id, status=None, limit=3, after=None
        )
        assert first.next_cursor is not None
        second = await work.deliveries.list_for_endpoint(
            endpoint.id, status=None, limit=3, after=first.next_cursor
        )
        failed = await work.deliveries.list_for_endpoint(
            endpoint.id, status=DeliveryStatus.FAILED, limit=3, after=None
        )
    assert [d.id for d in first.items + second.items] == [d.id for d in reversed(deliveries)]
    assert second.next_cursor is None
    assert failed.items == []


async def test_claim_once_then_finish_only_by_the_lease_holder(backend: Backend) -> None:
    org = new_org()
    endpoint = make_endpoint(org)
    delivery = make_delivery(endpoint)
    await stored(backend, endpoint, delivery)
    lease = T0 + timedelta(seconds=30)

    async def claim(owner: str) -> WebhookDelivery | None:
        async with backend.uow(org) as work:
            claimed = await work.deliveries.claim(delivery.id, owner, T0, lease)
            await work.commit()
        return claimed

    results = await asyncio.gather(*(claim(f"w{i}") for i in range(6)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    winner = winners[0]
    assert winner.attempts == 1
    assert winner.event_id == delivery.event_id
    done = winner.succeeded(T0 + timedelta(seconds=1), 204)
    async with backend.uow(org) as work:
        assert not await work.deliveries.finish(done, "someone-else")
        assert await work.deliveries.finish(done, winner.lease_owner or "")
        await work.commit()
    async with backend.uow(org) as work:
        assert await work.deliveries.get(delivery.id) == done


async def test_an_expired_lease_is_claimed_again_with_the_same_event_id(backend: Backend) -> None:
    org = new_org()
    endpoint = make_endpoint(org)
    delivery = make_delivery(endpoint)
    await stored(backend, endpoint, delivery)
    async with backend.uow(org) as work:
        assert await work.deliveries.claim(delivery.id, "dead", T0, T0 + timedelta(seconds=5))
        await work.commit()
    async with backend.uow(org) as work:  # the lease still runs: nobody else gets it
        assert await work.deliveries.claim(delivery.id, "w2", T0, T0 + timedelta(seconds=5)) is None
    later = T0 + timedelta(seconds=6)
    async with backend.uow(org) as work:
        again = await work.deliveries.claim(delivery.id, "w2", later, later + timedelta(seconds=5))
        await work.commit()
    assert again is not None
    assert again.attempts == 2
    assert again.event_id == delivery.event_id


async def test_due_caps_each_endpoint_so_a_backlog_hides_no_one(backend: Backend) -> None:
    org, other_org = new_org(), new_org()
    busy = make_endpoint(org)
    quiet = make_endpoint(other_org)
    backlog = [make_delivery(busy, next_attempt_at=T0 - timedelta(minutes=10)) for _ in range(6)]
    lone = make_delivery(quiet)
    not_yet = make_delivery(quiet, next_attempt_at=T0 + timedelta(hours=1))
    await stored(backend, busy, *backlog)
    await stored(backend, quiet, lone, not_yet)
    due = await backend.directory.due(T0, per_endpoint=2, per_org=100, limit=1000)
    mine = [(d, o, e) for d, o, e in due if e in (busy.id, quiet.id)]
    assert sum(1 for _, _, e in mine if e == busy.id) == 2
    assert (lone.id, other_org, quiet.id) in mine
    assert not any(d == not_yet.id for d, _, _ in mine)
    count, oldest = await backend.directory.pending()
    assert count >= 8
    assert oldest is not None


async def test_due_caps_each_organisation_and_lets_organisations_take_turns(
    backend: Backend,
) -> None:
    greedy, quiet = new_org(), new_org()
    endpoints = [make_endpoint(greedy) for _ in range(3)]
    lone_endpoint = make_endpoint(quiet)
    backlog = [
        make_delivery(endpoint, next_attempt_at=T0 - timedelta(minutes=30, seconds=-n))
        for n, endpoint in enumerate(endpoints * 2)
    ]
    for endpoint in endpoints:
        await stored(backend, endpoint, *(d for d in backlog if d.endpoint_id == endpoint.id))
    lone = make_delivery(lone_endpoint, next_attempt_at=T0 - timedelta(minutes=1))
    await stored(backend, lone_endpoint, lone)
    due = await backend.directory.due(T0, per_endpoint=2, per_org=4, limit=10_000)
    mine = [(d, o) for d, o, _ in due if o in (greedy, quiet)]
    assert sum(1 for _, o in mine if o == greedy) == 4
    # The quiet organisation's one delivery, newer than all of the greedy one's, comes in the
    # first turn: right after the greedy organisation's oldest, before its second.
    assert [o for _, o in mine[:3]] == [greedy, quiet, greedy]
    assert mine[0][0] == backlog[0].id


async def test_failed_deliveries_are_found_and_requeued_with_their_id(backend: Backend) -> None:
    org = new_org()
    endpoint = make_endpoint(org)
    failed = make_delivery(
        endpoint,
        status=DeliveryStatus.FAILED,
        attempts=8,
        next_attempt_at=None,
        last_error_code="timeout",
        updated_at=T0 + timedelta(hours=1),
    )
    other_code = make_delivery(
        endpoint, status=DeliveryStatus.FAILED, next_attempt_at=None, last_error_code="http_error"
    )
    await stored(backend, endpoint, failed, other_code)
    found = await backend.directory.failed(
        DeliveryFilter(org_id=org, error_code="timeout", since=T0), limit=100
    )
    assert found == [(failed.id, org)]
    later = T0 + timedelta(hours=2)
    async with backend.uow(org) as work:
        again = await work.deliveries.requeue(failed.id, later)
        await work.commit()
    assert again is not None
    assert again.status is DeliveryStatus.PENDING
    assert again.attempts == 0
    assert again.event_id == failed.event_id
    assert again.next_attempt_at == later


async def test_jobs_list_newest_first_with_filters_and_cursor(backend: Backend) -> None:
    if not backend.sql:
        pytest.skip("the job fake is covered by the job unit tests")
    assert isinstance(backend.uow, SqlUnitOfWorkFactory)
    org = new_org()
    asset = await stored_asset(backend.uow, org)
    jobs = [
        make_job(asset, status=status, created_at=T0 + timedelta(seconds=i))
        for i, status in enumerate([JobStatus.FAILED, JobStatus.SUCCEEDED, JobStatus.FAILED])
    ]
    async with backend.uow(org) as work:
        for job in jobs:
            await work.jobs.add(job)
        await work.commit()
    async with backend.uow(org) as work:
        page = await work.jobs.list(JobFilter(status=JobStatus.FAILED), limit=1, after=None)
        rest = await work.jobs.list(
            JobFilter(status=JobStatus.FAILED), limit=1, after=page.next_cursor
        )
        by_asset = await work.jobs.list(JobFilter(asset_id=asset.id), limit=10, after=None)
        after = await work.jobs.list(
            JobFilter(created_after=T0 + timedelta(seconds=1)), limit=10, after=None
        )
    assert [j.id for j in page.items + rest.items] == [jobs[2].id, jobs[0].id]
    assert rest.next_cursor is None
    assert [j.id for j in by_asset.items] == [j.id for j in reversed(jobs)]
    assert [j.id for j in after.items] == [jobs[2].id]


async def test_claim_many_claims_only_the_claimable_in_one_go(backend: Backend) -> None:
    org = new_org()
    endpoint = make_endpoint(org)
    due = [make_delivery(endpoint) for _ in range(3)]
    later = make_delivery(endpoint, next_attempt_at=T0 + timedelta(hours=1))
    done = make_delivery(endpoint, status=DeliveryStatus.SUCCEEDED, next_attempt_at=None)
    await stored(backend, endpoint, *due, later, done)
    ids = [d.id for d in (*due, later, done)] + [uuid.uuid4()]
    async with backend.uow(org) as work:
        claimed = await work.deliveries.claim_many(ids, "w1", T0, T0 + timedelta(seconds=30))
        await work.commit()
    assert sorted(d.id for d in claimed) == sorted(d.id for d in due)
    assert all(d.attempts == 1 and d.lease_owner == "w1" for d in claimed)
    async with backend.uow(org) as work:  # claimed already: a second claimer gets none
        assert await work.deliveries.claim_many(ids, "w2", T0, T0 + timedelta(seconds=30)) == []
    async with backend.uow(new_org()) as work:  # nor does another organisation
        assert await work.deliveries.claim_many(ids, "w3", T0, T0 + timedelta(hours=2)) == []


async def test_replayable_jobs_are_failed_or_stuck_and_filtered(backend: Backend) -> None:
    if not backend.sql:
        pytest.skip("the replay directory's fake is covered by the replay unit tests")
    assert isinstance(backend.uow, SqlUnitOfWorkFactory)
    assert isinstance(backend.directory, SqlWebhookDirectory)
    org = new_org()
    asset = await stored_asset(backend.uow, org)
    failed = make_job(
        asset, status=JobStatus.FAILED, error=JobError(code="thumbnail_timeout", message="x")
    )
    dead_lease = make_job(
        asset, status=JobStatus.RUNNING, lease_expires_at=T0 - timedelta(hours=1), error=None
    )
    live_lease = make_job(
        asset, status=JobStatus.RUNNING, lease_expires_at=T0 + timedelta(hours=1), error=None
    )
    done = make_job(asset, status=JobStatus.SUCCEEDED, error=None)
    async with backend.uow(org) as work:
        for job in (failed, dead_lease, live_lease, done):
            await work.jobs.add(job)
        await work.commit()
    everything = await backend.directory.replayable_jobs(
        JobReplayFilter(stuck_before=T0, org_id=org), 100
    )
    assert sorted(job_id for job_id, _ in everything) == sorted([failed.id, dead_lease.id])
    assert {o for _, o in everything} == {org}
    by_code = await backend.directory.replayable_jobs(
        JobReplayFilter(
            stuck_before=T0, org_id=org, kind=JobKind.SIDECAR, error_code="thumbnail_timeout"
        ),
        100,
    )
    assert by_code == [(failed.id, org)]
    too_late = await backend.directory.replayable_jobs(
        JobReplayFilter(stuck_before=T0, org_id=org, since=T0 + timedelta(days=1)), 100
    )
    assert too_late == []
