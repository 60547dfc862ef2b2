"""Running sidecar jobs (on any worker, any number of times) and sweeping the due ones.

The job row is the truth and doubles as an outbox: a request writes it, then hands its id to
the queue; if the queue was down the sweep here hands it over later. Delivery is at least once;
a worker claims the row with a conditional update under a lease, so a second delivery of a live
job is a no-op, and a job whose worker died is claimed again once its lease runs out. Outputs go
to deterministic keys, so a re-run overwrites rather than duplicates. The job's own states and
transitions are ``Job``'s (``heimdex.domain.model``); this module does the I/O around them.

Organisations take turns: the queue is first in, first out, but a worker slot that takes a
message runs the claimable job of the organisation with the fewest jobs running
(``JobDirectory.next_in_turn``), so one organisation's backlog cannot hold up another's job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar
from uuid import UUID

import anyio
import msgspec

from heimdex import __version__
from heimdex.application.job_handover import JobHandOver
from heimdex.application.job_policy import JobPolicy
from heimdex.application.pictures import read_sidecar, store_poster, store_storyboard
from heimdex.application.webhook_events import asset_data, job_data, record_event
from heimdex.domain.errors import (
    AssetGone,
    DatabaseUnavailable,
    HeimdexError,
    InvalidMedia,
    QueueUnavailable,
    StorageError,
)
from heimdex.domain.frames import FrameFingerprint
from heimdex.domain.model import (
    INTERRUPTED,
    Asset,
    AssetStatus,
    Job,
    JobError,
    JobStatus,
    Pictures,
    Thumbnail,
)
from heimdex.domain.ports import (
    Clock,
    JobDirectory,
    JobOutcome,
    JobQueue,
    Metrics,
    PictureMaker,
    Storage,
    Thumbnailer,
    UnitOfWorkFactory,
)
from heimdex.domain.sidecar import (
    Generator,
    PosterRef,
    ThumbnailRef,
    ThumbnailSummary,
    build_sidecar,
    encode_sidecar,
)
from heimdex.domain.storage_keys import asset_derived_prefix, sidecar_key, thumbnail_key
from heimdex.domain.webhooks import WebhookEventType
from heimdex.logs import get_logger, log_context

log = get_logger(__name__)
T = TypeVar("T")
_DATABASE_RETRY_MAX_SECONDS = 5.0
# Picks a slot tries before it runs its message's own job (if that is claimable).
_TURN_ATTEMPTS = 3


class JobRunner:
    """The runner side of sidecar jobs: claim one in turn, run it under a heartbeat, record its
    outcome; sweep the due ones back to the queue; say how deep the queue is. Asking for jobs
    is ``JobRequests``'s."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        directory: JobDirectory,
        queue: JobQueue,
        storage: Storage,
        thumbnailer: Thumbnailer,
        clock: Clock,
        policy: JobPolicy,
        prober_name: str,
        metrics: Metrics,
        pictures: PictureMaker | None = None,
    ) -> None:
        """``pictures`` makes each job's storyboard and poster; without it, jobs make none."""
        self._uow = uow
        self._pictures = pictures
        self._directory = directory
        self._queue = queue
        self._storage = storage
        self._thumbnailer = thumbnailer
        self._clock = clock
        self._policy = policy
        self._metrics = metrics
        self._generator = Generator(
            name="heimdex", version=__version__, prober=prober_name, thumbnailer=thumbnailer.name
        )
        self._hand_over = JobHandOver(queue, directory, clock)
        self.worker_id = f"worker-{uuid.uuid4().hex[:12]}"
        self._stopping = False

    def stopping(self) -> None:
        """This worker was asked to stop. A run that fails from now on is handed back as
        interrupted rather than recorded as failed: the stop signal may have reached its
        decoders too (a Ctrl-C or a systemd stop goes to every process of the group, and an
        ffmpeg or decode worker killed by it looks like a crashing file), so another worker
        tries it again."""
        self._stopping = True

    # -- running ----------------------------------------------------------------------------
    async def run(self, job_id: UUID) -> None:
        """Run the job in turn for this message: the claimable job of the organisation with
        the fewest jobs running, which is this one when no other organisation waits longer for
        its turn. A second delivery of a live or finished job runs another job in turn, or
        nothing. Never raises for the job's own failures: they are recorded on the row."""
        org_id = await self._once_database_answers(lambda: self._directory.org_of(job_id))
        if org_id is None:
            log.info("job_unknown", job_id=str(job_id))
            return
        known_org: str = org_id
        job = await self._once_database_answers(lambda: self._claim_in_turn(job_id, known_org))
        if job is None:
            log.info("job_not_claimable", job_id=str(job_id))
            return
        # Every line logged while the job runs, here or in an adapter, names the job and asset.
        with log_context(job_id=str(job.id), asset_id=str(job.asset_id), org_id=job.org_id):
            await self._run_claimed(job)

    async def _claim_in_turn(self, job_id: UUID, org_id: str) -> Job | None:
        """Claim the job whose turn it is, which need not be the message's own: the queue hands
        out messages first in, first out, and organisations take turns here instead. A message
        spent on another job passes its place in the queue to its own job (the other job's
        hand-over time), so that one's message still stands and the sweep's count of lost
        messages stays true; its own job runs when another message finds it in turn."""
        for _ in range(_TURN_ATTEMPTS):  # another slot may claim the pick first: pick again
            turn = await self._directory.next_in_turn(self._clock.now(), org_id)
            if turn is None:
                break
            # The pick may be this message's own job and still be claimed first by a message of
            # another job, which spent itself on this one in turn: then this message must run
            # the next job in turn, or that job is left queued with no message at all.
            job = await self._claim(turn.job_id, turn.org_id)
            if job is None:
                continue
            if turn.job_id != job_id:
                try:
                    await self._directory.mark_enqueued(job_id, org_id, turn.enqueued_at)
                except DatabaseUnavailable as exc:  # the claim stands: at worst, a redelivery
                    log.warning("job_turn_not_recorded", job_id=str(job_id), error=exc.message)
                log.debug("job_taken_in_turn", job_id=str(job.id), message_job_id=str(job_id))
            return job
        return await self._claim(job_id, org_id)

    async def _claim(self, job_id: UUID, org_id: str) -> Job | None:
        now = self._clock.now()
        async with self._uow(org_id) as uow:
            job = await uow.jobs.claim(job_id, self.worker_id, now, now + self._policy.lease)
            await uow.commit()
        return job

    async def _run_claimed(self, job: Job) -> None:
        log.info(
            "job_started",
            job_id=str(job.id),
            asset_id=str(job.asset_id),
            attempt=job.attempts,
            org_id=job.org_id,
        )
        started = time.perf_counter()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._heartbeat, job)
                try:
                    asset, frames = await self._produce(job)
                finally:
                    group.cancel_scope.cancel()
        except BaseException as exc:  # every failure is recorded; cancellation re-raised
            failure = _unwrap(exc)
            stopped = not isinstance(failure, Exception) or self._stopping
            if stopped and isinstance(failure, Exception):
                log.warning(
                    "job_failed_while_stopping",
                    job_id=str(job.id),
                    error=failure.message if isinstance(failure, HeimdexError) else repr(failure),
                )
            with anyio.CancelScope(shield=True):
                if not stopped:
                    retry = await self._once_database_answers(
                        lambda: self._record_failure(job, failure)
                    )
                else:  # stopping: one try, never hold up shutdown (the lease hands it over)
                    retry = await self._record_failure(job, failure, interrupted=True)
                    if retry:
                        await self._hand_back(job)
            outcome: JobOutcome = "retry" if retry else "failed"
            self._metrics.job_finished(job.kind, outcome, time.perf_counter() - started)
            if not isinstance(_unwrap(exc), Exception):
                raise
            return
        kept = await self._once_database_answers(lambda: self._record_success(job, asset, frames))
        finished: JobOutcome = "succeeded" if kept else "failed"
        self._metrics.job_finished(job.kind, finished, time.perf_counter() - started)

    async def _hand_back(self, job: Job) -> None:
        """A run its worker stopped, queued again: its id goes to the queue now, so another
        worker takes it at once rather than at the next sweep. One try each (the worker is
        stopping); what fails here the sweep repairs."""
        try:
            taken = await self._hand_over(job.id, job.org_id)
        except DatabaseUnavailable as exc:  # the queue took it; a second message is a no-op
            log.warning("job_hand_back_not_recorded", job_id=str(job.id), error=exc.message)
            taken = True
        if taken:
            log.warning(
                "job_handed_back",
                job_id=str(job.id),
                asset_id=str(job.asset_id),
                attempt=job.attempts,
            )

    async def _once_database_answers(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation()``; while the database is unavailable, again with back-off for up to one
        lease. Past that the error stands: the row is unchanged (or its lease runs out) and the
        sweep hands the job over again once the database is back."""
        deadline = time.monotonic() + self._policy.lease.total_seconds()
        delay = self._policy.database_retry.total_seconds()
        while True:
            try:
                return await operation()
            except DatabaseUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("job_waiting_for_database", error=exc.message, retry_in=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, _DATABASE_RETRY_MAX_SECONDS)

    async def _heartbeat(self, job: Job) -> None:
        interval = self._policy.lease.total_seconds() / 3
        while True:
            await anyio.sleep(interval)
            try:
                async with self._uow(job.org_id) as uow:
                    held = await uow.jobs.heartbeat(
                        job.id, self.worker_id, self._clock.now() + self._policy.lease, job.progress
                    )
                    await uow.commit()
            except DatabaseUnavailable as exc:
                # A database blip must not throw the work away: keep producing and try again at
                # the next beat. If the lease runs out meanwhile, the claim is another worker's
                # to take and this run's outcome is recorded only if it still holds it.
                log.warning("job_heartbeat_failed", job_id=str(job.id), error=exc.message)
                continue
            if not held:
                log.warning("job_lease_lost", job_id=str(job.id), asset_id=str(job.asset_id))
                return

    async def _produce(self, job: Job) -> tuple[Asset, list[FrameFingerprint]]:
        async with self._uow(job.org_id) as uow:
            asset = await uow.assets.get(job.asset_id)
        if asset is None:
            raise AssetGone("the asset was deleted before its sidecar was made")
        # A poster a user chose outlives a re-run: it is made again at the time they chose.
        chosen = await self._user_poster(asset)
        async with self._storage.local_path(asset.key) as path:
            thumbnails, pictures = await self._decode(
                path, asset, job, chosen.time if chosen else None
            )
        # Deterministic keys: a re-run overwrites. Clear first, so a smaller count leaves none over.
        await self._storage.delete_prefix(asset_derived_prefix(asset.org_id, asset.id))
        refs: list[ThumbnailRef] = []
        for thumbnail in thumbnails:
            key = thumbnail_key(asset.org_id, asset.id, thumbnail.index, job.thumbnails.format)
            await self._storage.write_bytes(key, thumbnail.data)
            refs.append(
                ThumbnailRef(
                    index=thumbnail.index,
                    time=thumbnail.time,
                    key=key,
                    width=thumbnail.width,
                    height=thumbnail.height,
                    format=job.thumbnails.format,
                )
            )
        summary = ThumbnailSummary.of(
            job.thumbnails.count, len(refs), has_video=bool(asset.media.video_streams)
        )
        if summary.shortfall == "fewer_frames":
            log.info(
                "thumbnails_fewer_than_requested", requested=summary.requested, made=summary.made
            )
        storyboard = await store_storyboard(self._storage, asset, pictures.storyboard)
        poster = None
        if pictures.poster is not None:
            poster = await store_poster(
                self._storage, asset, pictures.poster, "user" if chosen else "auto"
            )
        document = build_sidecar(
            asset, refs, self._generator, summary=summary, storyboard=storyboard, poster=poster
        )
        await self._storage.write_bytes(
            sidecar_key(asset.org_id, asset.id), encode_sidecar(document)
        )
        return asset, job_frames(thumbnails, pictures)

    async def _decode(
        self, path: Path, asset: Asset, job: Job, poster_time: float | None
    ) -> tuple[Sequence[Thumbnail], Pictures]:
        """The thumbnails, and the storyboard and poster, made at the same time (each in a
        decode worker of its own when the pool has two free). The first failure cancels the
        other and is raised as it is, so its code (``invalid_media``…) decides the retry."""
        thumbnails: Sequence[Thumbnail] = []
        pictures = Pictures()
        failures: list[Exception] = []
        maker = self._pictures if asset.media.video_streams else None

        async with anyio.create_task_group() as group:

            async def make_thumbnails() -> None:
                nonlocal thumbnails
                try:
                    thumbnails = await self._thumbnailer.thumbnails(
                        path, asset.media, job.thumbnails
                    )
                except Exception as exc:  # raised below, once both have stopped
                    failures.append(exc)
                    group.cancel_scope.cancel()

            async def make_pictures(made_by: PictureMaker) -> None:
                nonlocal pictures
                try:
                    pictures = await made_by.pictures(
                        path, asset.media, job.storyboard, poster_time
                    )
                except Exception as exc:
                    failures.append(exc)
                    group.cancel_scope.cancel()

            group.start_soon(make_thumbnails)
            if maker is not None:
                group.start_soon(make_pictures, maker)
        if failures:
            raise failures[0]
        return thumbnails, pictures

    async def _user_poster(self, asset: Asset) -> PosterRef | None:
        """The poster of the asset's current sidecar when a user chose it."""
        document = await read_sidecar(self._storage, asset)
        poster = document.poster if document is not None else None
        return poster if poster is not None and poster.chosen_by == "user" else None

    # -- recording outcomes: each in one transaction with the asset's status ----------------
    async def _record_success(
        self, job: Job, asset: Asset, frames: Sequence[FrameFingerprint]
    ) -> bool:
        """Record the run's success and its frames' fingerprints, unless its asset was deleted
        while it ran: then what it wrote is removed and the answer is ``False``."""
        now = self._clock.now()
        done = job.succeeded(now)
        async with self._uow(job.org_id) as uow:
            # The delete holds this lock too, and removes files only after it committed: the
            # asset is either gone now (so this run removes what it wrote, below) or stays
            # until this commits (so its delete comes later and removes everything).
            await uow.lock_org()
            current = await uow.assets.get(asset.id)
            if current is not None and await uow.jobs.finish(done, self.worker_id):
                ready = msgspec.structs.replace(current, status=AssetStatus.READY, updated_at=now)
                await uow.assets.save(ready)
                await uow.frames.replace(asset.id, frames)
                await record_event(uow, WebhookEventType.ASSET_READY, asset_data(ready, done), now)
                await record_event(uow, WebhookEventType.JOB_SUCCEEDED, job_data(done), now)
            await uow.commit()
        if current is None:
            await self._discard_outputs(job)
            return False
        log.info(
            "job_succeeded", job_id=str(job.id), asset_id=str(job.asset_id), attempt=job.attempts
        )
        return True

    async def _discard_outputs(self, job: Job) -> None:
        """Remove what runs of the job wrote for an asset that was deleted: its thumbnails and
        sidecar must not outlive it. A failure here leaves them to the derived-files sweep."""
        try:
            removed = await self._storage.delete_prefix(
                asset_derived_prefix(job.org_id, job.asset_id)
            )
            await self._storage.delete(sidecar_key(job.org_id, job.asset_id))
        except StorageError as exc:
            log.warning("job_outputs_not_discarded", job_id=str(job.id), error=str(exc))
            return
        log.warning(
            "job_outputs_discarded",
            job_id=str(job.id),
            asset_id=str(job.asset_id),
            reason="the asset was deleted while the job ran",
            thumbnails=removed,
        )

    async def _record_failure(
        self, job: Job, exc: BaseException, *, interrupted: bool = False
    ) -> bool:
        """Record the failed run on the row (``interrupted``: its worker stopped it, or it
        failed while its worker was stopping); answers whether the job will be tried again."""
        now = self._clock.now()
        interrupted = interrupted or not isinstance(exc, Exception)  # cancelled: stopping
        if interrupted:
            error = INTERRUPTED
            outcome = job.interrupted(now)
        else:
            error = JobError(
                code=exc.code if isinstance(exc, HeimdexError) else "internal_error",
                message=exc.message if isinstance(exc, HeimdexError) else type(exc).__name__,
            )
            permanent = isinstance(exc, InvalidMedia | AssetGone)
            if permanent or not job.has_attempts_left:
                outcome = job.failed(error, now)
            else:
                outcome = job.rescheduled(error, now, now + self._policy.backoff(job.attempts))
        retry = outcome.status is JobStatus.QUEUED
        async with self._uow(job.org_id) as uow:
            if not interrupted:  # as in _record_success: a delete is before or after this
                await uow.lock_org()
            current = await uow.assets.get(job.asset_id)
            if await uow.jobs.finish(outcome, self.worker_id) and not retry:
                if current is not None:
                    failed = msgspec.structs.replace(
                        current, status=AssetStatus.FAILED, updated_at=now
                    )
                    await uow.assets.save(failed)
                    await record_event(
                        uow, WebhookEventType.ASSET_FAILED, asset_data(failed, outcome), now
                    )
                await record_event(uow, WebhookEventType.JOB_FAILED, job_data(outcome), now)
            await uow.commit()
        if current is None and not interrupted:
            # Its row went with the asset: nothing to retry. A run that failed part-way may
            # have written some outputs.
            await self._discard_outputs(job)
            retry = False
        (log.warning if retry else log.error)(
            "job_retry_scheduled" if retry else "job_failed",
            job_id=str(job.id),
            asset_id=str(job.asset_id),
            attempt=job.attempts,
            code=error.code,
            error=error.message,
        )
        return retry

    # -- monitoring -------------------------------------------------------------------------
    async def queue_depth(self) -> dict[JobStatus, int]:
        """How many jobs are queued and running, across every organisation."""
        return await self._directory.active_counts()

    async def oldest_message_age(self) -> float:
        """Seconds the oldest message waiting for a worker has waited (0 when none waits); a
        message a live worker is running does not count. Growing without bound means no worker
        is taking jobs: all dead, or overwhelmed.
        Raises ``QueueUnavailable`` when the queue cannot say."""
        oldest = await self._queue.oldest_waiting()
        if oldest is None:
            return 0.0
        return max((self._clock.now() - oldest).total_seconds(), 0.0)

    # -- sweeping ---------------------------------------------------------------------------
    async def sweep(self, limit: int = 500) -> int:
        """Hand every due job to the queue again: never enqueued (broker was down), retries
        whose back-off ran out, lost messages, and running jobs whose lease expired.

        A message counts as lost when its job has waited ``redeliver_after`` and was handed
        over before the oldest message still waiting in the queue: a job behind a long backlog is
        waiting its turn, and handing it over again would only queue a duplicate."""
        now = self._clock.now()
        cutoff = now - self._policy.redeliver_after
        try:
            oldest = await self._queue.oldest_waiting()
        except QueueUnavailable:
            oldest = None  # nothing can be handed over now anyway; the next sweep will see
        if oldest is not None:
            cutoff = min(cutoff, oldest)
        due = await self._directory.due(now, cutoff, limit)
        for job_id, org_id in due:
            await self._hand_over(job_id, org_id)
        if due:
            log.info("jobs_swept", count=len(due))
        return len(due)


def job_frames(thumbnails: Sequence[Thumbnail], pictures: Pictures) -> list[FrameFingerprint]:
    """The fingerprinted frames of one run: the storyboard's tiles and the thumbnails (a frame
    both show counted once), by time."""
    frames = {(f.time, f.fingerprint): f for f in pictures.frames}
    for thumbnail in thumbnails:
        if thumbnail.fingerprint is not None:
            frame = FrameFingerprint(time=thumbnail.time, fingerprint=thumbnail.fingerprint)
            frames[(frame.time, frame.fingerprint)] = frame
    return sorted(frames.values(), key=lambda f: (f.time, f.fingerprint))


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
