"""Ports: what the application needs from the outside world. Adapters implement them.

Every port has one contract test suite under ``tests/contract/`` that each adapter passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol
from uuid import UUID

import msgspec

from heimdex.domain.declared import Declared
from heimdex.domain.frames import FrameFingerprint, FrameMatch, FramePair
from heimdex.domain.idempotency import (
    ClaimWindow,
    IdempotencyClaim,
    IdempotencyScope,
    StoredResponse,
)
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import (
    Asset,
    AssetFilter,
    AssetPage,
    Job,
    JobFilter,
    JobKind,
    JobPage,
    JobStatus,
    PageCursor,
    Pictures,
    StoryboardSpec,
    Thumbnail,
    ThumbnailSpec,
    Upload,
)
from heimdex.domain.rate_limit import RateDecision
from heimdex.domain.replay import JobReplayFilter
from heimdex.domain.resumable import ChunkChecksum
from heimdex.domain.webhooks import (
    DeliveryFilter,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)


class Clock(Protocol):
    """The time, injectable so tests can move it."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class HealthCheck(Protocol):
    """Anything the admin health endpoint can ask "do you work?"."""

    async def check(self) -> None:
        """Return when healthy; raise with a readable message when not."""
        ...


class StoredObject(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    size_bytes: int
    sha256: str | None = None


class LocalCopy(msgspec.Struct, frozen=True, kw_only=True):
    """An object's bytes in a local file, with the size and sha256 of exactly those bytes."""

    path: Path
    #: computed from the bytes read into ``path``, never taken from the store's metadata
    stored: StoredObject


class ScratchFile(msgspec.Struct, frozen=True, kw_only=True):
    """A temporary file (or directory of them) a process left, as the sweep removed it."""

    path: str
    size_bytes: int
    #: when it was last written: a live write or copy keeps this recent
    modified_at: datetime


class UploadTarget(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how a client sends an upload's bytes: a presigned request."""

    url: str
    method: str
    headers: dict[str, str]


class PartTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One part of a multipart upload: the presigned ``PUT`` of exactly ``size`` bytes."""

    part_number: int
    url: str
    size: int


class PartETag(msgspec.Struct, frozen=True, kw_only=True):
    """A part as the store answered its ``PUT``: its number and ``ETag``."""

    part_number: int
    etag: str


class MultipartUploads(Protocol):
    """Uploads the client sends straight to the store in parts (presigned S3 UploadPart URLs),
    completed by the API. Only stores that have them (S3); a session is abandoned with
    ``ResumableWrites.discard_resumable``, as a resumable write's is."""

    async def begin_multipart(self, upload: Upload) -> str:
        """Start a multipart upload of the slot's key; answers its session handle (which names
        the part size too)."""
        ...

    async def multipart_targets(self, upload: Upload, session: str) -> list[PartTarget]:
        """The presigned ``PUT`` of each part, in order, valid until the slot expires; each
        binds its part's length. Every part but the last is the session's part size."""
        ...

    async def complete_multipart(
        self, key: str, session: str, total: int, parts: Sequence[PartETag] | None
    ) -> None:
        """Make the object under ``key`` of the parts (``parts``, or when ``None`` the ones the
        store lists). Raises ``UploadPartsMissing`` when a part is missing, of another size,
        or its ETag is not the stored part's (the upload stays open: the client may send it and
        try again), ``UploadNotReceived`` when the multipart upload is gone with no object."""
        ...


class UrlSigner(Protocol):
    """Expiring signatures for URLs the service serves itself."""

    def sign(self, method: str, path: str, org_id: str, expires: int) -> str: ...

    def verify(self, method: str, path: str, org_id: str, expires: int, signature: str) -> bool: ...


class ScratchArea(Protocol):
    """Where a process keeps temporary files while it works: the storage adapters' writes in
    flight and copies, the legacy endpoint's request bodies."""

    async def sweep_scratch(self, modified_before: datetime) -> list[ScratchFile]:
        """Remove the area's scratch files — writes in flight, temporary copies — last
        written before ``modified_before``: what a process killed mid-write left behind.
        Answers what was removed.

        Never a stored object, and never a scratch file written since: a live write keeps
        touching its file, so the cutoff must lie further back than any running request may
        leave one untouched. Safe to run from several processes at once.
        """
        ...


class ResumableWrites(Protocol):
    """Writing one object in pieces over many requests (tus PATCHes), resumable after a cut-off
    request or a restart. The caller keeps the offset (the slot's row); the store keeps the
    bytes up to it and a session handle the caller stores with the offset."""

    async def begin_resumable(self, key: str) -> str:
        """Start a resumable write of ``key``; answers its session handle."""
        ...

    async def append_resumable(
        self,
        key: str,
        session: str,
        *,
        offset: int,
        total: int,
        chunks: AsyncIterable[bytes],
        checksum: ChunkChecksum | None = None,
    ) -> int:
        """Append ``chunks`` at ``offset`` (the recorded offset: whatever the store still holds
        past it, from an append cut off before it was recorded, is dropped first) and answer
        the new offset, every byte before it durable.

        All or nothing: when ``chunks`` raises, a byte would pass ``total``
        (``UploadTooLarge``), or the bytes do not match ``checksum``
        (``ChunkChecksumMismatch``), nothing of this append counts and the error is raised.
        The append that reaches ``total`` makes the object under ``key`` whole, atomically.
        """
        ...

    async def discard_resumable(self, key: str, session: str) -> None:
        """Drop an unfinished resumable write's bytes; one already gone is fine."""
        ...


class Storage(HealthCheck, ScratchArea, ResumableWrites, Protocol):
    """Object storage addressed by keys from ``heimdex.domain.storage_keys``.

    Writes are atomic: a reader sees the whole object or nothing.
    """

    async def write_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, declared: Declared | None = None
    ) -> StoredObject:
        """Store the chunks under ``key`` atomically, hashing as it goes (sha256).

        Checked against ``declared`` (``Declared.check_so_far`` as bytes arrive, then
        ``Declared.check``): a byte past the declared size raises ``UploadTooLarge`` at once, a
        shorter stream ``LengthMismatch``, another digest ``ChecksumMismatch``. Whatever fails,
        nothing is kept (an older object stays whole).
        """
        ...

    async def write_bytes(self, key: str, data: bytes) -> StoredObject:
        """Store a small object atomically."""
        ...

    async def stat(self, key: str) -> StoredObject | None:
        """Size of the object (and its sha256 when the store keeps one, unverified), or
        ``None`` when it does not exist. Cheap: a HEAD, never a read of the bytes."""
        ...

    def local_copy(self, key: str) -> AbstractAsyncContextManager[LocalCopy]:
        """A local file with the object's bytes, and their size and sha256, for as long as the
        context is open: one read of the object both hashes it and fills the file, so what is
        checked is exactly what the file holds (never trusting the store's metadata).

        The file may be the stored object itself (local storage): never write to it. A
        temporary copy is removed when the context exits, however it exits. Raises
        ``SourceNotFound`` when the object does not exist.
        """
        ...

    def local_path(self, key: str) -> AbstractAsyncContextManager[Path]:
        """A local file with the object's bytes for as long as the context is open, when they
        need no checking (``local_copy`` hashes them too).

        The same rules as ``local_copy``: maybe the object itself, a copy removed on exit;
        raises ``SourceNotFound`` when the object does not exist.
        """
        ...

    def read_chunks(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in fixed-size chunks."""
        ...

    def list_names(self, prefix: str) -> AsyncIterator[str]:
        """What lies directly under ``prefix`` (which ends in ``/``), one level deep, like
        ``ls``: each object's last segment, and each deeper level once, as its segment with
        a ``/`` after it. In no promised order; nothing when nothing is there."""
        ...

    async def delete(self, key: str) -> None:
        """Remove one object; missing is fine. Raises ``StorageError`` when the store fails."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; answers how many. Raises ``StorageError``
        when the store fails (some may be gone by then)."""
        ...

    def uri_for(self, key: str) -> str:
        """The ``source_uri`` clients see for a key (an identifier, never opened as given)."""
        ...

    async def download_url(self, key: str, base_url: str, expires: int) -> str:
        """A URL that fetches the object without a token until ``expires`` (epoch seconds).

        Asynchronous because signing may first have to refresh the store's credentials.
        """
        ...

    async def upload_target(self, upload: Upload, base_url: str) -> UploadTarget:
        """A presigned request that stores the upload's bytes, valid until it expires.

        It binds the declared length and content type (and sha256, when declared): a request
        without exactly the answered ``headers`` is refused. ``base_url`` is where this API is
        reached, for backends whose target is the API itself.
        """
        ...


class Prober(HealthCheck, Protocol):
    """Reads a media file's container, streams and chapters."""

    name: str

    async def probe(self, path: Path) -> MediaInfo:
        """Describe the file at ``path``.

        Raises ``InvalidMedia`` (or ``ProbeTimeout``) for anything that is not readable media, and
        never opens another file or the network on the file's behalf.
        """
        ...


class Thumbnailer(HealthCheck, Protocol):
    """Makes still images of a video at evenly spread times."""

    name: str

    async def thumbnails(
        self, path: Path, media: MediaInfo, spec: ThumbnailSpec
    ) -> Sequence[Thumbnail]:
        """Upright thumbnails of the first video stream; empty for audio-only media."""
        ...


class PictureMaker(HealthCheck, Protocol):
    """Makes the pictures that stand for a video besides its thumbnails: a storyboard (tiles
    for a seek bar, on sprite sheets) and a poster."""

    name: str

    async def pictures(
        self,
        path: Path,
        media: MediaInfo,
        storyboard: StoryboardSpec | None,
        poster_time: float | None,
    ) -> Pictures:
        """The storyboard of ``storyboard`` (none when ``None``) and a poster: the frame shown
        at ``poster_time``, or the automatic choice when ``None``. Both ``None`` for media with
        no video."""
        ...


class JobQueue(HealthCheck, Protocol):
    """Carries job ids to workers. Delivery is at least once; the job row is the truth."""

    async def enqueue(self, job_id: UUID) -> None:
        """Hand the job to a worker (now or, on a broker outage, raise so the sweep retries)."""
        ...

    async def oldest_waiting(self) -> datetime | None:
        """When the oldest id that waits for a worker was handed to the queue: not taken yet, or
        taken by a worker that is gone (the queue gives it to another). An id a live worker is
        running does not wait, however long it runs. ``None`` when none waits. Ids leave in
        about the order they came, so a queued job handed over before that time has no message
        waiting any more: it was lost (a Redis that restarted empty). One handed over since may
        simply be waiting its turn.

        Raises ``QueueUnavailable`` when the queue cannot say (its broker is out, or it was not
        started), as ``enqueue`` and ``check`` do."""
        ...


class UploadRepository(Protocol):
    """Upload slots of one organisation (the unit of work's)."""

    async def add(self, upload: Upload) -> None: ...

    async def get(self, upload_id: UUID) -> Upload | None: ...

    async def get_by_source_uri(self, source_uri: str) -> Upload | None: ...

    async def claim_for_upload(
        self, upload_id: UUID, now: datetime, stale_before: datetime
    ) -> bool:
        """Atomically move a ``pending`` slot (or one whose upload stalled before
        ``stale_before``) to ``uploading``; ``False`` when another state holds it."""
        ...

    async def reserved_bytes(self, now: datetime) -> int:
        """Declared sizes of the slots not committed yet that still hold or may still receive
        bytes: not expired at ``now``, or already received (the storage quota's pending part)."""
        ...

    async def save(self, upload: Upload) -> None: ...

    async def open_resumable(self, now: datetime) -> int:
        """How many resumable slots are unfinished (nothing received whole) and unexpired."""
        ...

    async def delete(self, upload_id: UUID) -> bool: ...

    async def delete_abandoned(self, upload_id: UUID, expired_before: datetime) -> Upload | None:
        """Delete the upload if it is still not committed and its slot expired before
        ``expired_before``; answers what was deleted. One conditional statement, so a commit
        racing the sweep either wins (nothing is deleted) or finds its slot gone."""
        ...


class AssetRepository(Protocol):
    """Assets of one organisation (the unit of work's): another org's asset is ``None``."""

    async def add(self, asset: Asset) -> None:
        """Raises ``Conflict`` when the upload already has an asset."""
        ...

    async def get(self, asset_id: UUID) -> Asset | None: ...

    async def get_by_upload(self, upload_id: UUID) -> Asset | None: ...

    async def total_size(self) -> int:
        """Sum of the organisation's assets' sizes in bytes (the storage quota's stored part)."""
        ...

    async def list(
        self, filters: AssetFilter, *, limit: int, after: PageCursor | None
    ) -> AssetPage:
        """Newest first; ``after`` continues where a previous page ended."""
        ...

    async def save(self, asset: Asset) -> None: ...

    async def delete(self, asset_id: UUID) -> bool: ...

    async def existing(self, asset_ids: Sequence[UUID]) -> set[UUID]:
        """Which of ``asset_ids`` are the organisation's assets (the others are gone, or
        were never its own)."""
        ...


class JobRepository(Protocol):
    """Job rows of one organisation, the source of truth for background work."""

    async def add(self, job: Job) -> None: ...

    async def get(self, job_id: UUID) -> Job | None: ...

    async def save(self, job: Job) -> None: ...

    async def latest_for_asset(self, asset_id: UUID, kind: JobKind) -> Job | None:
        """The newest job of this kind for the asset, whatever its status."""
        ...

    async def count_active(self) -> int:
        """How many of the organisation's jobs are ``queued`` or ``running``."""
        ...

    async def claim(
        self, job_id: UUID, owner: str, now: datetime, lease_until: datetime
    ) -> Job | None:
        """One conditional update: a job that is ``queued`` and due, or ``running`` with an
        expired lease, becomes ``running`` under ``owner`` with one more attempt. ``None`` when
        the job is not claimable (done, failed, not due, or leased by a live worker)."""
        ...

    async def heartbeat(
        self, job_id: UUID, owner: str, lease_until: datetime, progress: float
    ) -> bool:
        """Extend the lease; ``False`` when ``owner`` no longer holds it."""
        ...

    async def finish(self, job: Job, owner: str) -> bool:
        """Save the job's outcome only if ``owner`` still holds its lease."""
        ...

    async def list(self, filters: JobFilter, *, limit: int, after: PageCursor | None) -> JobPage:
        """Newest first, ties by id; ``after`` continues where a previous page ended."""
        ...


class JobInTurn(msgspec.Struct, frozen=True, kw_only=True):
    """A job picked to run next, and when its own message was handed to the queue."""

    job_id: UUID
    org_id: str
    enqueued_at: datetime | None


class JobDirectory(Protocol):
    """The few questions about jobs that cross organisations: a worker only gets a job id, and
    the sweep looks at every organisation's due jobs. Answers ids, never job contents."""

    async def org_of(self, job_id: UUID) -> str | None: ...

    async def due(
        self, now: datetime, enqueued_before: datetime, limit: int
    ) -> list[tuple[UUID, str]]:
        """(job id, org id) of queued jobs that are due and were not enqueued since
        ``enqueued_before``, and of running jobs whose lease expired."""
        ...

    async def mark_enqueued(self, job_id: UUID, org_id: str, now: datetime | None) -> None:
        """Record when the job's id was handed to the queue (``None``: it holds no message for
        it, so the sweep hands it over)."""
        ...

    async def next_in_turn(self, now: datetime, prefer_org: str) -> JobInTurn | None:
        """The claimable job (queued and due, or running with an expired lease) a free worker
        slot should run next, so that organisations take turns: one of the organisation with
        the fewest jobs running; among those tied ``prefer_org`` (the organisation whose message
        the slot holds), then the oldest job. ``None`` when no job is claimable."""
        ...

    async def active_counts(self) -> dict[JobStatus, int]:
        """How many jobs are ``queued`` and ``running`` across every organisation (the queue
        depth). Counts only: cheap, bounded by the active jobs, never a finished one."""
        ...


class UploadDirectory(Protocol):
    """The one question about uploads that crosses organisations: which slots were abandoned.
    Answers ids, never upload contents."""

    async def abandoned(self, expired_before: datetime, limit: int) -> list[tuple[UUID, str]]:
        """(upload id, org id) of uploads never committed whose slot expired before
        ``expired_before``, oldest first."""
        ...


JobOutcome = Literal["succeeded", "failed", "retry"]


class WebhookEndpointRepository(Protocol):
    """Webhook endpoints of one organisation (the unit of work's)."""

    async def add(self, endpoint: WebhookEndpoint) -> None: ...

    async def get(self, endpoint_id: UUID) -> WebhookEndpoint | None: ...

    async def list_all(self) -> list[WebhookEndpoint]:
        """Oldest first."""
        ...

    async def subscribed(self, event_type: WebhookEventType) -> list[WebhookEndpoint]:
        """The enabled endpoints that want ``event_type``: who gets a delivery of it."""
        ...

    async def save(self, endpoint: WebhookEndpoint) -> None:
        """Raises ``NotFound`` when it is not this organisation's."""
        ...

    async def delete(self, endpoint_id: UUID) -> bool:
        """Delete the endpoint and its deliveries."""
        ...


class DeliveryPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[WebhookDelivery]
    next_cursor: PageCursor | None


class WebhookDeliveryRepository(Protocol):
    """Deliveries of one organisation: the webhook outbox, written in the transaction of the
    change that caused each event."""

    async def add(self, delivery: WebhookDelivery) -> None: ...

    async def get(self, delivery_id: UUID) -> WebhookDelivery | None: ...

    async def list_for_endpoint(
        self,
        endpoint_id: UUID,
        *,
        status: DeliveryStatus | None,
        limit: int,
        after: PageCursor | None,
    ) -> DeliveryPage:
        """Newest first, ties by id."""
        ...

    async def claim(
        self, delivery_id: UUID, owner: str, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        """One conditional update: a ``pending`` delivery that is due and not leased by a live
        worker gets one more attempt under ``owner``. ``None`` when it is not claimable."""
        ...

    async def claim_many(
        self, delivery_ids: Sequence[UUID], owner: str, now: datetime, lease_until: datetime
    ) -> list[WebhookDelivery]:
        """``claim`` for several at once, in one statement: answers those it claimed."""
        ...

    async def finish(self, delivery: WebhookDelivery, owner: str) -> bool:
        """Save the attempt's outcome only if ``owner`` still holds the lease."""
        ...

    async def requeue(self, delivery_id: UUID, now: datetime) -> WebhookDelivery | None:
        """Make a ``failed`` (or ``pending``) delivery due now with a fresh schedule, keeping its
        ``webhook-id``; ``None`` when there is no such delivery or it already succeeded."""
        ...


class WebhookDirectory(Protocol):
    """The questions about deliveries that cross organisations: which are due, how many wait.
    Answers ids and counts, never payloads."""

    async def due(
        self, now: datetime, per_endpoint: int, per_org: int, limit: int
    ) -> list[tuple[UUID, str, UUID]]:
        """(delivery id, org id, endpoint id) of pending deliveries that are due and not leased
        by a live worker: at most ``per_endpoint`` of any one endpoint and ``per_org`` of any
        one organisation, in turns (every organisation's oldest, then every one's second, …;
        oldest first within a turn), so one endpoint's or one organisation's backlog never
        hides another's."""
        ...

    async def pending(self) -> tuple[int, datetime | None]:
        """How many deliveries are pending, and when the oldest was created."""
        ...

    async def failed(self, filters: DeliveryFilter, limit: int) -> list[tuple[UUID, str]]:
        """(delivery id, org id) of ``failed`` deliveries matching ``filters``, oldest first."""
        ...


class JobReplayDirectory(Protocol):
    """Which jobs ``heimdex replay`` may requeue, across organisations (ids only)."""

    async def replayable_jobs(self, filters: JobReplayFilter, limit: int) -> list[tuple[UUID, str]]:
        """(job id, org id) of failed or stuck jobs matching ``filters``, oldest first."""
        ...


class WebhookResponse(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt came to. ``status_code`` is ``None`` when no answer arrived."""

    status_code: int | None
    #: ``None`` on a 2xx; else a stable code: ``http_error``, ``redirect``, ``timeout``,
    #: ``connection_error``, ``webhook_url_forbidden``, ``dns_error``
    error_code: str | None
    #: the start of the receiver's answer or the error's text (at most 1 KB is kept)
    detail: str = ""


class WebhookSender(Protocol):
    """Sends one signed request to a receiver, safely: resolves its name, refuses forbidden
    addresses, connects to the address it checked, follows no redirect, gives up after the
    timeout. Never raises for the receiver's failures: they are answered."""

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> WebhookResponse: ...


class RateLimiter(Protocol):
    """Per-key token buckets (``heimdex.domain.rate_limit``); the key is an organisation."""

    async def acquire(self, key: str) -> RateDecision:
        """Take one token from ``key``'s bucket. Never raises for its own failures: a limiter
        that cannot answer (its store is down) allows the request rather than stopping the API."""
        ...

    async def aclose(self) -> None:
        """Release what the limiter holds (connections); called once at shutdown."""
        ...


class Metrics(Protocol):
    """What the use cases report for monitoring; an adapter exports it (Prometheus).

    Every label value comes from a small fixed set (job kinds, outcomes, error codes, adapter
    names) and never names an organisation, asset or job: series stay few, tenants private.
    """

    def job_finished(self, kind: JobKind, outcome: JobOutcome, seconds: float) -> None:
        """One run of a job ended: ``succeeded``, ``failed`` for good, or handed back for a
        ``retry`` (a transient error, or the worker stopping)."""
        ...

    def upload_received(self, size_bytes: int) -> None:
        """The API stored an upload's bytes itself (the PUT to a local upload target)."""
        ...

    def upload_committed(self, size_bytes: int) -> None:
        """An upload became an asset, whichever way its bytes reached storage."""
        ...

    def probe_finished(self, prober: str, outcome: str, seconds: float) -> None:
        """One probe ended: ``ok`` or the error's stable code (``invalid_media``, …)."""
        ...

    def thumbnails_finished(self, thumbnailer: str, outcome: str, seconds: float) -> None:
        """One file's thumbnails were made (``ok``) or failed with the error's code."""
        ...

    def webhook_attempted(self, event_type: str, outcome: str, seconds: float) -> None:
        """One delivery attempt ended: ``succeeded``, ``retry`` or ``failed`` for good."""
        ...


class FrameRepository(Protocol):
    """The organisation's fingerprinted frames (``heimdex.domain.frames``) and the exact
    Hamming search over them: every answer holds every frame within ``max_distance`` (at most
    ``MAX_DISTANCE``) and no other, in the order of ``order_key``."""

    async def replace(self, asset_id: UUID, frames: Sequence[FrameFingerprint]) -> None:
        """Make ``frames`` the asset's fingerprinted frames (a re-run replaces, never adds)."""
        ...

    async def of_asset(self, asset_id: UUID) -> list[FrameFingerprint]:
        """The asset's frames, by time."""
        ...

    async def nearest(self, fingerprint: int, *, max_distance: int, limit: int) -> list[FrameMatch]:
        """The ``limit`` frames nearest ``fingerprint``, best first, within ``max_distance``."""
        ...

    async def shared(self, asset_id: UUID, *, max_distance: int) -> list[FramePair]:
        """Every pair of a frame of the asset and a frame of another asset within
        ``max_distance``, by (time, other asset id, other time)."""
        ...

    async def unindexed_assets(self, *, after: UUID | None, limit: int) -> list[UUID]:
        """Ready assets with a video stream and no fingerprinted frame, by id after ``after``:
        what ``heimdex reindex`` fingerprints."""
        ...


class FrameDirectory(Protocol):
    """Across organisations: the assets ``heimdex reindex`` fingerprints. Ids only."""

    async def unindexed(
        self, *, after: tuple[str, UUID] | None, limit: int
    ) -> list[tuple[str, UUID]]:
        """(org_id, asset id) of ready video assets without a fingerprinted frame, ordered,
        after ``after``."""
        ...


class FrameFingerprinter(Protocol):
    """Fingerprints of search images (``POST /v1/search/frames`` with an image body), decoded
    away from the API process; the frames of videos are fingerprinted by the thumbnailer and
    the picture maker as they make them."""

    name: str

    async def fingerprint(self, data: bytes) -> int:
        """The fingerprint of one JPEG, PNG or WebP picture; ``InvalidImage`` (and its kinds)
        for anything else."""
        ...


class UnitOfWork(Protocol):
    """One transaction scoped to one organisation: ``async with uow: …; await uow.commit()``.

    Leaving the block without ``commit()`` rolls back. On PostgreSQL the organisation is also
    set for row-level security, so even a query that forgot its filter sees only this org's rows.
    """

    uploads: UploadRepository
    assets: AssetRepository
    jobs: JobRepository
    webhooks: WebhookEndpointRepository
    deliveries: WebhookDeliveryRepository
    frames: FrameRepository

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def commit(self) -> None: ...

    async def lock_org(self) -> None:
        """Hold the organisation's lock until this unit of work ends. Requests that read and
        then write on what they read — count for a quota, then add; look for an asset's active
        job, then start one — run one after another, so no two can both see room for one more
        or both find no job and start two."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, org_id: str) -> UnitOfWork: ...


class CatalogueReads(Protocol):
    """The API's hot reads, each its own read-only transaction of one organisation: what
    ``uow.assets.get``/``list`` and ``uow.jobs.get``/``list`` answer, without a unit of work
    around them. Another organisation's asset or job is ``None`` (and absent from its pages);
    on PostgreSQL row-level security applies as in the unit of work."""

    async def asset(self, org_id: str, asset_id: UUID) -> Asset | None: ...

    async def assets(
        self, org_id: str, filters: AssetFilter, *, limit: int, after: PageCursor | None
    ) -> AssetPage:
        """Newest first, ties by id; ``after`` continues where a previous page ended."""
        ...

    async def job(self, org_id: str, job_id: UUID) -> Job | None: ...

    async def jobs(
        self, org_id: str, filters: JobFilter, *, limit: int, after: PageCursor | None
    ) -> JobPage:
        """Newest first, ties by id; ``after`` continues where a previous page ended."""
        ...

    async def aclose(self) -> None:
        """Release what the reads hold (connections); called once at shutdown."""
        ...


class IdempotencyStore(Protocol):
    """Claims and remembers ``Idempotency-Key``s; each call is its own committed transaction."""

    async def claim(
        self, scope: IdempotencyScope, fingerprint: str, window: ClaimWindow
    ) -> IdempotencyClaim:
        """Claim with one atomic insert (never select-then-insert); a claim whose lease ran out
        is taken over."""
        ...

    async def complete(self, scope: IdempotencyScope, response: StoredResponse) -> None:
        """Store the first answer for replays."""
        ...

    async def release(self, scope: IdempotencyScope) -> None:
        """Forget a claim whose request must not be remembered (it failed validation)."""
        ...
