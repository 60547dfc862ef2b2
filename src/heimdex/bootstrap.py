"""The composition root: the one place that reads ``Settings`` and names concrete adapters."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from heimdex.adapters.auth.jwt import JwtCodec
from heimdex.adapters.auth.url_signing import HmacUrlSigner
from heimdex.adapters.clock import SystemClock
from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.idempotency import SqlIdempotencyStore
from heimdex.adapters.db.job_directory import SqlJobDirectory
from heimdex.adapters.db.migrations import upgrade
from heimdex.adapters.db.pg_reads import PgCatalogueReads
from heimdex.adapters.db.tenancy_report import TenancyCheck, tenancy_report
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.adapters.db.upload_directory import SqlUploadDirectory
from heimdex.adapters.db.webhook_directory import SqlWebhookDirectory
from heimdex.adapters.media.ffmpeg_thumbnailer import FfmpegThumbnailer
from heimdex.adapters.media.pyav_pictures import PyAVPictureMaker
from heimdex.adapters.media.pyav_thumbnailer import PyAVThumbnailer
from heimdex.adapters.metrics.measured_media import MeasuredProber, MeasuredThumbnailer
from heimdex.adapters.metrics.prometheus import PrometheusMetrics
from heimdex.adapters.offload import run_blocking
from heimdex.adapters.queue.inprocess import InProcessJobQueue
from heimdex.adapters.queue.redis import HeimdexStreamBroker, RedisJobQueue, build_redis_broker
from heimdex.adapters.queue.redis_checks import RedisConfigCheck, redis_config_report
from heimdex.adapters.ratelimit.memory import InProcessRateLimiter
from heimdex.adapters.ratelimit.redis import RedisRateLimiter
from heimdex.adapters.request_bodies import RequestBodyFiles
from heimdex.adapters.storage.local import LocalStorage
from heimdex.adapters.storage.s3 import S3Storage
from heimdex.adapters.webhooks.http_sender import HttpxWebhookSender
from heimdex.application.abandoned_uploads import AbandonedUploadSweeper
from heimdex.application.assets import AssetService
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
from heimdex.application.replay import ReplayService
from heimdex.application.scratch import ScratchSweeper
from heimdex.application.sidecars import SidecarService
from heimdex.application.signed_urls import SignedUrlVerifier
from heimdex.application.sweeping import Sweep
from heimdex.application.webhook_delivery import DeliveryPolicy, WebhookDeliverer
from heimdex.application.webhooks import WebhookPolicy, WebhookService
from heimdex.bootstrap_media import build_prober, decode_limits
from heimdex.domain.errors import HeimdexError, QueueMisconfigured, TenancyUnsafe
from heimdex.domain.ports import (
    Clock,
    HealthCheck,
    Prober,
    RateLimiter,
    Storage,
    Thumbnailer,
    UrlSigner,
)
from heimdex.domain.rate_limit import RatePolicy
from heimdex.logs import get_logger
from heimdex.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the entrypoints need, built once per process."""

    settings: Settings
    database: Database
    storage: Storage
    prober: Prober
    thumbnailer: Thumbnailer
    queue: InProcessJobQueue | RedisJobQueue
    tokens: JwtCodec
    signer: UrlSigner
    #: checks the URLs ``signer`` signed, expiry by the process's clock
    signed_urls: SignedUrlVerifier
    metrics: PrometheusMetrics
    probing: ProbeService
    ingest: IngestService
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
    #: where the legacy endpoint spools request bodies (swept with the scratch files)
    request_bodies: RequestBodyFiles
    health: HealthService
    #: webhook endpoints and deliveries (the HTTP side), the deliverer, jobs listed, replay
    webhooks: WebhookService
    deliverer: WebhookDeliverer
    webhook_sender: HttpxWebhookSender
    job_listing: JobListing
    replay: ReplayService
    #: per-organisation request buckets; ``None`` when ``HEIMDEX_RATE_LIMIT_PER_SECOND`` is 0
    rate_limiter: RateLimiter | None = None
    #: storyboards and posters (PyAV, in the thumbnailer's decode pool or one of its own)
    picture_maker: PyAVPictureMaker | None = None
    #: the API's hot reads on asyncpg, when the database is PostgreSQL (closed at shutdown)
    reads: PgCatalogueReads | None = None

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
        if self.database.backend == "sqlite":
            # The embedded default migrates itself; PostgreSQL is migrated by its owner role
            # (`heimdex db upgrade`), never by the service's runtime role.
            await run_blocking(
                upgrade,
                self.settings.resolved_database_url,
                "head",
                self.settings.database.migrations_dir,
            )
        else:
            await self._check_tenancy()
        if isinstance(self.queue, RedisJobQueue):
            await check_redis(self.queue.broker, self.settings)
        if start_queue:
            await self.queue.startup()

    async def warm_decoders(self, *, probing: bool, thumbnails: bool) -> None:
        """Start the decode processes this process will use now rather than on the first probe
        or job: a fresh one imports FFmpeg, which takes seconds on a small machine. A failure
        is logged, not raised: the first real call starts them again, or says why it cannot."""
        started = time.perf_counter()
        # The prober first: a commit waits on it, a job can wait a little.
        parts: dict[str, object] = {"prober": self.prober} if probing else {}
        if thumbnails:
            parts["thumbnailer"] = self.thumbnailer
            if self.picture_maker is not None:
                parts["pictures"] = self.picture_maker
        for name, part in parts.items():
            warm = getattr(part, "warm", None)  # the PyAV adapters; subprocess ones need none
            if warm is None:
                continue
            try:
                await warm()
            except HeimdexError as exc:
                log.warning("decoders_not_warmed", part=name, error=exc.message)
                return
        log.info("decoders_warm", seconds=round(time.perf_counter() - started, 3))

    async def _check_tenancy(self) -> None:
        await check_tenancy(self.database, self.settings)

    async def aclose(self) -> None:
        await self.deliverer.aclose()
        await self.webhook_sender.aclose()
        await self.queue.shutdown()
        if self.rate_limiter is not None:
            await self.rate_limiter.aclose()
        if self.reads is not None:
            await self.reads.aclose()
        await self.database.dispose()
        for decoder in (self.prober, self.thumbnailer, self.picture_maker):
            close = getattr(decoder, "close", None)
            if close is not None:  # the PyAV adapters' decode pools
                await close()
        close_storage = getattr(self.storage, "aclose", None)
        if close_storage is not None:  # S3's HTTP connections
            await close_storage()


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
        broker = build_redis_broker(settings.redis.url, queue_name=settings.redis.queue_name)
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


def build_probe_slots(settings: Settings) -> ProbeSlots:
    """Each organisation's concurrent probes in this API process (``heimdex serve`` runs one)."""
    return ProbeSlots(
        per_org=settings.probe.max_per_org,
        wait_seconds=settings.probe.wait_seconds,
        retry_after=math.ceil(max(settings.probe.wait_seconds, 1.0)),
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


def build(settings: Settings, broker: HeimdexStreamBroker | None = None) -> Services:
    """Build every adapter and use case from the settings. Connects to nothing yet.

    ``broker`` is the worker process's own (with its task registered); the API builds one.
    """
    clock = SystemClock()
    database = Database(settings.resolved_database_url)
    uow = SqlUnitOfWorkFactory(database)
    # PostgreSQL's reads skip the unit of work (docs/architecture.md, "Reads"); SQLite's use it.
    reads = (
        PgCatalogueReads(settings.resolved_database_url, pool_size=settings.database.read_pool_size)
        if database.is_postgres
        else None
    )
    signer = build_signer(settings)
    storage = build_storage(settings, signer)
    prober = build_prober(settings)
    request_bodies = RequestBodyFiles(settings.data_dir / "tmp")
    metrics = PrometheusMetrics()
    # The use cases get timed media ports; health checks and shutdown use the adapters as built.
    measured_prober = MeasuredProber(prober, metrics)
    probe_slots = build_probe_slots(settings)
    job_runner: JobRunner

    async def run_job(
        job_id: UUID,
    ) -> None:  # bound late: the queue and the runner need each other
        await job_runner.run(job_id)

    queue: InProcessJobQueue | RedisJobQueue
    if settings.jobs.queue_backend == "redis":
        queue = RedisJobQueue(
            broker or build_redis_broker(settings.redis.url, queue_name=settings.redis.queue_name)
        )
    else:
        # As many jobs at once as the decoder can work on: more would wait inside it, where
        # organisations cannot take turns (``JobRunner.run``).
        queue = InProcessJobQueue(run_job, concurrency=settings.decode.workers)
    thumbnailer = build_thumbnailer(settings)
    picture_maker = build_picture_maker(settings, thumbnailer)
    job_directory = SqlJobDirectory(database)
    policy = job_policy(settings)
    job_runner = JobRunner(
        uow,
        job_directory,
        queue,
        storage,
        MeasuredThumbnailer(thumbnailer, metrics),
        clock,
        policy,
        prober_name=prober.name,
        metrics=metrics,
        pictures=picture_maker,
    )
    checks: dict[str, HealthCheck] = {
        "database": database,
        "storage": storage,
        "prober": prober,
        "queue": queue,
        "thumbnailer": thumbnailer,
    }
    webhook_directory = SqlWebhookDirectory(database)
    webhook_sender = HttpxWebhookSender(
        timeout=settings.webhooks.timeout_seconds,
        allow_http=not settings.is_production,
        allow_private=settings.webhooks.allow_private_networks,
    )
    deliverer = WebhookDeliverer(
        uow,
        webhook_directory,
        webhook_sender,
        clock,
        metrics,
        DeliveryPolicy(
            concurrency=settings.webhooks.concurrency,
            per_endpoint=settings.webhooks.endpoint_concurrency,
            timeout=timedelta(seconds=settings.webhooks.timeout_seconds),
            disable_after=timedelta(seconds=settings.webhooks.disable_after_seconds),
        ),
    )
    # An event committed in a process that delivers goes out at once, not at the next sweep.
    uow.on_outbox_commit = deliverer.wake
    if database.backend == "postgresql":
        checks["tenancy"] = TenancyCheck(database)
    if isinstance(queue, RedisJobQueue):
        checks["queue_config"] = RedisConfigCheck(queue.broker)
    return Services(
        settings=settings,
        database=database,
        storage=storage,
        prober=prober,
        thumbnailer=thumbnailer,
        queue=queue,
        tokens=build_tokens(settings, clock),
        signer=signer,
        signed_urls=SignedUrlVerifier(signer, clock),
        metrics=metrics,
        probing=ProbeService(uow, storage, measured_prober, probe_slots),
        ingest=IngestService(
            uow,
            storage,
            measured_prober,
            clock,
            IngestLimits(
                max_upload_size_bytes=settings.uploads.max_size_bytes,
                upload_url_ttl=timedelta(seconds=settings.uploads.url_ttl_seconds),
                upload_stall=timedelta(seconds=settings.uploads.stall_seconds),
                storage_quota_bytes=settings.limits.org_storage_quota_bytes,
            ),
            metrics=metrics,
            slots=probe_slots,
        ),
        assets=AssetService(uow, storage, reads),
        idempotency=IdempotencyService(
            SqlIdempotencyStore(database, clock=clock),
            clock,
            ttl=timedelta(seconds=settings.idempotency.ttl_seconds),
            lease=timedelta(seconds=settings.idempotency.lease_seconds),
        ),
        jobs=JobRequests(uow, job_directory, queue, clock, policy, reads),
        job_runner=job_runner,
        sidecars=SidecarService(uow, storage, clock, settings.storage.download_url_ttl_seconds),
        pictures=PictureService(
            uow, storage, clock, settings.storage.download_url_ttl_seconds, picture_maker
        ),
        picture_maker=picture_maker,
        abandoned_uploads=AbandonedUploadSweeper(
            uow,
            SqlUploadDirectory(database),
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
            also=[request_bodies],
        ),
        request_bodies=request_bodies,
        health=HealthService(checks),
        webhooks=WebhookService(
            uow,
            clock,
            WebhookPolicy(
                allow_http=not settings.is_production,
                allow_private=settings.webhooks.allow_private_networks,
                secret_grace=timedelta(seconds=settings.webhooks.secret_grace_seconds),
            ),
        ),
        deliverer=deliverer,
        webhook_sender=webhook_sender,
        job_listing=JobListing(uow, reads),
        replay=ReplayService(uow, webhook_directory, webhook_directory, clock),
        rate_limiter=build_rate_limiter(settings),
        reads=reads,
    )
