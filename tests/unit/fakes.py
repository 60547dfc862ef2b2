"""In-memory fakes of the ports, for unit tests of the application layer only.

The database fake applies changes on ``commit()`` and drops them otherwise, like a transaction.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import tempfile
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple, TypeVar
from uuid import UUID

import msgspec
import structlog

from heimdex.domain.declared import Declared
from heimdex.domain.errors import (
    ChunkChecksumMismatch,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    InvalidMedia,
    NotFound,
    QueueUnavailable,
    SourceNotFound,
    StorageError,
    UploadTooLarge,
)
from heimdex.domain.frames import (
    MAX_DISTANCE,
    FrameFingerprint,
    FrameMatch,
    FramePair,
    distance,
    order_key,
)
from heimdex.domain.media import MediaInfo, StreamInfo
from heimdex.domain.model import (
    Asset,
    AssetFilter,
    AssetPage,
    AssetStatus,
    Job,
    JobFilter,
    JobKind,
    JobPage,
    JobStatus,
    PageCursor,
    Thumbnail,
    ThumbnailSpec,
    Upload,
    UploadStatus,
)
from heimdex.domain.ports import (
    AssetRepository,
    Clock,
    DeliveryPage,
    FrameRepository,
    JobInTurn,
    JobOutcome,
    JobRepository,
    LocalCopy,
    ScratchFile,
    StoredObject,
    UploadRepository,
    UploadTarget,
    WebhookDeliveryRepository,
    WebhookEndpointRepository,
    WebhookResponse,
)
from heimdex.domain.replay import JobReplayFilter
from heimdex.domain.resumable import ChunkChecksum
from heimdex.domain.storage_keys import validate_key
from heimdex.domain.webhooks import (
    DeliveryFilter,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


_CHUNK_SIZE = 1024 * 1024


@contextmanager
def _temporary_file(key: str, data: bytes) -> Iterator[Path]:
    """``data`` in a file named like the key's last segment, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="heimdex-fake-") as directory:
        path = Path(directory) / key.rsplit("/", 1)[-1]
        path.write_bytes(data)
        yield path


class FakeStorage:
    """Objects in a dict; ``mem://KEY`` URIs; local copies are temporary files."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        #: keys handed out as local files (``local_copy`` or ``local_path``), in order
        self.opened: list[str] = []
        #: scratch files a crashed write would have left (the adapters' own are tested for real)
        self.scratch: list[ScratchFile] = []
        #: resumable writes in progress: session -> bytes so far (maybe past the offset)
        self.partials: dict[str, bytearray] = {}

    async def begin_resumable(self, key: str) -> str:
        session = f"{validate_key(key)}#{len(self.partials)}"
        self.partials[session] = bytearray()
        return session

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
        partial = self.partials.get(session)
        if partial is None or len(partial) < offset:
            raise StorageError(f"the resumable write of {key!r} is lost")
        data = bytearray()
        async for chunk in chunks:
            data += chunk
            if offset + len(data) > total:
                raise UploadTooLarge(f"more than {total} bytes")
        if checksum is not None and hashlib.new(checksum.algorithm, data).digest() != (
            checksum.digest
        ):
            raise ChunkChecksumMismatch("the chunk does not match its checksum")
        del partial[offset:]
        partial += data
        if len(partial) == total:
            self.objects[validate_key(key)] = bytes(self.partials.pop(session))
        return offset + len(data)

    async def discard_resumable(self, key: str, session: str) -> None:
        self.partials.pop(session, None)

    async def write_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, declared: Declared | None = None
    ) -> StoredObject:
        declared = declared or Declared()
        data = b""
        async for chunk in chunks:
            data += chunk
            declared.check_so_far(len(data))
        declared.check(len(data), hashlib.sha256(data).hexdigest())
        return await self.write_bytes(key, data)

    async def write_bytes(self, key: str, data: bytes) -> StoredObject:
        self.objects[validate_key(key)] = data
        return StoredObject(key=key, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    async def stat(self, key: str) -> StoredObject | None:
        data = self.objects.get(validate_key(key))
        return None if data is None else StoredObject(key=key, size_bytes=len(data))

    def _data(self, key: str) -> bytes:
        data = self.objects.get(validate_key(key))
        if data is None:
            raise SourceNotFound(key)
        return data

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[LocalCopy]:
        data = self._data(key)
        self.opened.append(key)
        stored = StoredObject(
            key=key, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        with _temporary_file(key, data) as path:
            yield LocalCopy(path=path, stored=stored)

    @asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        data = self._data(key)
        self.opened.append(key)
        with _temporary_file(key, data) as path:
            yield path

    async def read_chunks(self, key: str) -> AsyncIterator[bytes]:
        data = self._data(key)
        for start in range(0, len(data), _CHUNK_SIZE):
            yield data[start : start + _CHUNK_SIZE]

    async def list_names(self, prefix: str) -> AsyncIterator[str]:
        below = [k[len(prefix) :] for k in self.objects if k.startswith(prefix)]
        for name in sorted({n.split("/", 1)[0] + ("/" if "/" in n else "") for n in below}):
            yield name

    async def delete(self, key: str) -> None:
        self.objects.pop(validate_key(key), None)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self.objects if k.startswith(prefix)]
        for k in doomed:
            del self.objects[k]
        return len(doomed)

    async def sweep_scratch(self, modified_before: datetime) -> list[ScratchFile]:
        removed = [f for f in self.scratch if f.modified_at < modified_before]
        self.scratch = [f for f in self.scratch if f not in removed]
        return removed

    def uri_for(self, key: str) -> str:
        return "mem://" + key

    async def download_url(self, key: str, base_url: str, expires: int) -> str:
        return f"{base_url}/get/{key}?expires={expires}"

    async def upload_target(self, upload: Upload, base_url: str) -> UploadTarget:
        headers = {
            "Content-Type": upload.content_type,
            "Content-Length": str(upload.content_length),
        }
        return UploadTarget(url=f"{base_url}/put/{upload.id}", method="PUT", headers=headers)

    async def check(self) -> None:
        return None


class FakeProber:
    """Describes every path whose name ends in .mp4; anything else is not media."""

    name = "fake"

    def __init__(self) -> None:
        self.probed: list[Path] = []

    async def probe(self, path: Path) -> MediaInfo:
        self.probed.append(path)
        if path.suffix != ".mp4":
            raise InvalidMedia(f"{path.name} is not media")
        return MediaInfo(format_name="mov,mp4", duration=1.0, bit_rate=None, size_bytes=1)

    async def check(self) -> None:
        return None


class FakeTables(msgspec.Struct):
    uploads: dict[UUID, Upload] = msgspec.field(default_factory=dict)
    assets: dict[UUID, Asset] = msgspec.field(default_factory=dict)
    jobs: dict[UUID, Job] = msgspec.field(default_factory=dict)
    endpoints: dict[UUID, WebhookEndpoint] = msgspec.field(default_factory=dict)
    deliveries: dict[UUID, WebhookDelivery] = msgspec.field(default_factory=dict)
    frames: dict[UUID, list[FrameFingerprint]] = msgspec.field(default_factory=dict)


E = TypeVar("E", Upload, Asset, Job)


def _save(rows: dict[UUID, E], row: E, org_id: str, what: str) -> None:
    """What the SQL repositories' ``save`` does: the unit of work's own rows only, and only a
    row that exists."""
    if row.org_id != org_id:
        raise ValueError(f"the {what} belongs to another organisation than this unit of work")
    current = rows.get(row.id)
    if current is None or current.org_id != org_id:
        raise NotFound(f"no such {what}")
    rows[row.id] = row


def _delete(rows: dict[UUID, E], row_id: UUID, org_id: str) -> bool:
    current = rows.get(row_id)
    if current is None or current.org_id != org_id:
        return False
    del rows[row_id]
    return True


def _video(media: MediaInfo) -> StreamInfo | None:
    return next(iter(media.video_streams), None)


def _codecs(media: MediaInfo) -> set[str]:
    firsts = (*media.video_streams[:1], *media.audio_streams[:1])
    return {stream.codec.lower() for stream in firsts if stream.codec}


def _matches(asset: Asset, filters: AssetFilter) -> bool:
    """The SQL filters of ``GET /v1/assets``, on the struct: durations and height inclusive,
    creation times exclusive, ``codec`` the first video's or the first audio's."""
    duration, video = asset.media.duration, _video(asset.media)
    height = video.display_height if video else None
    checks = [
        filters.status is None or asset.status == filters.status,
        filters.min_duration is None or (duration is not None and duration >= filters.min_duration),
        filters.max_duration is None or (duration is not None and duration <= filters.max_duration),
        filters.codec is None or filters.codec.lower() in _codecs(asset.media),
        filters.min_height is None or (height is not None and height >= filters.min_height),
        filters.created_after is None or asset.created_at > filters.created_after,
        filters.created_before is None or asset.created_at < filters.created_before,
        filters.sha256 is None or asset.sha256 == filters.sha256.lower(),
    ]
    return all(checks)


class _Uploads:
    def __init__(self, tables: FakeTables, org_id: str) -> None:
        self._t, self._org = tables, org_id

    async def add(self, upload: Upload) -> None:
        self._t.uploads[upload.id] = upload

    async def get(self, upload_id: UUID) -> Upload | None:
        upload = self._t.uploads.get(upload_id)
        return upload if upload and upload.org_id == self._org else None

    async def get_by_source_uri(self, source_uri: str) -> Upload | None:
        return next(
            (
                u
                for u in self._t.uploads.values()
                if u.org_id == self._org and u.source_uri == source_uri
            ),
            None,
        )

    async def claim_for_upload(
        self, upload_id: UUID, now: datetime, stale_before: datetime
    ) -> bool:
        upload = await self.get(upload_id)
        if upload is None:
            return False
        stale = upload.status is UploadStatus.UPLOADING and upload.updated_at < stale_before
        if upload.status is not UploadStatus.PENDING and not stale:
            return False
        self._t.uploads[upload_id] = msgspec.structs.replace(
            upload, status=UploadStatus.UPLOADING, updated_at=now
        )
        return True

    async def save(self, upload: Upload) -> None:
        _save(self._t.uploads, upload, self._org, "upload")

    async def open_resumable(self, now: datetime) -> int:
        return sum(
            1
            for u in self._t.uploads.values()
            if u.org_id == self._org
            and u.resumable
            and u.status in (UploadStatus.PENDING, UploadStatus.UPLOADING)
            and u.expires_at > now
        )

    async def reserved_bytes(self, now: datetime) -> int:
        return sum(
            u.content_length
            for u in self._t.uploads.values()
            if u.org_id == self._org
            and u.status is not UploadStatus.COMMITTED
            and (u.expires_at > now or u.status is UploadStatus.RECEIVED)
        )

    async def delete(self, upload_id: UUID) -> bool:
        return _delete(self._t.uploads, upload_id, self._org)

    async def delete_abandoned(self, upload_id: UUID, expired_before: datetime) -> Upload | None:
        upload = await self.get(upload_id)
        if (
            upload is None
            or upload.status is UploadStatus.COMMITTED
            or upload.expires_at >= expired_before
        ):
            return None
        return self._t.uploads.pop(upload_id)


class _Assets:
    def __init__(self, tables: FakeTables, org_id: str) -> None:
        self._t, self._org = tables, org_id

    async def add(self, asset: Asset) -> None:
        if any(a.upload_id == asset.upload_id for a in self._t.assets.values()):
            raise Conflict("duplicate")
        self._t.assets[asset.id] = asset

    async def get(self, asset_id: UUID) -> Asset | None:
        asset = self._t.assets.get(asset_id)
        return asset if asset and asset.org_id == self._org else None

    async def get_by_upload(self, upload_id: UUID) -> Asset | None:
        return next(
            (
                a
                for a in self._t.assets.values()
                if a.org_id == self._org and a.upload_id == upload_id
            ),
            None,
        )

    async def total_size(self) -> int:
        return sum(a.size_bytes for a in self._t.assets.values() if a.org_id == self._org)

    async def list(
        self, filters: AssetFilter, *, limit: int, after: PageCursor | None
    ) -> AssetPage:
        rows = sorted(
            (a for a in self._t.assets.values() if a.org_id == self._org),
            key=lambda a: (a.created_at, a.id),
            reverse=True,
        )
        if after is not None:
            rows = [a for a in rows if (a.created_at, a.id) < (after.created_at, after.id)]
        rows = [a for a in rows if _matches(a, filters)]
        page = rows[:limit]
        more = len(rows) > limit
        last = page[-1] if page else None
        cursor = PageCursor(created_at=last.created_at, id=last.id) if more and last else None
        return AssetPage(items=page, next_cursor=cursor)

    async def save(self, asset: Asset) -> None:
        _save(self._t.assets, asset, self._org, "asset")

    async def delete(self, asset_id: UUID) -> bool:
        if not _delete(self._t.assets, asset_id, self._org):
            return False
        for job in [j for j in self._t.jobs.values() if j.asset_id == asset_id]:
            del self._t.jobs[job.id]  # ON DELETE CASCADE
        return True

    async def existing(self, asset_ids: Sequence[UUID]) -> set[UUID]:
        return {i for i in asset_ids if await self.get(i) is not None}


class _Jobs:
    def __init__(self, tables: FakeTables, org_id: str) -> None:
        self._t, self._org = tables, org_id

    async def add(self, job: Job) -> None:
        self._t.jobs[job.id] = job

    async def get(self, job_id: UUID) -> Job | None:
        job = self._t.jobs.get(job_id)
        return job if job and job.org_id == self._org else None

    async def save(self, job: Job) -> None:
        _save(self._t.jobs, job, self._org, "job")

    async def latest_for_asset(self, asset_id: UUID, kind: JobKind) -> Job | None:
        mine = [
            j
            for j in self._t.jobs.values()
            if j.org_id == self._org and j.asset_id == asset_id and j.kind == kind
        ]
        return max(mine, key=lambda j: j.created_at, default=None)

    async def count_active(self) -> int:
        return sum(1 for j in self._t.jobs.values() if j.org_id == self._org and j.is_active)

    async def claim(
        self, job_id: UUID, owner: str, now: datetime, lease_until: datetime
    ) -> Job | None:
        job = await self.get(job_id)
        if job is None or not job.is_claimable(now):
            return None
        claimed = job.claimed(owner, now, lease_until)
        self._t.jobs[job_id] = claimed
        return claimed

    async def heartbeat(
        self, job_id: UUID, owner: str, lease_until: datetime, progress: float
    ) -> bool:
        job = await self.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or job.lease_owner != owner:
            return False
        self._t.jobs[job_id] = msgspec.structs.replace(
            job, lease_expires_at=lease_until, progress=progress
        )
        return True

    async def finish(self, job: Job, owner: str) -> bool:
        current = await self.get(job.id)
        if current is None or current.status is not JobStatus.RUNNING:
            return False
        if current.lease_owner != owner:
            return False
        self._t.jobs[job.id] = job
        return True

    async def list(self, filters: JobFilter, *, limit: int, after: PageCursor | None) -> JobPage:
        jobs = sorted(
            (
                j
                for j in self._t.jobs.values()
                if j.org_id == self._org
                and (filters.status is None or j.status is filters.status)
                and (filters.kind is None or j.kind is filters.kind)
                and (filters.asset_id is None or j.asset_id == filters.asset_id)
                and (filters.created_after is None or j.created_at > filters.created_after)
                and (filters.created_before is None or j.created_at < filters.created_before)
                and (after is None or (j.created_at, j.id) < (after.created_at, after.id))
            ),
            key=lambda j: (j.created_at, j.id),
            reverse=True,
        )
        page = jobs[:limit]
        more = len(jobs) > limit
        cursor = PageCursor(created_at=page[-1].created_at, id=page[-1].id) if more else None
        return JobPage(items=page, next_cursor=cursor)


class _Endpoints:
    def __init__(self, tables: FakeTables, org_id: str) -> None:
        self._t, self._org = tables, org_id

    async def add(self, endpoint: WebhookEndpoint) -> None:
        if endpoint.id in self._t.endpoints:
            raise Conflict("the endpoint exists")
        self._t.endpoints[endpoint.id] = endpoint

    async def get(self, endpoint_id: UUID) -> WebhookEndpoint | None:
        endpoint = self._t.endpoints.get(endpoint_id)
        return endpoint if endpoint and endpoint.org_id == self._org else None

    async def list_all(self) -> list[WebhookEndpoint]:
        own = [e for e in self._t.endpoints.values() if e.org_id == self._org]
        return sorted(own, key=lambda e: (e.created_at, e.id))

    async def subscribed(self, event_type: WebhookEventType) -> list[WebhookEndpoint]:
        return [e for e in await self.list_all() if e.wants(event_type)]

    async def save(self, endpoint: WebhookEndpoint) -> None:
        if await self.get(endpoint.id) is None:
            raise NotFound("no such webhook endpoint")
        self._t.endpoints[endpoint.id] = endpoint

    async def delete(self, endpoint_id: UUID) -> bool:
        if await self.get(endpoint_id) is None:
            return False
        del self._t.endpoints[endpoint_id]
        for delivery_id, delivery in list(self._t.deliveries.items()):
            if delivery.endpoint_id == endpoint_id:
                del self._t.deliveries[delivery_id]
        return True


class _Deliveries:
    def __init__(self, tables: FakeTables, org_id: str) -> None:
        self._t, self._org = tables, org_id

    async def add(self, delivery: WebhookDelivery) -> None:
        self._t.deliveries[delivery.id] = delivery

    async def get(self, delivery_id: UUID) -> WebhookDelivery | None:
        delivery = self._t.deliveries.get(delivery_id)
        return delivery if delivery and delivery.org_id == self._org else None

    async def list_for_endpoint(
        self,
        endpoint_id: UUID,
        *,
        status: DeliveryStatus | None,
        limit: int,
        after: PageCursor | None,
    ) -> DeliveryPage:
        found = sorted(
            (
                d
                for d in self._t.deliveries.values()
                if d.org_id == self._org
                and d.endpoint_id == endpoint_id
                and (status is None or d.status is status)
                and (after is None or (d.created_at, d.id) < (after.created_at, after.id))
            ),
            key=lambda d: (d.created_at, d.id),
            reverse=True,
        )
        page = found[:limit]
        more = len(found) > limit
        cursor = PageCursor(created_at=page[-1].created_at, id=page[-1].id) if more else None
        return DeliveryPage(items=page, next_cursor=cursor)

    async def claim(
        self, delivery_id: UUID, owner: str, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        current = await self.get(delivery_id)
        if (
            current is None
            or current.status is not DeliveryStatus.PENDING
            or current.next_attempt_at is None
            or current.next_attempt_at > now
            or (current.lease_expires_at is not None and current.lease_expires_at >= now)
        ):
            return None
        claimed = msgspec.structs.replace(
            current,
            attempts=current.attempts + 1,
            lease_owner=owner,
            lease_expires_at=lease_until,
            updated_at=now,
        )
        self._t.deliveries[delivery_id] = claimed
        return claimed

    async def claim_many(
        self, delivery_ids: Sequence[UUID], owner: str, now: datetime, lease_until: datetime
    ) -> list[WebhookDelivery]:
        claimed = [await self.claim(d, owner, now, lease_until) for d in delivery_ids]
        return [delivery for delivery in claimed if delivery is not None]

    async def finish(self, delivery: WebhookDelivery, owner: str) -> bool:
        current = await self.get(delivery.id)
        if current is None or current.status is not DeliveryStatus.PENDING:
            return False
        if current.lease_owner != owner:
            return False
        self._t.deliveries[delivery.id] = delivery
        return True

    async def requeue(self, delivery_id: UUID, now: datetime) -> WebhookDelivery | None:
        current = await self.get(delivery_id)
        if current is None or current.status is DeliveryStatus.SUCCEEDED:
            return None
        again = current.requeued(now)
        self._t.deliveries[delivery_id] = again
        return again


class FakeWebhookDirectory:
    def __init__(self, database: FakeDatabase) -> None:
        self._database = database

    async def due(
        self, now: datetime, per_endpoint: int, per_org: int, limit: int
    ) -> list[tuple[UUID, str, UUID]]:
        found = sorted(
            (
                d
                for d in self._database.tables.deliveries.values()
                if d.status is DeliveryStatus.PENDING
                and d.next_attempt_at is not None
                and d.next_attempt_at <= now
                and (d.lease_expires_at is None or d.lease_expires_at < now)
            ),
            key=lambda d: (d.next_attempt_at or now, d.id),
        )
        per_endpoint_taken: dict[UUID, int] = {}
        turns: dict[str, int] = {}
        due = []
        for delivery in found:
            if per_endpoint_taken.get(delivery.endpoint_id, 0) >= per_endpoint:
                continue
            per_endpoint_taken[delivery.endpoint_id] = (
                per_endpoint_taken.get(delivery.endpoint_id, 0) + 1
            )
            turn = turns[delivery.org_id] = turns.get(delivery.org_id, 0) + 1
            if turn <= per_org:
                due.append((turn, delivery.next_attempt_at or now, delivery.id, delivery))
        due.sort(key=lambda entry: entry[:3])
        return [(d.id, d.org_id, d.endpoint_id) for *_, d in due[:limit]]

    async def pending(self) -> tuple[int, datetime | None]:
        pending = [
            d.created_at
            for d in self._database.tables.deliveries.values()
            if d.status is DeliveryStatus.PENDING
        ]
        return len(pending), min(pending, default=None)

    async def failed(self, filters: DeliveryFilter, limit: int) -> list[tuple[UUID, str]]:
        found = sorted(
            (
                d
                for d in self._database.tables.deliveries.values()
                if d.status is DeliveryStatus.FAILED
                and (filters.org_id is None or d.org_id == filters.org_id)
                and (filters.error_code is None or d.last_error_code == filters.error_code)
                and (filters.since is None or d.updated_at >= filters.since)
                and (filters.until is None or d.updated_at < filters.until)
            ),
            key=lambda d: d.updated_at,
        )
        return [(d.id, d.org_id) for d in found[:limit]]

    async def replayable_jobs(self, filters: JobReplayFilter, limit: int) -> list[tuple[UUID, str]]:
        found = []
        for job in sorted(self._database.tables.jobs.values(), key=lambda j: j.updated_at):
            stuck = (
                job.status is JobStatus.FAILED
                or (
                    job.status is JobStatus.RUNNING
                    and (job.lease_expires_at or filters.stuck_before) < filters.stuck_before
                )
                or (job.status is JobStatus.QUEUED and job.updated_at < filters.stuck_before)
            )
            if (
                stuck
                and (filters.org_id is None or job.org_id == filters.org_id)
                and (filters.kind is None or job.kind is filters.kind)
                and (
                    filters.error_code is None
                    or (job.error is not None and job.error.code == filters.error_code)
                )
                and (filters.since is None or job.updated_at >= filters.since)
                and (filters.until is None or job.updated_at < filters.until)
            ):
                found.append((job.id, job.org_id))
        return found[:limit]


class FakeWebhookSender:
    """Answers what ``answers`` holds for a URL (200 by default) and remembers each request."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str], bytes]] = []
        self.answers: dict[str, WebhookResponse] = {}

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> WebhookResponse:
        self.sent.append((url, headers, body))
        return self.answers.get(url, WebhookResponse(status_code=200, error_code=None))


class FakeUploadDirectory:
    def __init__(self, database: FakeDatabase) -> None:
        self._database = database

    async def abandoned(self, expired_before: datetime, limit: int) -> list[tuple[UUID, str]]:
        found = sorted(
            (
                u
                for u in self._database.tables.uploads.values()
                if u.status is not UploadStatus.COMMITTED and u.expires_at < expired_before
            ),
            key=lambda u: u.expires_at,
        )
        return [(u.id, u.org_id) for u in found[:limit]]


class FakeJobDirectory:
    def __init__(self, database: FakeDatabase) -> None:
        self._database = database

    async def org_of(self, job_id: UUID) -> str | None:
        job = self._database.tables.jobs.get(job_id)
        return job.org_id if job else None

    async def due(
        self, now: datetime, enqueued_before: datetime, limit: int
    ) -> list[tuple[UUID, str]]:
        due = []
        for job in self._database.tables.jobs.values():
            queued = (
                job.status is JobStatus.QUEUED
                and (job.next_attempt_at is None or job.next_attempt_at <= now)
                and (job.enqueued_at is None or job.enqueued_at < enqueued_before)
            )
            expired = job.status is JobStatus.RUNNING and (job.lease_expires_at or now) < now
            if queued or expired:
                due.append((job.id, job.org_id))
        return due[:limit]

    async def next_in_turn(self, now: datetime, prefer_org: str) -> JobInTurn | None:
        jobs = self._database.tables.jobs.values()
        running = Counter(
            j.org_id
            for j in jobs
            if j.status is JobStatus.RUNNING and (j.lease_expires_at or now) >= now
        )
        claimable = [
            j
            for j in jobs
            if (
                j.status is JobStatus.QUEUED
                and (j.next_attempt_at is None or j.next_attempt_at <= now)
            )
            or (j.status is JobStatus.RUNNING and (j.lease_expires_at or now) < now)
        ]
        if not claimable:
            return None
        never = datetime.min.replace(tzinfo=UTC)
        last_started: dict[str, datetime] = {}
        for j in jobs:
            if j.started_at is not None:
                last_started[j.org_id] = max(last_started.get(j.org_id, never), j.started_at)
        pick = min(
            claimable,
            key=lambda j: (
                running[j.org_id],
                last_started.get(j.org_id, never),
                j.org_id != prefer_org,
                j.created_at,
                str(j.id),
            ),
        )
        return JobInTurn(job_id=pick.id, org_id=pick.org_id, enqueued_at=pick.enqueued_at)

    async def mark_enqueued(self, job_id: UUID, org_id: str, now: datetime | None) -> None:
        job = self._database.tables.jobs[job_id]
        self._database.tables.jobs[job_id] = msgspec.structs.replace(job, enqueued_at=now)

    async def active_counts(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys((JobStatus.QUEUED, JobStatus.RUNNING), 0)
        for job in self._database.tables.jobs.values():
            if job.status in counts:
                counts[job.status] += 1
        return counts


class QueuedId(NamedTuple):
    """One message ``FakeQueue`` holds: a job id and when it was handed over."""

    job_id: UUID
    handed_at: datetime


class FakeQueue:
    """An in-memory job queue that keeps the ``JobQueue`` contract: it runs in
    tests/contract/test_job_queue.py beside the adapters. Ids wait first in, first out until a
    consumer takes one (``take``, or ``serve`` as a worker would); a taken id no longer waits.
    Its clock is the one the use cases are given, so ``oldest_waiting`` compares with their times.

    What tests read: ``handed_over`` (every id it accepted, in order, taken or not) and
    ``waiting()``. Faults: ``down`` refuses everything, as a broker outage does; ``lose(id)``
    drops a waiting message, as a Redis that restarted without it would."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock
        self.down = False
        #: every id it accepted, in order (a test's record; taking an id leaves it here)
        self.handed_over: list[UUID] = []
        self._waiting: deque[QueuedId] = deque()
        self._arrived = asyncio.Event()

    def _now(self) -> datetime:
        return self._clock.now() if self._clock is not None else datetime.now(UTC)

    def _refuse_when_down(self) -> None:
        if self.down:
            raise QueueUnavailable("the fake broker is down")

    async def enqueue(self, job_id: UUID) -> None:
        self._refuse_when_down()
        self._waiting.append(QueuedId(job_id, self._now()))
        self.handed_over.append(job_id)
        self._arrived.set()

    async def oldest_waiting(self) -> datetime | None:
        self._refuse_when_down()
        return min((queued.handed_at for queued in self._waiting), default=None)

    async def check(self) -> None:
        self._refuse_when_down()

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    # -- the consumer's side, and what tests read ----------------------------------------------
    def waiting(self) -> list[UUID]:
        """The ids not taken yet, first in first."""
        return [queued.job_id for queued in self._waiting]

    async def take(self) -> QueuedId:
        """The first waiting id, once there is one; it no longer waits."""
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        return self._waiting.popleft()

    async def serve(self, handler: Callable[[UUID], Awaitable[None]]) -> None:
        """A worker with one slot: runs each id through ``handler`` in turn, until cancelled. A
        handler that raises does not stop it (retries are the job layer's, as with the
        adapters)."""
        while True:
            queued = await self.take()
            with suppress(Exception):
                await handler(queued.job_id)

    def lose(self, job_id: UUID) -> None:
        """Drop the waiting message(s) of ``job_id``, as a broker that lost them would."""
        kept = [queued for queued in self._waiting if queued.job_id != job_id]
        if len(kept) == len(self._waiting):
            raise LookupError(f"no message of {job_id} is waiting")
        self._waiting = deque(kept)


class FakeThumbnailer:
    """Two tiny "thumbnails", or the error it was told to raise. Remembers the log context each
    call ran in (what a line an adapter logs would carry)."""

    name = "fake"

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls = 0
        self.log_contexts: list[dict[str, object]] = []

    async def thumbnails(
        self, path: Path, media: MediaInfo, spec: ThumbnailSpec
    ) -> list[Thumbnail]:
        self.calls += 1
        self.log_contexts.append(structlog.contextvars.get_contextvars())
        if self.error is not None:
            raise self.error
        return [
            Thumbnail(index=i, time=float(i), width=spec.width, height=90, data=b"\xff\xd8img")
            for i in range(2)
        ]

    async def check(self) -> None:
        return None


class _Frames:
    """The frame search by brute force: every frame of the organisation's assets compared."""

    def __init__(self, tables: FakeTables, org_id: str) -> None:
        self._t, self._org = tables, org_id

    def _own(self) -> list[tuple[UUID, FrameFingerprint]]:
        return [
            (asset_id, frame)
            for asset_id, frames in self._t.frames.items()
            if (asset := self._t.assets.get(asset_id)) is not None and asset.org_id == self._org
            for frame in frames
        ]

    async def replace(self, asset_id: UUID, frames: Sequence[FrameFingerprint]) -> None:
        self._t.frames[asset_id] = list(frames)

    async def of_asset(self, asset_id: UUID) -> list[FrameFingerprint]:
        return sorted((f for a, f in self._own() if a == asset_id), key=lambda f: f.time)

    async def nearest(self, fingerprint: int, *, max_distance: int, limit: int) -> list[FrameMatch]:
        if not 0 <= max_distance <= MAX_DISTANCE:
            raise InvalidInput(f"max_distance must be between 0 and {MAX_DISTANCE}")
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        matches = [
            FrameMatch(asset_id=a, time=f.time, distance=distance(fingerprint, f.fingerprint))
            for a, f in self._own()
        ]
        return sorted((m for m in matches if m.distance <= max_distance), key=order_key)[:limit]

    async def shared(self, asset_id: UUID, *, max_distance: int) -> list[FramePair]:
        if not 0 <= max_distance <= MAX_DISTANCE:
            raise InvalidInput(f"max_distance must be between 0 and {MAX_DISTANCE}")
        own = self._own()
        pairs = [
            FramePair(
                time=mine.time,
                other_asset_id=b,
                other_time=other.time,
                distance=distance(mine.fingerprint, other.fingerprint),
            )
            for a, mine in own
            if a == asset_id
            for b, other in own
            if b != asset_id
        ]
        return sorted(
            (p for p in pairs if p.distance <= max_distance),
            key=lambda p: (p.time, str(p.other_asset_id), p.other_time),
        )

    async def unindexed_assets(self, *, after: UUID | None, limit: int) -> list[UUID]:
        ids = sorted(
            (
                a.id
                for a in self._t.assets.values()
                if a.org_id == self._org
                and a.status is AssetStatus.READY
                and a.media.video_streams
                and not self._t.frames.get(a.id)
                and (after is None or a.id.bytes > after.bytes)
            ),
            key=lambda i: i.bytes,
        )
        return ids[:limit]


class FakeUnitOfWork:
    def __init__(self, database: FakeDatabase, org_id: str) -> None:
        self._database = database
        self._org = org_id
        self._working = copy.deepcopy(database.tables)
        # Typed as the ports, as SqlUnitOfWork does: the UnitOfWork protocol's attributes are
        # mutable, hence invariant, so a fake typed as _Uploads… would not be a UnitOfWork.
        self.uploads: UploadRepository = _Uploads(self._working, org_id)
        self.assets: AssetRepository = _Assets(self._working, org_id)
        self.jobs: JobRepository = _Jobs(self._working, org_id)
        self.webhooks: WebhookEndpointRepository = _Endpoints(self._working, org_id)
        self.deliveries: WebhookDeliveryRepository = _Deliveries(self._working, org_id)
        self.frames: FrameRepository = _Frames(self._working, org_id)
        self._entered = False

    async def __aenter__(self) -> FakeUnitOfWork:
        if self._entered:
            raise RuntimeError("a unit of work is used once; make another")
        self._entered = True
        if self._database.unavailable_for > 0:  # the next N units of work find it down
            self._database.unavailable_for -= 1
            raise DatabaseUnavailable("the database is not available: connection refused")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def commit(self) -> None:
        self._database.tables = copy.deepcopy(self._working)
        if self._database.on_outbox_commit is not None:
            self._database.on_outbox_commit()

    async def lock_org(self) -> None:
        return None  # one event loop, no await between count and add here: nothing to race


class FakeDatabase:
    """A ``UnitOfWorkFactory``: each unit of work sees a copy and publishes it on commit."""

    def __init__(self) -> None:
        self.tables = FakeTables()
        self.unavailable_for = 0
        self.on_outbox_commit: Callable[[], None] | None = None

    def __call__(self, org_id: str) -> FakeUnitOfWork:
        return FakeUnitOfWork(self, org_id)


class FakeMetrics:
    """Remembers what the use cases reported, in order."""

    def __init__(self) -> None:
        self.jobs: list[tuple[JobKind, JobOutcome, float]] = []
        self.received_bytes: list[int] = []
        self.committed_bytes: list[int] = []
        self.probes: list[tuple[str, str, float]] = []
        self.thumbnails: list[tuple[str, str, float]] = []
        self.webhooks: list[tuple[str, str, float]] = []

    def job_finished(self, kind: JobKind, outcome: JobOutcome, seconds: float) -> None:
        self.jobs.append((kind, outcome, seconds))

    def upload_received(self, size_bytes: int) -> None:
        self.received_bytes.append(size_bytes)

    def upload_committed(self, size_bytes: int) -> None:
        self.committed_bytes.append(size_bytes)

    def probe_finished(self, prober: str, outcome: str, seconds: float) -> None:
        self.probes.append((prober, outcome, seconds))

    def thumbnails_finished(self, thumbnailer: str, outcome: str, seconds: float) -> None:
        self.thumbnails.append((thumbnailer, outcome, seconds))

    def webhook_attempted(self, event_type: str, outcome: str, seconds: float) -> None:
        self.webhooks.append((event_type, outcome, seconds))

    @property
    def job_outcomes(self) -> list[JobOutcome]:
        return [outcome for _, outcome, _ in self.jobs]
