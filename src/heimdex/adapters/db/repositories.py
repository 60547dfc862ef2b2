"""SQL repositories behind the domain's ports, for SQLite and PostgreSQL.

Each repository is bound to one organisation (its unit of work's) and puts ``org_id = :org`` in
every statement it runs; on PostgreSQL row-level security applies the same rule a second time.

They are plain SQLAlchemy 2 Core statements over the tables in ``tables.py`` rather than
advanced-alchemy's ``SQLAlchemyAsyncRepository``, because:

- the domain's entities are immutable msgspec structs, so an ORM identity map would only hold a
  second, mutable copy of each row to keep in sync;
- every statement must carry the org filter, and a repository of explicit ``select``/``update``
  statements shows that at a glance (advanced-alchemy's ``update`` merges by primary key alone);
- the ports need a conditional UPDATE that reports whether it changed a row, and keyset
  pagination (advanced-alchemy's ``list`` paginates by offset).

Rows never leave this module: callers get domain structs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast
from uuid import UUID

import msgspec
from sqlalchemy import Table, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult, Result, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement, Executable

from heimdex.adapters.db.engine import database_errors
from heimdex.adapters.db.tables import metadata
from heimdex.domain.errors import Conflict, InvalidInput, NotFound
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import (
    Asset,
    AssetFilter,
    AssetPage,
    AssetStatus,
    Job,
    JobError,
    JobFilter,
    JobKind,
    JobPage,
    JobStatus,
    PageCursor,
    StoryboardSpec,
    ThumbnailSpec,
    Upload,
    UploadStatus,
)

UPLOADS: Table = metadata.tables["uploads"]
ASSETS: Table = metadata.tables["assets"]
JOBS: Table = metadata.tables["jobs"]

E = TypeVar("E")


def is_unique_violation(error: IntegrityError) -> bool:
    """A duplicate key (not a missing foreign key or a NULL), on PostgreSQL or SQLite."""
    if getattr(error.orig, "sqlstate", None) == "23505":
        return True
    return "UNIQUE constraint failed" in str(error.orig)


class _OrgRepository:
    """What every repository shares: the unit of work's session and organisation."""

    def __init__(self, session: AsyncSession, org_id: str) -> None:
        self._session = session
        self._org_id = org_id

    async def _execute(self, statement: Executable) -> Result[Any]:
        with database_errors():
            return await self._session.execute(statement)

    async def _change(self, statement: Executable) -> int:
        """Run an INSERT/UPDATE/DELETE; answers how many rows it changed."""
        result = cast("CursorResult[Any]", await self._execute(statement))
        return result.rowcount

    async def _insert_unique(self, statement: Executable, duplicate: str) -> None:
        """Insert in a savepoint, so a duplicate raises ``Conflict`` and leaves the unit of work's
        transaction usable (on PostgreSQL a failed statement would otherwise abort all of it)."""
        try:
            with database_errors():
                async with self._session.begin_nested():
                    await self._session.execute(statement)
        except IntegrityError as error:
            if is_unique_violation(error):
                raise Conflict(duplicate) from error
            raise

    async def _first(
        self, table: Table, condition: ColumnElement[bool], from_row: Callable[[RowMapping], E]
    ) -> E | None:
        """The organisation's first row of ``table`` that meets ``condition``, as an entity."""
        result = await self._execute(select(table).where(table.c.org_id == self._org_id, condition))
        row = result.mappings().first()
        return None if row is None else from_row(row)

    async def _update(
        self, table: Table, values: dict[str, Any], what: str, *also: ColumnElement[bool]
    ) -> int:
        """Write ``values`` (the ``what``'s, with its id and organisation) over its row when the
        row also meets ``also``; answers how many rows changed (0 or 1)."""
        values = dict(values)
        entity_id = values.pop("id")
        self._own(values.pop("org_id"), f"the {what}")
        return await self._change(
            update(table)
            .where(table.c.org_id == self._org_id, table.c.id == entity_id, *also)
            .values(values)
        )

    async def _save(self, table: Table, values: dict[str, Any], what: str) -> None:
        """Write an entity over its row; ``NotFound`` when the organisation has none."""
        if await self._update(table, values, what) == 0:
            raise NotFound(f"no such {what}")

    async def _delete(self, table: Table, entity_id: UUID) -> bool:
        """Delete the organisation's row with this id; whether there was one."""
        changed = await self._change(
            delete(table).where(table.c.org_id == self._org_id, table.c.id == entity_id)
        )
        return changed == 1

    def _own(self, org_id: str, what: str) -> None:
        # A row of another organisation through this unit of work is a programming error; on
        # PostgreSQL the policy's WITH CHECK would refuse it too, SQLite would store it.
        if org_id != self._org_id:
            raise ValueError(f"{what} belongs to another organisation than this unit of work")


# -- uploads -----------------------------------------------------------------------------------
def _upload_values(upload: Upload) -> dict[str, Any]:
    return {
        "id": upload.id,
        "org_id": upload.org_id,
        "key": upload.key,
        "source_uri": upload.source_uri,
        "source_name": upload.source_name,
        "content_length": upload.content_length,
        "content_type": upload.content_type,
        "declared_sha256": upload.declared_sha256,
        "status": upload.status.value,
        "expires_at": upload.expires_at,
        "created_at": upload.created_at,
        "updated_at": upload.updated_at,
        "received_sha256": upload.received_sha256,
        "received_at": upload.received_at,
        "resumable": upload.resumable,
        "received_bytes": upload.received_bytes,
        "resumable_session": upload.resumable_session,
    }


def _upload_from_row(row: RowMapping) -> Upload:
    return Upload(
        id=row["id"],
        org_id=row["org_id"],
        key=row["key"],
        source_uri=row["source_uri"],
        source_name=row["source_name"],
        content_length=row["content_length"],
        content_type=row["content_type"],
        declared_sha256=row["declared_sha256"],
        status=UploadStatus(row["status"]),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        received_sha256=row["received_sha256"],
        received_at=row["received_at"],
        resumable=bool(row["resumable"]),
        received_bytes=row["received_bytes"],
        resumable_session=row["resumable_session"],
    )


class SqlUploadRepository(_OrgRepository):
    """Upload slots of the unit of work's organisation."""

    async def add(self, upload: Upload) -> None:
        self._own(upload.org_id, "the upload")
        await self._insert_unique(
            insert(UPLOADS).values(_upload_values(upload)),
            "an upload with this id or source_uri exists",
        )

    async def get(self, upload_id: UUID) -> Upload | None:
        return await self._one(UPLOADS.c.id == upload_id)

    async def get_by_source_uri(self, source_uri: str) -> Upload | None:
        return await self._one(UPLOADS.c.source_uri == source_uri)

    async def claim_for_upload(
        self, upload_id: UUID, now: datetime, stale_before: datetime
    ) -> bool:
        # One conditional UPDATE: of two concurrent claimers the second waits for the first's
        # row lock, re-checks the condition against the committed row, and changes nothing.
        claimable = or_(
            UPLOADS.c.status == UploadStatus.PENDING.value,
            and_(
                UPLOADS.c.status == UploadStatus.UPLOADING.value,
                UPLOADS.c.updated_at < stale_before,
            ),
        )
        changed = await self._change(
            update(UPLOADS)
            .where(UPLOADS.c.org_id == self._org_id, UPLOADS.c.id == upload_id, claimable)
            .values(status=UploadStatus.UPLOADING.value, updated_at=now)
        )
        return changed == 1

    async def reserved_bytes(self, now: datetime) -> int:
        result = await self._execute(
            select(func.coalesce(func.sum(UPLOADS.c.content_length), 0)).where(
                UPLOADS.c.org_id == self._org_id,
                UPLOADS.c.status != UploadStatus.COMMITTED.value,
                or_(
                    UPLOADS.c.expires_at > now,
                    UPLOADS.c.status == UploadStatus.RECEIVED.value,
                ),
            )
        )
        return int(result.scalar_one())

    async def open_resumable(self, now: datetime) -> int:
        result = await self._execute(
            select(func.count()).where(
                UPLOADS.c.org_id == self._org_id,
                UPLOADS.c.resumable.is_(True),
                UPLOADS.c.status.in_([UploadStatus.PENDING.value, UploadStatus.UPLOADING.value]),
                UPLOADS.c.expires_at > now,
            )
        )
        return int(result.scalar_one())

    async def save(self, upload: Upload) -> None:
        await self._save(UPLOADS, _upload_values(upload), "upload")

    async def delete(self, upload_id: UUID) -> bool:
        return await self._delete(UPLOADS, upload_id)

    async def delete_abandoned(self, upload_id: UUID, expired_before: datetime) -> Upload | None:
        # DELETE … RETURNING (PostgreSQL, SQLite 3.35+): the condition is checked against the
        # row as it is when the delete takes its lock, so a commit that got there first wins.
        result = await self._execute(
            delete(UPLOADS)
            .where(
                UPLOADS.c.org_id == self._org_id,
                UPLOADS.c.id == upload_id,
                UPLOADS.c.status != UploadStatus.COMMITTED.value,
                UPLOADS.c.expires_at < expired_before,
                ~exists().where(ASSETS.c.upload_id == UPLOADS.c.id),
            )
            .returning(*UPLOADS.c)
        )
        row = result.mappings().first()
        return None if row is None else _upload_from_row(row)

    async def _one(self, condition: ColumnElement[bool]) -> Upload | None:
        return await self._first(UPLOADS, condition, _upload_from_row)


# -- assets ------------------------------------------------------------------------------------
def _media_json(media: MediaInfo) -> Any:
    # Through msgspec's encoder rather than the driver's json.dumps: the same JSON every other
    # surface emits (a non-finite float becomes null instead of invalid JSON PostgreSQL refuses).
    return msgspec.json.decode(msgspec.json.encode(media))


def _filter_columns(media: MediaInfo) -> dict[str, Any]:
    """The copies of the media description the list filters compare in SQL."""
    video = next(iter(media.video_streams), None)
    audio = next(iter(media.audio_streams), None)
    return {
        "duration": media.duration,
        "video_codec": video.codec.lower() if video and video.codec else None,
        "audio_codec": audio.codec.lower() if audio and audio.codec else None,
        "display_height": video.display_height if video else None,
    }


def _asset_values(asset: Asset) -> dict[str, Any]:
    return {
        "id": asset.id,
        "org_id": asset.org_id,
        "upload_id": asset.upload_id,
        "key": asset.key,
        "source_uri": asset.source_uri,
        "source_name": asset.source_name,
        "size_bytes": asset.size_bytes,
        "sha256": asset.sha256,
        "content_type": asset.content_type,
        "status": asset.status.value,
        "media": _media_json(asset.media),
        "created_at": asset.created_at,
        "updated_at": asset.updated_at,
        **_filter_columns(asset.media),
    }


def _asset_from_row(row: RowMapping) -> Asset:
    return asset_from_row(row, msgspec.convert(row["media"], MediaInfo))


def asset_from_row(row: Any, media: MediaInfo) -> Asset:
    """An asset of its row (a SQLAlchemy mapping or an asyncpg record) and its decoded media."""
    return Asset(
        id=row["id"],
        org_id=row["org_id"],
        upload_id=row["upload_id"],
        key=row["key"],
        source_uri=row["source_uri"],
        source_name=row["source_name"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        content_type=row["content_type"],
        status=AssetStatus(row["status"]),
        media=media,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _asset_conditions(filters: AssetFilter) -> list[ColumnElement[bool]]:
    """The filters of ``GET /v1/assets``: durations and height inclusive, creation times
    exclusive (``created_after=T`` is "after T"), ``codec`` matches the video or the audio."""
    conditions: list[ColumnElement[bool]] = []
    if filters.status is not None:
        conditions.append(ASSETS.c.status == filters.status.value)
    if filters.min_duration is not None:
        conditions.append(ASSETS.c.duration >= filters.min_duration)
    if filters.max_duration is not None:
        conditions.append(ASSETS.c.duration <= filters.max_duration)
    if filters.codec is not None:
        codec = filters.codec.lower()
        conditions.append(or_(ASSETS.c.video_codec == codec, ASSETS.c.audio_codec == codec))
    if filters.min_height is not None:
        conditions.append(ASSETS.c.display_height >= filters.min_height)
    if filters.created_after is not None:
        conditions.append(ASSETS.c.created_at > filters.created_after)
    if filters.created_before is not None:
        conditions.append(ASSETS.c.created_at < filters.created_before)
    if filters.sha256 is not None:
        conditions.append(ASSETS.c.sha256 == filters.sha256.lower())
    return conditions


class SqlAssetRepository(_OrgRepository):
    """Assets of the unit of work's organisation: another organisation's asset is ``None``."""

    async def add(self, asset: Asset) -> None:
        self._own(asset.org_id, "the asset")
        await self._insert_unique(
            insert(ASSETS).values(_asset_values(asset)), "the upload already has an asset"
        )

    async def get(self, asset_id: UUID) -> Asset | None:
        return await self._one(ASSETS.c.id == asset_id)

    async def get_by_upload(self, upload_id: UUID) -> Asset | None:
        return await self._one(ASSETS.c.upload_id == upload_id)

    async def total_size(self) -> int:
        result = await self._execute(
            select(func.coalesce(func.sum(ASSETS.c.size_bytes), 0)).where(
                ASSETS.c.org_id == self._org_id
            )
        )
        return int(result.scalar_one())

    async def list(
        self, filters: AssetFilter, *, limit: int, after: PageCursor | None
    ) -> AssetPage:
        """Newest first, ties by id; ``after`` continues strictly past the previous page's last
        asset (keyset pagination: stable while assets are added or removed)."""
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        conditions = [ASSETS.c.org_id == self._org_id, *_asset_conditions(filters)]
        if after is not None:
            conditions.append(
                or_(
                    ASSETS.c.created_at < after.created_at,
                    and_(ASSETS.c.created_at == after.created_at, ASSETS.c.id < after.id),
                )
            )
        result = await self._execute(
            select(ASSETS)
            .where(*conditions)
            .order_by(ASSETS.c.created_at.desc(), ASSETS.c.id.desc())
            .limit(limit + 1)  # one more than asked tells whether another page exists
        )
        items = [_asset_from_row(row) for row in result.mappings()]
        if len(items) <= limit:
            return AssetPage(items=items, next_cursor=None)
        items = items[:limit]
        last = items[-1]
        return AssetPage(
            items=items, next_cursor=PageCursor(created_at=last.created_at, id=last.id)
        )

    async def save(self, asset: Asset) -> None:
        await self._save(ASSETS, _asset_values(asset), "asset")

    async def delete(self, asset_id: UUID) -> bool:
        return await self._delete(ASSETS, asset_id)

    async def existing(self, asset_ids: Sequence[UUID]) -> set[UUID]:
        if not asset_ids:
            return set()
        result = await self._execute(
            select(ASSETS.c.id).where(
                ASSETS.c.org_id == self._org_id, ASSETS.c.id.in_(list(asset_ids))
            )
        )
        return {UUID(str(value)) for value in result.scalars()}

    async def _one(self, condition: ColumnElement[bool]) -> Asset | None:
        return await self._first(ASSETS, condition, _asset_from_row)


# -- jobs --------------------------------------------------------------------------------------
def _job_values(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "org_id": job.org_id,
        "asset_id": job.asset_id,
        "kind": job.kind.value,
        "status": job.status.value,
        "progress": job.progress,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "lease_expires_at": job.lease_expires_at,
        "next_attempt_at": job.next_attempt_at,
        "error_code": job.error.code if job.error else None,
        "error_message": job.error.message if job.error else None,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "thumbnail_count": job.thumbnails.count,
        "thumbnail_width": job.thumbnails.width,
        "thumbnail_format": job.thumbnails.format,
        "storyboard_width": job.storyboard.width if job.storyboard else None,
        "storyboard_format": job.storyboard.format if job.storyboard else None,
        "lease_owner": job.lease_owner,
        "enqueued_at": job.enqueued_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def job_from_row(row: RowMapping) -> Job:
    error = None
    if row["error_code"] is not None:
        error = JobError(code=row["error_code"], message=row["error_message"] or "")
    return Job(
        id=row["id"],
        org_id=row["org_id"],
        asset_id=row["asset_id"],
        kind=JobKind(row["kind"]),
        status=JobStatus(row["status"]),
        progress=row["progress"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        lease_expires_at=row["lease_expires_at"],
        next_attempt_at=row["next_attempt_at"],
        error=error,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        thumbnails=ThumbnailSpec(
            count=row["thumbnail_count"],
            width=row["thumbnail_width"],
            format=row["thumbnail_format"],
        ),
        storyboard=(
            StoryboardSpec(width=row["storyboard_width"], format=row["storyboard_format"])
            if row["storyboard_width"] is not None and row["storyboard_format"] is not None
            else None
        ),
        lease_owner=row["lease_owner"],
        enqueued_at=row["enqueued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class SqlJobRepository(_OrgRepository):
    """Job rows of the unit of work's organisation."""

    async def add(self, job: Job) -> None:
        self._own(job.org_id, "the job")
        await self._insert_unique(insert(JOBS).values(_job_values(job)), "the job exists")

    async def get(self, job_id: UUID) -> Job | None:
        return await self._first(JOBS, JOBS.c.id == job_id, job_from_row)

    async def save(self, job: Job) -> None:
        await self._save(JOBS, _job_values(job), "job")

    async def latest_for_asset(self, asset_id: UUID, kind: JobKind) -> Job | None:
        result = await self._execute(
            select(JOBS)
            .where(
                JOBS.c.org_id == self._org_id,
                JOBS.c.asset_id == asset_id,
                JOBS.c.kind == kind.value,
            )
            .order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc())
            .limit(1)
        )
        row = result.mappings().first()
        return None if row is None else job_from_row(row)

    async def count_active(self) -> int:
        result = await self._execute(
            select(func.count())
            .select_from(JOBS)
            .where(
                JOBS.c.org_id == self._org_id,
                JOBS.c.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)),
            )
        )
        return int(result.scalar_one())

    async def claim(
        self, job_id: UUID, owner: str, now: datetime, lease_until: datetime
    ) -> Job | None:
        claimable = or_(
            and_(
                JOBS.c.status == JobStatus.QUEUED.value,
                or_(JOBS.c.next_attempt_at.is_(None), JOBS.c.next_attempt_at <= now),
            ),
            and_(JOBS.c.status == JobStatus.RUNNING.value, JOBS.c.lease_expires_at < now),
        )
        changed = await self._change(
            update(JOBS)
            .where(JOBS.c.org_id == self._org_id, JOBS.c.id == job_id, claimable)
            .values(
                status=JobStatus.RUNNING.value,
                attempts=JOBS.c.attempts + 1,
                lease_owner=owner,
                lease_expires_at=lease_until,
                started_at=func.coalesce(JOBS.c.started_at, now),
                updated_at=now,
            )
        )
        return await self.get(job_id) if changed else None

    async def heartbeat(
        self, job_id: UUID, owner: str, lease_until: datetime, progress: float
    ) -> bool:
        changed = await self._change(
            update(JOBS)
            .where(
                JOBS.c.org_id == self._org_id,
                JOBS.c.id == job_id,
                JOBS.c.status == JobStatus.RUNNING.value,
                JOBS.c.lease_owner == owner,
            )
            .values(lease_expires_at=lease_until, progress=progress)
        )
        return changed == 1

    async def finish(self, job: Job, owner: str) -> bool:
        running = JOBS.c.status == JobStatus.RUNNING.value
        owned = JOBS.c.lease_owner == owner
        return await self._update(JOBS, _job_values(job), "job", running, owned) == 1

    async def list(self, filters: JobFilter, *, limit: int, after: PageCursor | None) -> JobPage:
        """Newest first, ties by id; creation times exclusive, like the asset listing."""
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        conditions: list[ColumnElement[bool]] = [JOBS.c.org_id == self._org_id]
        if filters.status is not None:
            conditions.append(JOBS.c.status == filters.status.value)
        if filters.kind is not None:
            conditions.append(JOBS.c.kind == filters.kind.value)
        if filters.asset_id is not None:
            conditions.append(JOBS.c.asset_id == filters.asset_id)
        if filters.created_after is not None:
            conditions.append(JOBS.c.created_at > filters.created_after)
        if filters.created_before is not None:
            conditions.append(JOBS.c.created_at < filters.created_before)
        if after is not None:
            conditions.append(
                or_(
                    JOBS.c.created_at < after.created_at,
                    and_(JOBS.c.created_at == after.created_at, JOBS.c.id < after.id),
                )
            )
        result = await self._execute(
            select(JOBS)
            .where(*conditions)
            .order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc())
            .limit(limit + 1)
        )
        items = [job_from_row(row) for row in result.mappings()]
        if len(items) <= limit:
            return JobPage(items=items, next_cursor=None)
        items = items[:limit]
        return JobPage(
            items=items, next_cursor=PageCursor(created_at=items[-1].created_at, id=items[-1].id)
        )
