"""The composition root: the one place that reads ``Settings`` and names concrete adapters."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, Protocol
from uuid import UUID

from heimdex.adapters.auth.jwt import JwtCodec
from heimdex.adapters.auth.url_signing import HmacUrlSigner
from heimdex.adapters.clock import SystemClock
from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.frame_directory import SqlFrameDirectory
from heimdex.adapters.db.idempotency import SqlIdempotencyStore
from heimdex.adapters.db.job_directory import SqlJobDirectory
from heimdex.adapters.db.migrations import upgrade
from heimdex.adapters.db.pg_reads import PgCatalogueReads
from heimdex.adapters.db.tenancy_report import TenancyCheck, tenancy_report
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.adapters.db.upload_directory import SqlUploadDirectory
from heimdex.adapters.db.webhook_directory import SqlWebhookDirectory
from heimdex.adapters.media.ffmpeg_thumbnailer import FfmpegThumbnailer
from heimdex.adapters.media.fingerprint import PooledImageFingerprinter
from heimdex.adapters.media.pooled_decoder import PooledDecoder
from heimdex.adapters.media.pyav_pictures import PyAVPictureMaker
from heimdex.adapters.media.pyav_thumbnailer import PyAVThumbnailer
from heimdex.adapters.metrics.exporter import MetricsServer as MetricsServer
from heimdex.adapters.metrics.exporter import serve_metrics
from heimdex.adapters.metrics.measured_media import MeasuredProber, MeasuredThumbnailer
from heimdex.adapters.metrics.prometheus import PrometheusMetrics
from heimdex.adapters.offload import run_blocking
from heimdex.adapters.queue.inprocess import InProcessJobQueue
from heimdex.adapters.queue.redis import (
    RUN_JOB_TASK,
    HeimdexStreamBroker,
    RedisJobQueue,
    build_redis_broker,
)
from heimdex.adapters.queue.redis_checks import RedisConfigCheck, redis_config_report
from heimdex.adapters.ratelimit.memory import InProcessRateLimiter
from heimdex.adapters.ratelimit.redis import RedisRateLimiter
from heimdex.adapters.request_bodies import RequestBodyFiles
from heimdex.adapters.storage.local import LocalStorage
from heimdex.adapters.storage.s3 import S3Storage
from heimdex.adapters.webhooks.http_sender import HttpxWebhookSender
from heimdex.application.abandoned_uploads import AbandonedUploadSweeper
from heimdex.application.assets import AssetService
from heimdex.application.connection_share import (
    ConnectionShare,
    SharedCatalogueReads,
    SharedUnitOfWorkFactory,
)
from heimdex.application.derived_files import DerivedFileSweeper
from heimdex.application.health import HealthService
from heimdex.application.idempotency import IdempotencyService
from heimdex.application.ingest import IngestLimits, IngestService
from heimdex.application.job_listing import JobListing
from heimdex.application.job_policy import JobPolicy
from heimdex.application.job_requests import JobRequests
from heimdex.application.job_runner import JobRunner
from heimdex.application.pictures import PictureService
from heimdex.application.probe_gate import ProbeSlots
from heimdex.application.probing import ProbeService
from heimdex.application.reindex import Reindexer
from heimdex.application.replay import ReplayService
from heimdex.application.resumable_uploads import ResumableUploads
from heimdex.application.scratch import ScratchSweeper
from heimdex.application.search import SearchService
from heimdex.application.sidecars import SidecarService
from heimdex.application.signed_urls import SignedUrlVerifier
from heimdex.application.sweeping import Sweep
from heimdex.application.webhook_delivery import DeliveryPolicy, WebhookDeliverer
from heimdex.application.webhooks import WebhookPolicy, WebhookService
from heimdex.bootstrap_media import build_prober, decode_limits
from heimdex.domain.connection_share import FairShare, share_of
from heimdex.domain.errors import (
    HeimdexError,
    ProbeBusy,
    QueueMisconfigured,
    SearchImagesBusy,
    TenancyUnsafe,
)
from heimdex.domain.ports import (
    CatalogueReads,
    Clock,
    FrameDirectory,
    FrameFingerprinter,
    HealthCheck,
    IdempotencyStore,
    JobDirectory,
    JobQueue,
    JobReplayDirectory,
    PictureMaker,
    Prober,
    RateLimiter,
    Storage,
    Thumbnailer,
    UnitOfWorkFactory,
    UploadDirectory,
    UrlSigner,
    WebhookDirectory,
    WebhookSender,
)
from heimdex.domain.rate_limit import RatePolicy
from heimdex.logs import get_logger
from heimdex.settings import Settings

log = get_logger(__name__)

#: the task a worker process runs job ids through (``heimdex.entrypoints.worker``)
JOB_TASK_NAME: Final = RUN_JOB_TASK


class RunnableQueue(JobQueue, Protocol):
    """A job queue this process starts and stops (the in-process broker, or Redis streams)."""

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...


class OutboxUnitOfWorkFactory(UnitOfWorkFactory, Protocol):
    """Units of work that call ``on_outbox_commit`` after a commit that recorded webhook events."""

    on_outbox_commit: Callable[[], None] | None


class JobDispatch:
    """The in-process queue's handler. The queue is an adapter and the job runner a use case
    built on it, so :func:`build_services` binds the runner here once it exists."""

    def __init__(self) -> None:
        self.runner: Callable[[UUID], Awaitable[None]] | None = None

    async def __call__(self, job_id: UUID) -> None:
        if self.runner is None:
            raise RuntimeError("no job runner is bound: build the services first")
        await self.runner(job_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Adapters:
    """Every concrete part, built from the settings by :func:`build_adapters` (connecting to
    nothing yet). A test swaps any of them for a fake and builds the real use cases on top:
    ``build_services(settings, replace(adapters, storage=FakeStorage()))``."""

    clock: Clock
    database: Database
    uow: OutboxUnitOfWorkFactory
    job_directory: JobDirectory
    upload_directory: UploadDirectory
    webhook_directory: WebhookDirectory
    replay_directory: JobReplayDirectory
    idempotency_store: IdempotencyStore
    signer: UrlSigner
    tokens: JwtCodec
    storage: Storage
    prober: Prober
    thumbnailer: Thumbnailer
    #: storyboards and posters (PyAV, in the thumbnailer's decode pool or one of its own)
    picture_maker: PictureMaker | None
    #: fingerprints of search images (a decode pool of its own)
    fingerprinter: FrameFingerprinter
    #: which assets have no fingerprinted frame yet, across organisations (``heimdex reindex``)
    frame_directory: FrameDirectory
    #: the API's hot reads on asyncpg when the database is PostgreSQL (docs/architecture.md,
    #: "Reads"); ``None``: the use cases read through the unit of work (SQLite, fakes)
    reads: CatalogueReads | None
    queue: RunnableQueue
    #: what the in-process queue runs each job id through (bound to the job runner)
    dispatch: JobDispatch
    webhook_sender: WebhookSender
    #: per-organisation request buckets; ``None`` when ``HEIMDEX_RATE_LIMIT_PER_SECOND`` is 0
    rate_limiter: RateLimiter | None
    metrics: PrometheusMetrics
    #: where the legacy endpoint spools request bodies (swept with the scratch files)
    request_bodies: RequestBodyFiles
    #: configuration checks beside the parts' own (row-level security, Redis' eviction policy)
    config_checks: Mapping[str, HealthCheck]
    #: releases what was built, last built first: registered as each part was built
    resources: AsyncExitStack = field(repr=False)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the entrypoints need, built once per process."""

    settings: Settings
    #: the parts the use cases below were built on (start-up, shutdown, tests)
    adapters: Adapters
    #: the HTTP edge's own parts: bearer tokens, the metrics registry, rate limits, spooled
    #: request bodies (the same objects as in ``adapters``)
    tokens: JwtCodec
    metrics: PrometheusMetrics
    rate_limiter: RateLimiter | None
    request_bodies: RequestBodyFiles
    #: checks the URLs ``signer`` signed, expiry by the process's clock
    signed_urls: SignedUrlVerifier
    probing: ProbeService
    ingest: IngestService
    resumable: ResumableUploads
    assets: AssetService
    idempotency: IdempotencyService
    #: asking for jobs (the API)
    jobs: JobRequests
    #: running them, sweeping the due ones, the queue's depth (workers, the API's own queue)
    job_runner: JobRunner
    sidecars: SidecarService
    pictures: PictureService
    abandoned_uploads: AbandonedUploadSweeper
    #: thumbnails and sidecars of assets that are gone
    derived_files: DerivedFileSweeper
    scratch: ScratchSweeper
    health: HealthService
    #: webhook endpoints and deliveries (the HTTP side), the deliverer, jobs listed, replay
    webhooks: WebhookService
    deliverer: WebhookDeliverer
    job_listing: JobListing
    replay: ReplayService
    #: search by what frames look like; ``heimdex reindex`` (assets older than fingerprints)
    search: SearchService
    reindexer: Reindexer

    def sweeps(self) -> tuple[Sweep, ...]:
        """What the periodic sweep runs in a process that sweeps for everyone: due jobs,
        webhook deliveries, abandoned uploads, derived files of deleted assets, then this
        process's own scratch files."""
        return (
            self.job_runner.sweep,
            self.deliverer.sweep,
            self.abandoned_uploads.sweep,
            self.derived_files.sweep,
            *self.own_sweeps(),
        )

    def own_sweeps(self) -> tuple[Sweep, ...]:
        """What every process sweeps, whoever sweeps the database: scratch files are on the
        process's own disk (each container of a deployment has its own)."""
        return (self.scratch.sweep,)

    async def startup(self, *, start_queue: bool = True) -> None:
        database, queue = self.adapters.database, self.adapters.queue
        if database.backend == "sqlite":
            # The embedded default migrates itself; PostgreSQL is migrated by its owner role
            # (`heimdex db upgrade`), never by the service's runtime role.
            await run_blocking(
                upgrade,
                self.settings.resolved_database_url,
                "head",
                self.settings.database.migrations_dir,
            )
        else:
            await check_tenancy(database, self.settings)
        if isinstance(queue, RedisJobQueue):
            await check_redis(queue.broker, self.settings)
        if start_queue:
            await queue.startup()

    async def warm_decoders(self, *, probing: bool, thumbnails: bool) -> None:
        """Start the decode processes this process will use now rather than on the first probe
        or job: a fresh one imports FFmpeg, which takes seconds on a small machine. A failure
        is logged, not raised: the first real call starts them again, or says why it cannot."""
        started = time.perf_counter()
        adapters = self.adapters
        # The prober first: a commit waits on it, a job can wait a little.
        parts: dict[str, object] = {"prober": adapters.prober} if probing else {}
        if thumbnails:
            parts["thumbnailer"] = adapters.thumbnailer
            if adapters.picture_maker is not None:
                parts["pictures"] = adapters.picture_maker
        for name, part in parts.items():
            if not isinstance(part, PooledDecoder):  # subprocess adapters need no warming
                continue
            try:
                await part.warm()
            except HeimdexError as exc:
                log.warning("decoders_not_warmed", part=name, error=exc.message)
                return
        log.info("decoders_warm", seconds=round(time.perf_counter() - started, 3))

    async def aclose(self) -> None:
        """Release everything built for these services, last built first."""
        await self.adapters.resources.aclose()


async def check_tenancy(database: Database, settings: Settings) -> None:
    """Row-level security must hold for the role we connect as; production refuses to start
    without it, development says so loudly."""
    report = await tenancy_report(database)
    for problem in report.problems:
        log.error("tenancy_unsafe", problem=problem)
    if report.problems and settings.is_production:
        raise TenancyUnsafe(
            "refusing to start: "
            + "; ".join(report.problems)
            + " (see docs/deployment.md, PostgreSQL)"
        )


async def check_redis(broker: HeimdexStreamBroker, settings: Settings) -> None:
    """Redis must keep queued jobs (``noeviction``; results, if any, expire): production
    refuses to start otherwise, development says so loudly. What cannot be checked (CONFIG
    disabled on a managed Redis, Redis not up yet) is a warning: jobs wait in their rows."""
    report = await redis_config_report(broker)
    for note in report.notes:
        log.warning("redis_config_unchecked", note=note)
    for problem in report.problems:
        log.error("redis_misconfigured", problem=problem)
    if report.problems and settings.is_production:
        raise QueueMisconfigured(
            "refusing to start: "
            + "; ".join(report.problems)
            + " (see docs/operations.md, When things fail)"
        )


async def preflight(settings: Settings) -> None:
    """Start-up's refusals on their own, run by ``heimdex serve`` and ``heimdex worker`` before
    any server or worker process starts, so that a refusal is one line, not a traceback:
    PostgreSQL reachable and its row-level security binding us, Redis keeping jobs."""
    if settings.jobs.queue_backend == "redis":
        broker = build_worker_broker(settings)
        try:
            await check_redis(broker, settings)
        finally:
            await broker.connection_pool.disconnect()
    database = Database(settings.resolved_database_url)
    try:
        if database.is_postgres:
            await check_tenancy(database, settings)
    finally:
        await database.dispose()


def build_worker_broker(settings: Settings) -> HeimdexStreamBroker:
    """The Redis stream broker a worker process reads job ids from, and the API kicks them onto
    (connects to nothing yet)."""
    return build_redis_broker(
        settings.redis.url,
        queue_name=settings.redis.queue_name,
        claim_idle_seconds=settings.resolved_claim_idle_seconds,
    )


def build_probe_slots(settings: Settings, refusal: type[ProbeBusy] = ProbeBusy) -> ProbeSlots:
    """Each organisation's concurrent probes in this API process (``heimdex serve`` runs one);
    with ``refusal=SearchImagesBusy``, its search images decoding (the same cap and wait)."""
    return ProbeSlots(
        per_org=settings.probe.max_per_org,
        wait_seconds=settings.probe.wait_seconds,
        retry_after=math.ceil(max(settings.probe.wait_seconds, 1.0)),
        refusal=refusal,
    )


def build_connection_share(settings: Settings, capacity: int, pool: str) -> ConnectionShare | None:
    """Each organisation's share of a pool of ``capacity`` connections in this process
    (``HEIMDEX_DATABASE_ORG_SHARE``); ``None`` when there is none."""
    fraction = settings.database.org_share
    if fraction <= 0:
        return None
    wait = settings.database.org_wait_seconds
    return ConnectionShare(
        FairShare(capacity, share_of(capacity, fraction)),
        wait,
        retry_after=math.ceil(max(wait, 1.0)),
        pool=pool,
    )


def build_signer(settings: Settings) -> UrlSigner:
    return HmacUrlSigner(settings.jwt.secret)


def build_storage(settings: Settings, signer: UrlSigner) -> Storage:
    if settings.storage.backend == "s3":
        assert settings.s3.bucket is not None  # Settings refuses s3 without a bucket
        return S3Storage(
            bucket=settings.s3.bucket,
            temp_dir=settings.data_dir / "tmp",
            endpoint_url=settings.s3.endpoint_url or None,
            public_endpoint_url=settings.s3.public_endpoint_url or None,
            region=settings.s3.region or None,
            addressing_style=settings.s3.addressing_style,
        )
    return LocalStorage(
        settings.resolved_storage_root, signer, derived_root=settings.storage.derived_root
    )


def build_tokens(settings: Settings, clock: Clock | None = None) -> JwtCodec:
    return JwtCodec(
        settings.jwt.secret,
        algorithm=settings.jwt.algorithm,
        require_exp=settings.is_production,
        leeway_seconds=settings.jwt.leeway_seconds,
        clock=clock,
        cache_size=settings.jwt.cache_size,
    )


def build_thumbnailer(settings: Settings) -> Thumbnailer:
    if settings.thumbnails.backend == "ffmpeg":
        return FfmpegThumbnailer(
            binary=settings.thumbnails.ffmpeg_path,
            timeout=settings.thumbnails.timeout_seconds,
            concurrency=settings.decode.workers,
            limits=decode_limits(settings),
        )
    return PyAVThumbnailer(
        workers=settings.decode.workers,
        timeout=settings.thumbnails.timeout_seconds,
        limits=decode_limits(settings),
    )


def build_picture_maker(settings: Settings, thumbnailer: Thumbnailer) -> PyAVPictureMaker:
    """Storyboards and posters: PyAV in the PyAV thumbnailer's decode pool, or (with the ffmpeg
    thumbnailer, which has none) in a pool of their own."""
    pool = thumbnailer.pool if isinstance(thumbnailer, PyAVThumbnailer) else None
    return PyAVPictureMaker(
        workers=settings.decode.workers,
        timeout=settings.thumbnails.timeout_seconds,
        pool=pool,
        limits=decode_limits(settings),
    )


def job_policy(settings: Settings) -> JobPolicy:
    return JobPolicy(
        max_attempts=settings.jobs.max_attempts,
        lease=timedelta(seconds=settings.jobs.lease_seconds),
        retry_base=timedelta(seconds=settings.jobs.retry_base_seconds),
        redeliver_after=timedelta(seconds=settings.jobs.redeliver_seconds),
        max_active_per_org=settings.limits.org_max_active_jobs,
    )


def build_rate_limiter(settings: Settings) -> RateLimiter | None:
    """Buckets in this process, or in Redis shared by every API process (see docs/security.md,
    *Limits*); none when the rate is 0."""
    if settings.limits.rate_limit_per_second <= 0:
        return None
    policy = RatePolicy(
        rate=settings.limits.rate_limit_per_second, burst=settings.limits.rate_limit_burst
    )
    if settings.resolved_rate_limit_backend == "redis":
        return RedisRateLimiter(
            settings.redis.url, policy, prefix=f"{settings.redis.queue_name}:ratelimit:"
        )
    return InProcessRateLimiter(policy)


def build_queue(
    settings: Settings, dispatch: JobDispatch, broker: HeimdexStreamBroker | None = None
) -> RunnableQueue:
    if settings.jobs.queue_backend == "redis":
        return RedisJobQueue(broker or build_worker_broker(settings))
    # As many jobs at once as the decoder can work on: more would wait inside it, where
    # organisations cannot take turns (``JobRunner.run``).
    return InProcessJobQueue(dispatch, concurrency=settings.decode.workers)


def build_adapters(settings: Settings, broker: HeimdexStreamBroker | None = None) -> Adapters:
    """Build every adapter from the settings. Connects to nothing yet; each part that holds
    something to release is registered on one exit stack as it is built.

    ``broker`` is the worker process's own (with its task registered); the API builds one.
    """
    resources = AsyncExitStack()
    clock = SystemClock()
    signer = build_signer(settings)
    storage = build_storage(settings, signer)
    if isinstance(storage, S3Storage):  # its HTTP connections
        resources.push_async_callback(storage.aclose)
    database = Database(settings.resolved_database_url)
    resources.push_async_callback(database.dispose)
    reads = (
        PgCatalogueReads(settings.resolved_database_url, pool_size=settings.database.read_pool_size)
        if database.is_postgres
        else None
    )
    if reads is not None:
        resources.push_async_callback(reads.aclose)
    prober = build_prober(settings)
    thumbnailer = build_thumbnailer(settings)
    picture_maker = build_picture_maker(settings, thumbnailer)
    # Search images: a decode pool of one worker, started by the first image, apart from the
    # jobs' so a query never waits behind a video.
    fingerprinter = PooledImageFingerprinter(
        limits=decode_limits(settings), wait_seconds=settings.probe.worker_wait_seconds
    )
    for decoder in (prober, thumbnailer, picture_maker, fingerprinter):
        if isinstance(decoder, PooledDecoder):  # the PyAV adapters' decode pools
            resources.push_async_callback(decoder.close)
    webhook_sender = HttpxWebhookSender(
        timeout=settings.webhooks.timeout_seconds,
        allow_http=not settings.is_production,
        allow_private=settings.webhooks.allow_private_networks,
    )
    resources.push_async_callback(webhook_sender.aclose)
    rate_limiter = build_rate_limiter(settings)
    if rate_limiter is not None:
        resources.push_async_callback(rate_limiter.aclose)
    dispatch = JobDispatch()
    # Stopped first: jobs still running use the database and the decoders.
    queue = build_queue(settings, dispatch, broker)
    resources.push_async_callback(queue.shutdown)
    config_checks: dict[str, HealthCheck] = {}
    if database.backend == "postgresql":
        config_checks["tenancy"] = TenancyCheck(database)
    if isinstance(queue, RedisJobQueue):
        config_checks["queue_config"] = RedisConfigCheck(queue.broker)
    webhook_directory = SqlWebhookDirectory(database)
    return Adapters(
        clock=clock,
        database=database,
        uow=SqlUnitOfWorkFactory(database),
        job_directory=SqlJobDirectory(database),
        upload_directory=SqlUploadDirectory(database),
        webhook_directory=webhook_directory,
        replay_directory=webhook_directory,
        idempotency_store=SqlIdempotencyStore(database, clock=clock),
        signer=signer,
        tokens=build_tokens(settings, clock),
        storage=storage,
        prober=prober,
        thumbnailer=thumbnailer,
        picture_maker=picture_maker,
        fingerprinter=fingerprinter,
        frame_directory=SqlFrameDirectory(database),
        reads=reads,
        queue=queue,
        dispatch=dispatch,
        webhook_sender=webhook_sender,
        rate_limiter=rate_limiter,
        metrics=PrometheusMetrics(),
        request_bodies=RequestBodyFiles(settings.data_dir / "tmp"),
        config_checks=config_checks,
        resources=resources,
    )


def build_services(settings: Settings, adapters: Adapters) -> Services:
    """Build every use case on ``adapters`` (the real ones, or some swapped for fakes)."""
    a = adapters
    uow, clock, storage, metrics = a.uow, a.clock, a.storage, a.metrics
    # What requests use holds at most its organisation's share of each pool, so one
    # organisation's many slow requests leave connections to the others. The jobs, deliveries
    # and sweeps use the pools as they are: few at a time, bounded by their own settings.
    requests_uow: UnitOfWorkFactory = uow
    uow_share = build_connection_share(settings, a.database.pool_capacity, "unit-of-work")
    if uow_share is not None:
        requests_uow = SharedUnitOfWorkFactory(uow, uow_share)
    reads = a.reads
    read_share = build_connection_share(settings, settings.database.read_pool_size, "read")
    if reads is not None and read_share is not None:
        reads = SharedCatalogueReads(reads, read_share)
    # The use cases get timed media ports; health checks and shutdown use the adapters as built.
    measured_prober = MeasuredProber(a.prober, metrics)
    probe_slots = build_probe_slots(settings)
    policy = job_policy(settings)
    jobs = JobRequests(requests_uow, a.job_directory, a.queue, clock, policy, reads)
    job_runner = JobRunner(
        uow,
        a.job_directory,
        a.queue,
        storage,
        MeasuredThumbnailer(a.thumbnailer, metrics),
        clock,
        policy,
        prober_name=a.prober.name,
        metrics=metrics,
        pictures=a.picture_maker,
    )
    a.dispatch.runner = job_runner.run
    deliverer = WebhookDeliverer(
        uow,
        a.webhook_directory,
        a.webhook_sender,
        clock,
        metrics,
        DeliveryPolicy(
            concurrency=settings.webhooks.concurrency,
            per_endpoint=settings.webhooks.endpoint_concurrency,
            # A cap above the process's own is the process's own.
            per_org=min(settings.webhooks.org_concurrency, settings.webhooks.concurrency),
            timeout=timedelta(seconds=settings.webhooks.timeout_seconds),
            disable_after=timedelta(seconds=settings.webhooks.disable_after_seconds),
        ),
    )
    # Stopped before any adapter: its deliveries in flight use the sender and the database.
    a.resources.push_async_callback(deliverer.aclose)
    # An event committed in a process that delivers goes out at once, not at the next sweep.
    uow.on_outbox_commit = deliverer.wake
    checks: dict[str, HealthCheck] = {
        "database": a.database,
        "storage": storage,
        "prober": a.prober,
        "queue": a.queue,
        "thumbnailer": a.thumbnailer,
        **a.config_checks,
    }
    return Services(
        settings=settings,
        adapters=adapters,
        tokens=a.tokens,
        metrics=metrics,
        rate_limiter=a.rate_limiter,
        request_bodies=a.request_bodies,
        signed_urls=SignedUrlVerifier(a.signer, clock),
        probing=ProbeService(requests_uow, storage, measured_prober, probe_slots),
        ingest=IngestService(
            requests_uow,
            storage,
            measured_prober,
            clock,
            IngestLimits(
                max_upload_size_bytes=settings.uploads.max_size_bytes,
                upload_url_ttl=timedelta(seconds=settings.uploads.url_ttl_seconds),
                upload_stall=timedelta(seconds=settings.uploads.stall_seconds),
                storage_quota_bytes=settings.limits.org_storage_quota_bytes,
                max_resumable_size_bytes=settings.uploads.resumable_max_size_bytes,
                resumable_ttl=timedelta(seconds=settings.uploads.resumable_ttl_seconds),
                max_resumable_per_org=settings.limits.org_max_resumable_uploads,
            ),
            metrics=metrics,
            slots=probe_slots,
            multipart=storage if isinstance(storage, S3Storage) else None,
        ),
        resumable=ResumableUploads(
            requests_uow,
            storage,
            clock,
            ttl=timedelta(seconds=settings.uploads.resumable_ttl_seconds),
            stall=timedelta(seconds=settings.uploads.stall_seconds),
            metrics=metrics,
        ),
        assets=AssetService(requests_uow, storage, reads),
        idempotency=IdempotencyService(
            a.idempotency_store,
            clock,
            ttl=timedelta(seconds=settings.idempotency.ttl_seconds),
            lease=timedelta(seconds=settings.idempotency.lease_seconds),
        ),
        jobs=jobs,
        job_runner=job_runner,
        sidecars=SidecarService(
            requests_uow, storage, clock, settings.storage.download_url_ttl_seconds
        ),
        pictures=PictureService(
            requests_uow, storage, clock, settings.storage.download_url_ttl_seconds, a.picture_maker
        ),
        abandoned_uploads=AbandonedUploadSweeper(
            uow,
            a.upload_directory,
            storage,
            clock,
            grace=timedelta(seconds=settings.uploads.abandon_after_seconds),
        ),
        derived_files=DerivedFileSweeper(
            uow, storage, every=timedelta(seconds=settings.sweeps.derived_interval_seconds)
        ),
        scratch=ScratchSweeper(
            storage,
            clock,
            max_age=timedelta(seconds=settings.sweeps.scratch_max_age_seconds),
            also=[a.request_bodies],
        ),
        health=HealthService(checks),
        webhooks=WebhookService(
            requests_uow,
            clock,
            WebhookPolicy(
                allow_http=not settings.is_production,
                allow_private=settings.webhooks.allow_private_networks,
                secret_grace=timedelta(seconds=settings.webhooks.secret_grace_seconds),
            ),
        ),
        deliverer=deliverer,
        job_listing=JobListing(requests_uow, reads),
        replay=ReplayService(requests_uow, a.replay_directory, a.webhook_directory, clock),
        search=SearchService(
            requests_uow,
            a.fingerprinter,
            storage,
            clock,
            settings.storage.download_url_ttl_seconds,
            image_slots=build_probe_slots(settings, refusal=SearchImagesBusy),
        ),
        reindexer=Reindexer(uow, a.frame_directory, jobs),
    )


def build(settings: Settings, broker: HeimdexStreamBroker | None = None) -> Services:
    """Every adapter and use case from the settings. Connects to nothing yet.

    ``broker`` is the worker process's own (with its task registered); the API builds one.
    """
    return build_services(settings, build_adapters(settings, broker))


def migrate_database(settings: Settings, revision: str) -> None:
    """``heimdex db upgrade``: the schema to ``revision``, as the migration (owner) role."""
    upgrade(
        settings.resolved_migration_database_url,
        revision=revision,
        directory=settings.database.migrations_dir,
    )


def serve_worker_metrics(services: Services, port: int) -> MetricsServer:
    """A worker process's own ``/metrics`` on ``port`` (its jobs are counted nowhere else)."""
    settings = services.settings
    return serve_metrics(services.metrics, settings.http.host, port, settings.metrics.token)
