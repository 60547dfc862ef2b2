"""In-memory fakes of the ports, for unit tests of the application layer only.

The database fake applies changes on ``commit()`` and drops them otherwise, like a transaction.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import msgspec
import structlog

from heimdex.domain.errors import (
    ChecksumMismatch,
    Conflict,
    DatabaseUnavailable,
    InvalidMedia,
    LengthMismatch,
    QueueUnavailable,
    SourceNotFound,
    UploadTooLarge,
)
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import (
    Asset,
    AssetFilter,
    AssetPage,
    Job,
    JobKind,
    JobStatus,
    PageCursor,
    Thumbnail,
    ThumbnailSpec,
    Upload,
    UploadStatus,
)
from heimdex.domain.ports import (
    JobInTurn,
    JobOutcome,
    LocalCopy,
    ScratchFile,
    StoredObject,
    UploadTarget,
)


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


class FakeStorage:
    """Objects in a dict; ``mem://KEY`` URIs."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        #: keys handed out as local files (``local_copy`` or ``local_path``), in order
        self.opened: list[str] = []
        #: scratch files a crashed write would have left (the adapters' own are tested for real)
        self.scratch: list[ScratchFile] = []

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> StoredObject:
        data = b""
        async for chunk in chunks:
            data += chunk
            if expected_size is not None and len(data) > expected_size:
                raise UploadTooLarge("too large")
        if expected_size is not None and len(data) != expected_size:
            raise LengthMismatch("short")
        digest = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise ChecksumMismatch("checksum")
        return await self.write_bytes(key, data)

    async def write_bytes(self, key: str, data: bytes) -> StoredObject:
        self.objects[key] = data
        return StoredObject(key=key, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    async def stat(self, key: str) -> StoredObject | None:
        data = self.objects.get(key)
        return None if data is None else StoredObject(key=key, size_bytes=len(data))

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[LocalCopy]:
        if key not in self.objects:
            raise SourceNotFound(key)
        self.opened.append(key)
        data = self.objects[key]
        stored = StoredObject(
            key=key, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        yield LocalCopy(path=Path("/fake") / key, stored=stored)

    @asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        if key not in self.objects:
            raise SourceNotFound(key)
        self.opened.append(key)
        yield Path("/fake") / key

    async def read_chunks(self, key: str) -> AsyncIterator[bytes]:
        yield self.objects[key]

    async def list_names(self, prefix: str) -> AsyncIterator[str]:
        below = [k[len(prefix) :] for k in self.objects if k.startswith(prefix)]
        for name in sorted({n.split("/", 1)[0] + ("/" if "/" in n else "") for n in below}):
            yield name

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

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
        return UploadTarget(url=f"{base_url}/put/{upload.id}", method="PUT", headers={})

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
        self._t.uploads[upload.id] = upload

    async def reserved_bytes(self, now: datetime) -> int:
        return sum(
            u.content_length
            for u in self._t.uploads.values()
            if u.org_id == self._org
            and u.status is not UploadStatus.COMMITTED
            and (u.expires_at > now or u.status is UploadStatus.RECEIVED)
        )

    async def delete(self, upload_id: UUID) -> bool:
        return self._t.uploads.pop(upload_id, None) is not None

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
        if filters.status is not None:
            rows = [a for a in rows if a.status == filters.status]
        page = rows[:limit]
        more = len(rows) > limit
        last = page[-1] if page else None
        cursor = PageCursor(created_at=last.created_at, id=last.id) if more and last else None
        return AssetPage(items=page, next_cursor=cursor)

    async def save(self, asset: Asset) -> None:
        self._t.assets[asset.id] = asset

    async def delete(self, asset_id: UUID) -> bool:
        return self._t.assets.pop(asset_id, None) is not None

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
        self._t.jobs[job.id] = job

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


class FakeQueue:
    """Records ids; ``down`` makes it refuse like a broker outage."""

    def __init__(self) -> None:
        self.ids: list[UUID] = []
        self.down = False
        #: what ``oldest_waiting`` answers: set it to stand for a backlog
        self.oldest: datetime | None = None

    async def enqueue(self, job_id: UUID) -> None:
        if self.down:
            raise QueueUnavailable("down")
        self.ids.append(job_id)

    async def oldest_waiting(self) -> datetime | None:
        if self.down:
            raise QueueUnavailable("down")
        return self.oldest

    async def check(self) -> None:
        return None


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


class FakeUnitOfWork:
    def __init__(self, database: FakeDatabase, org_id: str) -> None:
        self._database = database
        self._org = org_id
        self._working = copy.deepcopy(database.tables)
        self.uploads = _Uploads(self._working, org_id)
        self.assets = _Assets(self._working, org_id)
        self.jobs = _Jobs(self._working, org_id)

    async def __aenter__(self) -> FakeUnitOfWork:
        if self._database.unavailable_for > 0:  # the next N units of work find it down
            self._database.unavailable_for -= 1
            raise DatabaseUnavailable("the database is not available: connection refused")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def commit(self) -> None:
        self._database.tables = copy.deepcopy(self._working)

    async def lock_org(self) -> None:
        return None  # one event loop, no await between count and add here: nothing to race


class FakeDatabase:
    """A ``UnitOfWorkFactory``: each unit of work sees a copy and publishes it on commit."""

    def __init__(self) -> None:
        self.tables = FakeTables()
        self.unavailable_for = 0

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

    @property
    def job_outcomes(self) -> list[JobOutcome]:
        return [outcome for _, outcome, _ in self.jobs]
