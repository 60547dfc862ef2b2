"""Entities: who is calling, uploads, assets and jobs. Plain msgspec structs, no I/O."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from uuid import UUID

import msgspec

from heimdex.domain.errors import InvalidJobTransition
from heimdex.domain.frames import FrameFingerprint
from heimdex.domain.media import MediaInfo


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The authenticated caller: every use case is scoped by ``org_id``."""

    org_id: str
    subject: str | None = None
    scopes: frozenset[str] = frozenset()

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class UploadStatus(enum.StrEnum):
    PENDING = "pending"  # slot issued, nothing received
    UPLOADING = "uploading"  # a PUT is streaming into it
    RECEIVED = "received"  # the whole file is stored and verified
    COMMITTED = "committed"  # an asset was made of it


class Upload(msgspec.Struct, frozen=True, kw_only=True):
    """A slot a client uploads one file into, before it becomes an asset."""

    id: UUID
    org_id: str
    key: str
    source_uri: str
    source_name: str
    content_length: int
    content_type: str
    declared_sha256: str | None
    status: UploadStatus
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    received_sha256: str | None = None
    received_at: datetime | None = None
    #: filled by tus PATCH requests (``/v1/uploads/{id}``) rather than one PUT
    resumable: bool = False
    #: a resumable slot's offset: bytes stored durably so far
    received_bytes: int = 0
    #: the store's handle of a resumable write in progress (an S3 multipart upload id): a tus
    #: slot's once its first PATCH arrived, a multipart slot's (not ``resumable``) from init
    resumable_session: str | None = None

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    @property
    def multipart(self) -> bool:
        """Filled by the client's own PUTs of presigned S3 UploadPart URLs, completed by commit
        (``init`` with ``multipart``): the one kind of slot holding a session without tus."""
        return not self.resumable and self.resumable_session is not None


class AssetStatus(enum.StrEnum):
    COMMITTED = "committed"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    """A committed, verified and probed media file."""

    id: UUID
    org_id: str
    upload_id: UUID
    key: str
    source_uri: str
    source_name: str
    size_bytes: int
    sha256: str
    content_type: str
    status: AssetStatus
    media: MediaInfo
    created_at: datetime
    updated_at: datetime


class AssetFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /v1/assets`` narrows by; every field optional."""

    status: AssetStatus | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    codec: str | None = None
    min_height: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: lower-case hex; an exact match (how a client finds out it already uploaded a file)
    sha256: str | None = None


class PageCursor(msgspec.Struct, frozen=True, kw_only=True):
    """Where the previous page ended: newest first, ties broken by id."""

    created_at: datetime
    id: UUID


class AssetPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Asset]
    next_cursor: PageCursor | None


class JobKind(enum.StrEnum):
    SIDECAR = "sidecar"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /v1/jobs`` narrows by; every field optional."""

    status: JobStatus | None = None
    kind: JobKind | None = None
    asset_id: UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class JobError(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


#: Why a run its worker stopped (shutting down) was handed back: not the job's fault.
INTERRUPTED = JobError(code="interrupted", message="the worker stopped during the job")


class ThumbnailSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How many thumbnails, how wide, in which format."""

    count: int = 10
    width: int = 320
    format: str = "jpg"


class StoryboardSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How wide a storyboard's tiles are and which image format its sprite sheets use."""

    width: int = 160
    format: str = "jpg"


class StoryboardTile(msgspec.Struct, frozen=True, kw_only=True):
    """One tile: the stretch of the video it stands for (``start`` ≤ t < ``end``), the time of
    the frame it shows, and where it is on which sprite sheet."""

    start: float
    end: float
    time: float
    sprite: int
    x: int
    y: int
    w: int
    h: int


class Sprite(msgspec.Struct, frozen=True, kw_only=True):
    """One encoded sprite sheet of a storyboard."""

    index: int
    width: int
    height: int
    data: bytes


class Storyboard(msgspec.Struct, frozen=True, kw_only=True):
    """Tiles every ``interval`` seconds, packed into sprite sheets."""

    interval: float
    tile_width: int
    tile_height: int
    format: str
    tiles: list[StoryboardTile]
    sprites: list[Sprite]


class Poster(msgspec.Struct, frozen=True, kw_only=True):
    """The picture that stands for a video: a frame at ``time``, encoded as JPEG."""

    time: float
    width: int
    height: int
    data: bytes


class Pictures(msgspec.Struct, frozen=True, kw_only=True):
    """What one pictures run made: a storyboard and a poster, each when asked for."""

    storyboard: Storyboard | None = None
    poster: Poster | None = None
    #: the fingerprints of the storyboard's tiles that are not dull (``heimdex.domain.frames``)
    frames: list[FrameFingerprint] = msgspec.field(default_factory=list)


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """The truth about one piece of background work; the queue only carries its id.

    ``queued`` → ``running`` (claimed under a lease by ``lease_owner``) → ``succeeded`` or
    ``failed``; a transient failure goes back to ``queued`` until ``next_attempt_at``
    (``rescheduled``), and so does a run its worker stopped (``interrupted``, due at once).
    ``enqueued_at`` is the outbox mark: when the queue last accepted the id.

    Each transition answers the new job and refuses (``InvalidJobTransition``) one its status
    does not allow. The repository's conditional updates hold the same rules under concurrency.
    """

    id: UUID
    org_id: str
    asset_id: UUID
    kind: JobKind
    status: JobStatus
    progress: float
    attempts: int
    max_attempts: int
    lease_expires_at: datetime | None
    next_attempt_at: datetime | None
    error: JobError | None
    created_at: datetime
    updated_at: datetime
    thumbnails: ThumbnailSpec = msgspec.field(default_factory=lambda: ThumbnailSpec())
    # ``None``: no storyboard (asked for with ``storyboard: false``).
    storyboard: StoryboardSpec | None = msgspec.field(default_factory=lambda: StoryboardSpec())
    lease_owner: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def created(
        cls,
        *,
        org_id: str,
        asset_id: UUID,
        kind: JobKind,
        thumbnails: ThumbnailSpec,
        storyboard: StoryboardSpec | None,
        max_attempts: int,
        now: datetime,
    ) -> Job:
        """A new job, queued and due at once, not yet handed to the queue; ``storyboard``
        ``None`` makes none."""
        return cls(
            id=uuid.uuid4(),
            org_id=org_id,
            asset_id=asset_id,
            kind=kind,
            status=JobStatus.QUEUED,
            progress=0.0,
            attempts=0,
            max_attempts=max_attempts,
            lease_expires_at=None,
            next_attempt_at=None,
            error=None,
            created_at=now,
            updated_at=now,
            thumbnails=thumbnails,
            storyboard=storyboard,
        )

    @property
    def is_active(self) -> bool:
        return self.status in (JobStatus.QUEUED, JobStatus.RUNNING)

    @property
    def has_attempts_left(self) -> bool:
        """Whether a failed run may be tried again (the run that failed counted already)."""
        return self.attempts < self.max_attempts

    def is_claimable(self, now: datetime) -> bool:
        """Queued and due, or running under a lease that ran out (its worker died)."""
        if self.status is JobStatus.QUEUED:
            return self.next_attempt_at is None or self.next_attempt_at <= now
        if self.status is JobStatus.RUNNING:
            return self.lease_expires_at is not None and self.lease_expires_at < now
        return False

    def claimed(self, owner: str, now: datetime, lease_until: datetime) -> Job:
        """Running under ``owner``'s lease until ``lease_until``, one attempt more."""
        if not self.is_claimable(now):
            raise self._refused("be claimed")
        return msgspec.structs.replace(
            self,
            status=JobStatus.RUNNING,
            attempts=self.attempts + 1,
            lease_owner=owner,
            lease_expires_at=lease_until,
            started_at=self.started_at or now,
            updated_at=now,
        )

    def succeeded(self, now: datetime) -> Job:
        """The run finished: done, its lease released."""
        self._require_running("succeed")
        return msgspec.structs.replace(
            self,
            status=JobStatus.SUCCEEDED,
            progress=1.0,
            error=None,
            lease_expires_at=None,
            next_attempt_at=None,
            finished_at=now,
            updated_at=now,
        )

    def rescheduled(self, error: JobError, now: datetime, retry_at: datetime) -> Job:
        """The run failed and may be tried again: queued, due at ``retry_at`` (after the
        back-off, ``JobPolicy.backoff``), and to be handed to the queue again."""
        self._require_running("be rescheduled")
        if not self.has_attempts_left:
            raise self._refused("be rescheduled with no attempts left")
        return self._requeued(error, now, retry_at)

    def failed(self, error: JobError, now: datetime) -> Job:
        """The run failed for good (a permanent error, or the last attempt)."""
        self._require_running("fail")
        return msgspec.structs.replace(
            self,
            status=JobStatus.FAILED,
            error=error,
            lease_expires_at=None,
            next_attempt_at=None,
            finished_at=now,
            updated_at=now,
        )

    def interrupted(self, now: datetime) -> Job:
        """Its worker stopped during the run: queued again and due at once, whatever the
        attempts (the stop was not the job's fault)."""
        self._require_running("be interrupted")
        return self._requeued(INTERRUPTED, now, now)

    def _requeued(self, error: JobError, now: datetime, retry_at: datetime) -> Job:
        return msgspec.structs.replace(
            self,
            status=JobStatus.QUEUED,
            error=error,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=retry_at,
            enqueued_at=None,
            updated_at=now,
        )

    def _require_running(self, change: str) -> None:
        if self.status is not JobStatus.RUNNING:
            raise self._refused(change)

    def _refused(self, change: str) -> InvalidJobTransition:
        return InvalidJobTransition(
            f"job {self.id} is {self.status.value} and cannot {change}",
            job_id=str(self.id),
            status=self.status.value,
        )


class Thumbnail(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    time: float
    width: int
    height: int
    data: bytes
    #: its frame's fingerprint; none for a dull frame, or from a thumbnailer that makes none
    fingerprint: int | None = None


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Job]
    next_cursor: PageCursor | None
