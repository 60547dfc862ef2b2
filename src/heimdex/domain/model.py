"""Entities: who is calling, uploads, assets and jobs. Plain msgspec structs, no I/O."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

import msgspec

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

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


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


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """The truth about one piece of background work; the queue only carries its id.

    ``queued`` → ``running`` (claimed under a lease by ``lease_owner``) → ``succeeded`` or
    ``failed``; a transient failure goes back to ``queued`` until ``next_attempt_at``.
    ``enqueued_at`` is the outbox mark: when the queue last accepted the id.
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

    @property
    def is_active(self) -> bool:
        return self.status in (JobStatus.QUEUED, JobStatus.RUNNING)


class Thumbnail(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    time: float
    width: int
    height: int
    data: bytes


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Job]
    next_cursor: PageCursor | None
