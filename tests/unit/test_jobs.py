"""The job rules with in-memory fakes: outbox, leases, retries with back-off, permanent errors."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from heimdex.application.job_policy import JobPolicy
from heimdex.application.job_requests import JobRequests
from heimdex.application.job_runner import JobRunner
from heimdex.domain.errors import (
    DatabaseUnavailable,
    DecoderCrashed,
    InvalidMedia,
    NotFound,
    StorageError,
)
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import (
    Asset,
    AssetStatus,
    Job,
    JobKind,
    JobStatus,
    Principal,
    Thumbnail,
    ThumbnailSpec,
)
from heimdex.domain.ports import JobInTurn
from tests.builders import make_asset, make_upload, short_media
from tests.unit.fakes import (
    FakeClock,
    FakeDatabase,
    FakeJobDirectory,
    FakeMetrics,
    FakeQueue,
    FakeStorage,
    FakeThumbnailer,
)

ORG = Principal(org_id="org-a")
HOUR = timedelta(hours=1)
SPEC = ThumbnailSpec()


class World:
    def __init__(self, thumbnailer: FakeThumbnailer | None = None) -> None:
        self.clock = FakeClock()
        self.database = FakeDatabase()
        self.storage = FakeStorage()
        self.queue = FakeQueue(self.clock)
        self.thumbnailer = thumbnailer or FakeThumbnailer()
        self.metrics = FakeMetrics()
        policy = JobPolicy(
            max_attempts=3, lease=timedelta(seconds=60), database_retry=timedelta(milliseconds=5)
        )
        self.jobs = JobRequests(
            self.database, FakeJobDirectory(self.database), self.queue, self.clock, policy
        )
        self.runner = JobRunner(
            self.database,
            FakeJobDirectory(self.database),
            self.queue,
            self.storage,
            self.thumbnailer,
            self.clock,
            policy,
            prober_name="fake",
            metrics=self.metrics,
        )

    async def asset(self, org_id: str = "org-a") -> Asset:
        upload = make_upload(org_id, at=self.clock.now(), source_uri="mem://clip")
        asset = make_asset(upload, size_bytes=3, sha256="ab" * 32, media=short_media(size_bytes=3))
        async with self.database(org_id) as uow:
            await uow.assets.add(asset)
            await uow.commit()
        await self.storage.write_bytes(asset.key, b"abc")
        return asset

    async def asset_status(self, asset: Asset) -> AssetStatus:
        async with self.database("org-a") as uow:
            current = await uow.assets.get(asset.id)
        assert current is not None
        return current.status


@pytest.fixture
def world() -> World:
    return World()


async def test_a_job_runs_to_success_and_writes_deterministic_outputs(world: World) -> None:
    asset = await world.asset()
    job, created = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    assert created
    assert world.queue.handed_over == [job.id]
    assert await world.asset_status(asset) is AssetStatus.PROCESSING
    await world.runner.run(job.id)
    done = await world.jobs.get(ORG, job.id)
    assert (done.status, done.attempts, done.progress) == (JobStatus.SUCCEEDED, 1, 1.0)
    keys = sorted(k for k in world.storage.objects if k.startswith("derived/"))
    assert keys == [
        f"derived/org-a/{asset.id}/thumbs/0000.jpg",
        f"derived/org-a/{asset.id}/thumbs/0001.jpg",
        f"derived/org-a/sidecars/{asset.id}.json",
    ]
    assert await world.asset_status(asset) is AssetStatus.READY


async def test_a_second_delivery_is_a_no_op(world: World) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    await world.runner.run(job.id)
    await world.runner.run(job.id)
    assert world.thumbnailer.calls == 1
    assert (await world.jobs.get(ORG, job.id)).attempts == 1


async def test_organisations_take_turns_whatever_order_the_messages_come_in(
    world: World,
) -> None:
    backlog = []
    for _ in range(3):  # a second apart: within an organisation, the oldest job goes first
        backlog.append((await world.jobs.request_sidecar(ORG, (await world.asset()).id, SPEC))[0])
        world.clock.advance(seconds=1)
    other = Principal(org_id="org-b")
    world.clock.advance(seconds=1)
    late, _ = await world.jobs.request_sidecar(other, (await world.asset("org-b")).id, SPEC)
    assert world.queue.handed_over == [job.id for job in [*backlog, late]]  # first in, first out
    late_handed_over = (await world.jobs.get(other, late.id)).enqueued_at
    assert late_handed_over is not None

    await world.runner.run(backlog[0].id)  # nobody ran yet: the message's own job
    world.clock.advance(seconds=1)
    await world.runner.run(backlog[1].id)  # org-a was served, org-b never: org-b's turn
    assert (await world.jobs.get(other, late.id)).status is JobStatus.SUCCEEDED
    waiting = await world.jobs.get(ORG, backlog[1].id)
    assert waiting.status is JobStatus.QUEUED
    # The spent message passes its place on: the job now waits where org-b's message stands,
    # so the sweep does not count its message as lost.
    assert waiting.enqueued_at == late_handed_over
    for message in (backlog[2].id, late.id):  # the rest run, each message one job
        world.clock.advance(seconds=1)
        await world.runner.run(message)
    for job in backlog:
        assert (await world.jobs.get(ORG, job.id)).status is JobStatus.SUCCEEDED
    assert world.thumbnailer.calls == 4


async def test_requests_return_the_live_or_finished_job_until_forced(world: World) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    same, created = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    assert (same.id, created) == (job.id, False)
    await world.runner.run(job.id)
    finished, created = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    assert (finished.id, finished.status, created) == (job.id, JobStatus.SUCCEEDED, False)
    forced, created = await world.jobs.request_sidecar(ORG, asset.id, SPEC, force=True)
    assert created
    assert forced.id != job.id


async def test_a_broker_outage_still_accepts_and_the_sweep_hands_over_later(
    world: World,
) -> None:
    asset = await world.asset()
    world.queue.down = True
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    assert world.queue.handed_over == []
    world.queue.down = False
    assert await world.runner.sweep() == 1
    assert world.queue.handed_over == [job.id]
    assert await world.runner.sweep() == 0  # handed over recently: left to the queue


async def test_a_job_waiting_behind_a_backlog_is_not_handed_over_again(world: World) -> None:
    # The queue still holds a message from before this job's: a backlog the job waits behind.
    backlog = uuid.uuid4()
    await world.queue.enqueue(backlog)
    world.clock.advance(minutes=1)
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    world.clock.advance(seconds=1)
    newer = uuid.uuid4()
    await world.queue.enqueue(newer)
    world.clock.advance(minutes=10)  # long past redeliver_after (2 minutes)
    assert await world.runner.sweep() == 0
    assert world.queue.waiting() == [backlog, job.id, newer]  # no duplicate queued behind

    # The backlog drains past this job's message, which the broker lost: the job, never
    # claimed, is handed over again, while the newer message still waits.
    assert (await world.queue.take()).job_id == backlog
    world.queue.lose(job.id)
    assert await world.runner.sweep() == 1
    assert world.queue.waiting() == [newer, job.id]


async def test_a_long_running_job_does_not_hide_a_lost_message(world: World) -> None:
    # A worker takes the first job's message and runs it for long; the second job's message is
    # lost. The running one is not waiting in the queue, so it must not hold the sweep back.
    first, _ = await world.jobs.request_sidecar(ORG, (await world.asset()).id, SPEC)
    assert (await world.queue.take()).job_id == first.id
    async with world.database("org-a") as uow:  # claimed, its lease kept fresh by heartbeats
        await uow.jobs.claim(first.id, "busy", world.clock.now(), world.clock.now() + HOUR)
        await uow.commit()
    world.clock.advance(seconds=1)
    second, _ = await world.jobs.request_sidecar(ORG, (await world.asset()).id, SPEC)
    world.queue.lose(second.id)
    world.clock.advance(minutes=3)  # past redeliver_after, the first job still running
    assert await world.runner.sweep() == 1
    assert world.queue.waiting() == [second.id]


async def test_with_nothing_left_in_the_queue_a_stale_job_is_handed_over(world: World) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    world.clock.advance(minutes=1)
    world.queue.lose(job.id)  # a Redis that restarted empty holds nothing
    assert await world.queue.oldest_waiting() is None
    assert await world.runner.sweep() == 0  # within redeliver_after: left to the queue
    world.clock.advance(minutes=2)
    assert await world.runner.sweep() == 1
    assert world.queue.waiting() == [job.id]


async def test_transient_failures_retry_with_back_off_then_fail(world: World) -> None:
    asset = await world.asset()
    world.thumbnailer.error = StorageError("disk full")
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    await world.runner.run(job.id)
    retry = await world.jobs.get(ORG, job.id)
    assert retry.status is JobStatus.QUEUED
    assert retry.error is not None
    assert retry.error.code == "storage_error"
    assert retry.next_attempt_at == world.clock.now() + timedelta(seconds=5)
    await world.runner.run(job.id)  # not due yet: not claimable
    assert (await world.jobs.get(ORG, job.id)).attempts == 1
    world.clock.advance(seconds=5)
    await world.runner.run(job.id)
    second = await world.jobs.get(ORG, job.id)
    assert second.next_attempt_at == world.clock.now() + timedelta(seconds=10)
    world.clock.advance(seconds=10)
    await world.runner.run(job.id)
    final = await world.jobs.get(ORG, job.id)
    assert (final.status, final.attempts) == (JobStatus.FAILED, 3)
    assert await world.asset_status(asset) is AssetStatus.FAILED


@pytest.mark.parametrize("error", [InvalidMedia("broken"), DecoderCrashed("SIGSEGV")])
async def test_invalid_media_fails_at_once_with_its_code(world: World, error: Exception) -> None:
    asset = await world.asset()
    world.thumbnailer.error = error
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    await world.runner.run(job.id)
    failed = await world.jobs.get(ORG, job.id)
    assert (failed.status, failed.attempts) == (JobStatus.FAILED, 1)
    assert failed.error is not None
    assert failed.error.code == error.code  # type: ignore[attr-defined]


async def test_a_dead_workers_job_is_claimed_again_after_its_lease(world: World) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    async with world.database("org-a") as uow:  # a worker claims it, then dies
        await uow.jobs.claim(job.id, "dead", world.clock.now(), world.clock.now())
        await uow.commit()
    world.clock.advance(seconds=1)
    assert await world.runner.sweep() == 1
    await world.runner.run(job.id)
    done = await world.jobs.get(ORG, job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2)


class StuckThumbnailer(FakeThumbnailer):
    """Never finishes: the run is in the middle of its job until it is cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def thumbnails(
        self, path: Path, media: MediaInfo, spec: ThumbnailSpec
    ) -> list[Thumbnail]:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def interrupted_run(world: World, thumbnailer: StuckThumbnailer) -> Job:
    """A job whose run is cancelled (its worker stopping) in the middle; answers it after."""
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    running = asyncio.create_task(world.runner.run(job.id))
    await thumbnailer.started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    return await world.jobs.get(ORG, job.id)


async def test_a_run_its_worker_stops_is_queued_again_and_handed_back_at_once() -> None:
    world = World(thumbnailer := StuckThumbnailer())
    after = await interrupted_run(world, thumbnailer)
    assert (after.status, after.lease_owner) == (JobStatus.QUEUED, None)
    assert after.error is not None
    assert after.error.code == "interrupted"
    # Its id went to the queue again, so another worker takes it now, not at the next sweep.
    assert world.queue.handed_over == [after.id, after.id]
    assert after.enqueued_at is not None
    assert await world.runner.sweep() == 0


async def test_a_stopped_run_the_queue_refuses_is_left_to_the_sweep() -> None:
    world = World(thumbnailer := StuckThumbnailer())
    world.queue.down = True  # the request's hand-over is deferred too
    after = await interrupted_run(world, thumbnailer)
    assert after.status is JobStatus.QUEUED
    assert world.queue.handed_over == []
    assert after.enqueued_at is None  # due: the next sweep hands it over
    world.queue.down = False
    assert await world.runner.sweep() == 1


async def test_a_run_failing_while_its_worker_stops_is_handed_back_not_failed(
    world: World,
) -> None:
    # The stop signal can reach the job's decoder too (a Ctrl-C, a systemd stop): that crash
    # says nothing about the file.
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    world.runner.stopping()
    world.thumbnailer.error = DecoderCrashed("the decoder crashed (killed by SIGTERM)")
    await world.runner.run(job.id)
    after = await world.jobs.get(ORG, job.id)
    assert after.status is JobStatus.QUEUED
    assert after.error is not None
    assert after.error.code == "interrupted"
    assert world.queue.handed_over == [job.id, job.id]
    assert await world.asset_status(asset) is AssetStatus.PROCESSING


async def test_a_worker_waits_for_the_database_to_claim_a_job(world: World) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    world.database.unavailable_for = 2  # the message arrives while PostgreSQL restarts
    with capture_logs() as logs:
        await world.runner.run(job.id)
    done = await world.jobs.get(ORG, job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)
    waits = [line for line in logs if line["event"] == "job_waiting_for_database"]
    assert len(waits) == 2


async def test_a_finished_run_waits_for_the_database_to_record_its_outcome(
    world: World,
) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    produce = world.thumbnailer.thumbnails

    async def database_goes_away_meanwhile(*args: Any, **kwargs: Any) -> list[Thumbnail]:
        world.database.unavailable_for = 3
        return await produce(*args, **kwargs)

    world.thumbnailer.thumbnails = database_goes_away_meanwhile  # type: ignore[method-assign]
    await world.runner.run(job.id)
    done = await world.jobs.get(ORG, job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)  # not thrown away
    assert world.thumbnailer.calls == 1
    assert await world.asset_status(asset) is AssetStatus.READY


async def test_a_worker_gives_up_waiting_after_one_lease_and_leaves_it_to_the_sweep(
    world: World,
) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    impatient = JobRunner(
        world.database,
        FakeJobDirectory(world.database),
        world.queue,
        world.storage,
        world.thumbnailer,
        world.clock,
        JobPolicy(lease=timedelta(milliseconds=50), database_retry=timedelta(milliseconds=5)),
        prober_name="fake",
        metrics=world.metrics,
    )
    world.database.unavailable_for = 1000
    with pytest.raises(DatabaseUnavailable):
        await impatient.run(job.id)
    world.database.unavailable_for = 0
    assert (await world.jobs.get(ORG, job.id)).status is JobStatus.QUEUED  # untouched


async def test_another_orgs_job_and_asset_are_not_found(world: World) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    other = Principal(org_id="org-b")
    with pytest.raises(NotFound):
        await world.jobs.get(other, job.id)
    with pytest.raises(NotFound):
        await world.jobs.request_sidecar(other, asset.id, SPEC)


async def test_every_run_reports_its_kind_outcome_and_duration(world: World) -> None:
    asset = await world.asset()
    world.thumbnailer.error = StorageError("disk full")
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    await world.runner.run(job.id)
    world.clock.advance(seconds=5)
    world.thumbnailer.error = None
    await world.runner.run(job.id)
    await world.runner.run(job.id)  # a second delivery of a finished job ran nothing
    assert world.metrics.job_outcomes == ["retry", "succeeded"]
    assert all(kind is JobKind.SIDECAR and seconds >= 0 for kind, _, seconds in world.metrics.jobs)

    other = await world.asset()
    world.thumbnailer.error = InvalidMedia("broken")
    failed, _ = await world.jobs.request_sidecar(ORG, other.id, SPEC)
    await world.runner.run(failed.id)
    assert world.metrics.job_outcomes == ["retry", "succeeded", "failed"]


async def test_the_queue_depth_counts_queued_and_running_jobs(world: World) -> None:
    assert await world.runner.queue_depth() == {JobStatus.QUEUED: 0, JobStatus.RUNNING: 0}
    first, second = await world.asset(), await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, first.id, SPEC)
    await world.jobs.request_sidecar(ORG, second.id, SPEC)
    async with world.database("org-a") as uow:
        await uow.jobs.claim(job.id, "w", world.clock.now(), world.clock.now())
        await uow.commit()
    assert await world.runner.queue_depth() == {JobStatus.QUEUED: 1, JobStatus.RUNNING: 1}


async def test_every_line_a_job_run_logs_names_its_job_and_asset(world: World) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    with capture_logs() as logs:
        await world.runner.run(job.id)
    ids = {"job_id": str(job.id), "asset_id": str(asset.id)}
    assert world.thumbnailer.log_contexts == [ids | {"org_id": "org-a"}]
    lines = {line["event"]: line for line in logs}
    for event in ("job_started", "job_succeeded"):
        assert ids.items() <= lines[event].items(), lines[event]
    assert structlog.contextvars.get_contextvars() == {}  # unbound after the run


class _RacedDirectory(FakeJobDirectory):
    """Runs ``between`` once, after its first answer of whose turn it is and before the caller
    claims that job: another slot acting in that moment."""

    def __init__(self, database: FakeDatabase, between: Callable[[], Awaitable[None]]) -> None:
        super().__init__(database)
        self._between: Callable[[], Awaitable[None]] | None = between

    async def next_in_turn(self, now: datetime, prefer_org: str) -> JobInTurn | None:
        turn = await super().next_in_turn(now, prefer_org)
        between, self._between = self._between, None
        if between is not None:
            await between()
        return turn


async def test_a_message_whose_own_job_was_taken_in_turn_runs_the_next_job(world: World) -> None:
    # Two jobs, two messages at once (the in-process queue runs both at the same moment): the
    # second job's message takes the first job in turn just after the first job's message found
    # that it is its own job's turn. The first message must then run the second job: nothing
    # else would (its message was spent), and it waited for the sweep's lost-message check.
    first_asset, second_asset = await world.asset(), await world.asset()
    first, _ = await world.jobs.request_sidecar(ORG, first_asset.id, SPEC)
    world.clock.advance(seconds=1)
    second, _ = await world.jobs.request_sidecar(ORG, second_asset.id, SPEC)

    async def other_slot_takes_the_first() -> None:
        now = world.clock.now()
        async with world.database(ORG.org_id) as uow:
            assert await uow.jobs.claim(first.id, "other-slot", now, now + HOUR) is not None
            await uow.commit()

    runner = JobRunner(
        world.database,
        _RacedDirectory(world.database, other_slot_takes_the_first),
        world.queue,
        world.storage,
        world.thumbnailer,
        world.clock,
        JobPolicy(max_attempts=3, lease=timedelta(seconds=60)),
        prober_name="fake",
        metrics=world.metrics,
    )
    await runner.run(first.id)
    assert (await world.jobs.get(ORG, second.id)).status is JobStatus.SUCCEEDED
