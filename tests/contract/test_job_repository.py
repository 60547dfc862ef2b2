"""Job leases and the job directory: one contract, on SQLite, PostgreSQL (runtime role) and the
application tests' in-memory fakes."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.job_directory import SqlJobDirectory
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.domain.model import Job, JobKind, JobStatus, ThumbnailSpec
from heimdex.domain.ports import JobDirectory, UnitOfWorkFactory
from tests.builders import T0, make_job
from tests.contract.test_repositories import new_org, stored_asset
from tests.fixtures.db import PostgresCatalogue
from tests.unit.fakes import FakeDatabase, FakeJobDirectory


@pytest.fixture
async def directory(backend: str, uow: UnitOfWorkFactory) -> AsyncIterator[JobDirectory]:
    """The directory over the same store as ``uow`` (the contract conftest's backends)."""
    if isinstance(uow, FakeDatabase):
        yield FakeJobDirectory(uow)
        return
    database = Database(backend)
    try:
        yield SqlJobDirectory(database)
    finally:
        await database.dispose()


async def stored_job(uow: UnitOfWorkFactory, org: str, **changes: Any) -> Job:
    asset = await stored_asset(uow, org)
    fresh: dict[str, Any] = {
        "status": JobStatus.QUEUED,
        "attempts": 0,
        "lease_expires_at": None,
        "next_attempt_at": None,
        "error": None,
    }
    job = make_job(asset, **(fresh | changes))
    async with uow(org) as work:
        await work.jobs.add(job)
        await work.commit()
    return job


async def test_new_columns_round_trip(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    job = await stored_job(
        uow,
        org,
        thumbnails=ThumbnailSpec(count=4, width=160, format="webp"),
        lease_owner="w1",
        enqueued_at=T0,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
    )
    async with uow(org) as work:
        assert await work.jobs.get(job.id) == job


async def test_claim_once_among_concurrent_workers(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    job = await stored_job(uow, org)

    async def claim(owner: str) -> bool:
        async with uow(org) as work:
            claimed = await work.jobs.claim(job.id, owner, T0, T0 + timedelta(minutes=1))
            await work.commit()
        return claimed is not None

    results = await asyncio.gather(*(claim(f"w{i}") for i in range(8)))
    assert sum(results) == 1
    async with uow(org) as work:
        running = await work.jobs.get(job.id)
    assert running is not None
    assert running.status is JobStatus.RUNNING
    assert running.attempts == 1
    assert running.started_at is not None


async def test_a_live_lease_blocks_and_an_expired_one_is_taken_over(
    uow: UnitOfWorkFactory,
) -> None:
    org = new_org()
    job = await stored_job(uow, org)
    async with uow(org) as work:
        first = await work.jobs.claim(job.id, "w1", T0, T0 + timedelta(seconds=30))
        assert first is not None
        assert await work.jobs.claim(job.id, "w2", T0 + timedelta(seconds=10), T0) is None
        second = await work.jobs.claim(
            job.id, "w2", T0 + timedelta(seconds=31), T0 + timedelta(seconds=91)
        )
        assert second is not None
        assert (second.lease_owner, second.attempts) == ("w2", 2)
        # the first worker has lost its lease: it can neither extend it nor record an outcome
        assert not await work.jobs.heartbeat(job.id, "w1", T0 + timedelta(minutes=5), 0.5)
        done = msgspec.structs.replace(second, status=JobStatus.SUCCEEDED, progress=1.0)
        assert not await work.jobs.finish(done, "w1")
        assert await work.jobs.heartbeat(job.id, "w2", T0 + timedelta(minutes=5), 0.5)
        assert await work.jobs.finish(done, "w2")
        assert await work.jobs.claim(job.id, "w3", T0 + timedelta(hours=1), T0) is None
        await work.commit()


async def test_a_job_not_yet_due_is_not_claimable(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    job = await stored_job(uow, org, next_attempt_at=T0 + timedelta(seconds=30))
    async with uow(org) as work:
        assert await work.jobs.claim(job.id, "w1", T0, T0 + timedelta(minutes=1)) is None
        later = await work.jobs.claim(
            job.id, "w1", T0 + timedelta(seconds=30), T0 + timedelta(minutes=1)
        )
        assert later is not None


async def test_latest_for_asset(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    job = await stored_job(uow, org)
    newer = msgspec.structs.replace(
        job, id=uuid.uuid4(), created_at=job.created_at + timedelta(seconds=1)
    )
    async with uow(org) as work:
        await work.jobs.add(newer)
        await work.commit()
        latest = await work.jobs.latest_for_asset(job.asset_id, JobKind.SIDECAR)
    assert latest is not None
    assert latest.id == newer.id
    async with uow(new_org()) as other:
        assert await other.jobs.latest_for_asset(job.asset_id, JobKind.SIDECAR) is None


async def test_directory_answers_the_org_of_a_job_id_only(
    uow: UnitOfWorkFactory, directory: JobDirectory
) -> None:
    org = new_org()
    job = await stored_job(uow, org)
    assert await directory.org_of(job.id) == org
    assert await directory.org_of(uuid.uuid4()) is None


async def test_directory_lists_due_jobs_across_organisations(
    uow: UnitOfWorkFactory, directory: JobDirectory
) -> None:
    org_a, org_b = new_org(), new_org()
    never_enqueued = await stored_job(uow, org_a)
    enqueued_long_ago = await stored_job(uow, org_b, enqueued_at=T0 - timedelta(hours=1))
    just_enqueued = await stored_job(uow, org_a, enqueued_at=T0)
    backing_off = await stored_job(uow, org_b, next_attempt_at=T0 + timedelta(minutes=5))
    expired = await stored_job(
        uow, org_a, status=JobStatus.RUNNING, lease_expires_at=T0 - timedelta(seconds=1)
    )
    live = await stored_job(
        uow, org_b, status=JobStatus.RUNNING, lease_expires_at=T0 + timedelta(minutes=1)
    )
    finished = await stored_job(uow, org_a, status=JobStatus.SUCCEEDED)
    due = dict(await directory.due(T0, T0 - timedelta(minutes=2), limit=10_000))
    mine = {
        never_enqueued.id,
        enqueued_long_ago.id,
        just_enqueued.id,
        backing_off.id,
        expired.id,
        live.id,
        finished.id,
    }
    assert {k: v for k, v in due.items() if k in mine} == {
        never_enqueued.id: org_a,
        enqueued_long_ago.id: org_b,
        expired.id: org_a,
    }
    await directory.mark_enqueued(never_enqueued.id, org_a, T0)
    due_after = dict(await directory.due(T0, T0 - timedelta(minutes=2), limit=10_000))
    assert never_enqueued.id not in due_after


async def test_directory_counts_active_jobs_across_organisations(
    uow: UnitOfWorkFactory, directory: JobDirectory
) -> None:
    """The queue depth: on PostgreSQL the runtime role, which sees one organisation per
    transaction, still counts every organisation's queued and running jobs."""
    before = await directory.active_counts()
    org_a, org_b = new_org(), new_org()
    await stored_job(uow, org_a)
    await stored_job(uow, org_b, next_attempt_at=T0 + timedelta(minutes=5))  # backing off
    await stored_job(uow, org_b, status=JobStatus.RUNNING, lease_expires_at=T0)
    for finished in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        await stored_job(uow, org_a, status=finished)
    after = await directory.active_counts()
    assert set(after) == {JobStatus.QUEUED, JobStatus.RUNNING}
    assert after[JobStatus.QUEUED] - before[JobStatus.QUEUED] == 2
    assert after[JobStatus.RUNNING] - before[JobStatus.RUNNING] == 1


# -- whose turn it is -----------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "fake"])
def private_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of the test's own, or "fake": the turn is taken across every
    organisation, so other tests' jobs must not be in it."""
    if request.param == "fake":
        return "fake"
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "turns.db")
        return f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}"
    catalogue: PostgresCatalogue = request.getfixturevalue("private_postgres_catalogue")
    return catalogue.runtime_url


@pytest.fixture
async def private_store(
    private_database_url: str,
) -> AsyncIterator[tuple[UnitOfWorkFactory, JobDirectory]]:
    """A unit of work and the job directory over that private store."""
    if private_database_url == "fake":
        fake = FakeDatabase()
        yield fake, FakeJobDirectory(fake)
        return
    database = Database(private_database_url)
    try:
        yield SqlUnitOfWorkFactory(database), SqlJobDirectory(database)
    finally:
        await database.dispose()


async def test_the_turn_is_the_organisation_with_the_fewest_jobs_running(
    private_store: tuple[UnitOfWorkFactory, JobDirectory],
) -> None:
    uow, directory = private_store
    busy, waiting = new_org(), new_org()
    await stored_job(
        uow,
        busy,
        status=JobStatus.RUNNING,
        lease_expires_at=T0 + timedelta(minutes=1),
        started_at=T0 - timedelta(seconds=5),
    )
    for minutes in (30, 20, 10):  # a backlog older than the other organisation's job
        await stored_job(uow, busy, created_at=T0 - timedelta(minutes=minutes))
    late = await stored_job(uow, waiting, enqueued_at=T0, started_at=None)
    turn = await directory.next_in_turn(T0, prefer_org=busy)
    assert turn is not None
    assert (turn.job_id, turn.org_id, turn.enqueued_at) == (late.id, waiting, T0)


async def test_among_equals_the_turn_is_the_organisation_served_longest_ago(
    private_store: tuple[UnitOfWorkFactory, JobDirectory],
) -> None:
    # One worker slot: nobody is running when it picks, so who ran last decides.
    uow, directory = private_store
    served, never_served, served_long_ago = new_org(), new_org(), new_org()
    await stored_job(uow, served, status=JobStatus.SUCCEEDED, started_at=T0)
    oldest = await stored_job(uow, served, created_at=T0 - timedelta(hours=1))
    await stored_job(
        uow, served_long_ago, status=JobStatus.SUCCEEDED, started_at=T0 - timedelta(hours=2)
    )
    long_ago_next = await stored_job(uow, served_long_ago)
    first_ever = await stored_job(uow, never_served, created_at=T0 + timedelta(seconds=1))
    picks = []
    for second in range(2, 6):
        now = T0 + timedelta(seconds=second)
        turn = await directory.next_in_turn(now, prefer_org=served)
        if turn is None:
            break
        picks.append(turn.job_id)
        async with uow(turn.org_id) as work:  # as the one slot would: claim it, run it, finish
            claimed = await work.jobs.claim(turn.job_id, "w", now, now + timedelta(minutes=1))
            assert claimed is not None
            done = msgspec.structs.replace(claimed, status=JobStatus.SUCCEEDED)
            assert await work.jobs.finish(done, "w")
            await work.commit()
    assert picks == [first_ever.id, long_ago_next.id, oldest.id]


async def test_the_turn_prefers_the_messages_organisation_then_its_oldest_job(
    private_store: tuple[UnitOfWorkFactory, JobDirectory],
) -> None:
    uow, directory = private_store
    mine, other = new_org(), new_org()
    await stored_job(uow, other, created_at=T0 - timedelta(hours=1))
    await stored_job(uow, mine, created_at=T0 - timedelta(minutes=1))
    first = await stored_job(uow, mine, created_at=T0 - timedelta(minutes=2))
    turn = await directory.next_in_turn(T0, prefer_org=mine)
    assert turn is not None
    assert (turn.job_id, turn.enqueued_at) == (first.id, None)


async def test_the_turn_is_a_claimable_job_only(
    private_store: tuple[UnitOfWorkFactory, JobDirectory],
) -> None:
    uow, directory = private_store
    org = new_org()
    await stored_job(uow, org, next_attempt_at=T0 + timedelta(minutes=5))  # backing off
    await stored_job(uow, org, status=JobStatus.RUNNING, lease_expires_at=T0 + timedelta(minutes=1))
    await stored_job(uow, org, status=JobStatus.SUCCEEDED)
    assert await directory.next_in_turn(T0, prefer_org=org) is None
    orphan = await stored_job(
        uow, org, status=JobStatus.RUNNING, lease_expires_at=T0 - timedelta(seconds=1)
    )
    turn = await directory.next_in_turn(T0, prefer_org=org)
    assert turn is not None
    assert turn.job_id == orphan.id  # its worker died: claimable again
