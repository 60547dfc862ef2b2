"""The floor for benchmarks/api_load.py's reads: an independent minimal Litestar app that answers
the API's read routes with the same JSON, on raw asyncpg.

    python benchmarks/_asyncpg_reference.py PORT   (HEIMDEX_JWT_SECRET, REFERENCE_DSN)

Per request it verifies the same HS256 bearer token with PyJWT, takes a connection from an
asyncpg pool of 15, and in one transaction runs ``set_config('heimdex.org_id', org, true)`` and
the SELECT (prepared statements, asyncpg's cache) as the runtime role under row-level security;
it answers msgspec structs shaped like the API's views. No logging, no middleware, no
dependency injection, no rate limits: what a read costs when nothing else is done. It imports
nothing from Heimdex, so its answer being byte-for-byte the API's (which api_load.py checks) is
a real comparison.
"""

from __future__ import annotations

import base64
import os
import sys
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import jwt
import msgspec
import uvicorn
from litestar import Litestar, Request, get
from litestar.exceptions import NotAuthorizedException, NotFoundException

SECRET = os.environ["HEIMDEX_JWT_SECRET"]
DSN = os.environ["REFERENCE_DSN"]
POOL_SIZE = 15

# -- the views (the API's JSON, declared again) -----------------------------------------------


class Stream(msgspec.Struct, kw_only=True):
    kind: str
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    display_width: int | None = None
    display_height: int | None = None
    rotation: int | None = None
    frame_rate: float | None = None
    hdr: bool | None = None
    channels: int | None = None
    sample_rate: int | None = None


class Media(msgspec.Struct, kw_only=True):
    format_name: str
    duration: float | None
    bit_rate: int | None
    streams: list[Stream] = []


class VideoSummary(msgspec.Struct, kw_only=True):
    codec: str | None
    width: int | None
    height: int | None
    display_width: int | None
    display_height: int | None
    rotation: int | None
    frame_rate: float | None
    hdr: bool | None


class AudioSummary(msgspec.Struct, kw_only=True):
    codec: str | None
    channels: int | None
    sample_rate: int | None


class MediaSummary(msgspec.Struct, kw_only=True):
    format_name: str
    duration: float | None
    bit_rate: int | None
    video: VideoSummary | None
    audio: AudioSummary | None
    stream_count: int


class AssetLinks(msgspec.Struct, kw_only=True):
    self: str


class AssetView(msgspec.Struct, kw_only=True):
    asset_id: UUID
    upload_id: UUID
    status: str
    source_name: str
    source_uri: str
    size_bytes: int
    sha256: str
    content_type: str
    media: MediaSummary
    created_at: datetime
    updated_at: datetime
    links: AssetLinks


class JobError(msgspec.Struct, kw_only=True):
    code: str
    message: str


class Thumbnails(msgspec.Struct, kw_only=True):
    count: int
    width: int
    format: str


class Storyboard(msgspec.Struct, kw_only=True):
    width: int
    format: str


class JobLinks(msgspec.Struct, kw_only=True):
    self: str
    asset: str
    sidecar: str
    thumbnails: str


class JobView(msgspec.Struct, kw_only=True):
    job_id: UUID
    kind: str
    status: str
    asset_id: UUID
    progress: float
    attempts: int
    max_attempts: int
    error: JobError | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    thumbnails: Thumbnails
    storyboard: Storyboard | None
    links: JobLinks


class AssetList(msgspec.Struct, kw_only=True):
    items: list[AssetView]
    next_cursor: str | None


class JobList(msgspec.Struct, kw_only=True):
    items: list[JobView]
    next_cursor: str | None


class Cursor(msgspec.Struct, kw_only=True):
    created_at: datetime
    id: UUID


_media_decoder = msgspec.json.Decoder(Media)


def asset_view(row: asyncpg.Record) -> AssetView:
    media = _media_decoder.decode(row["media"])
    video = next((s for s in media.streams if s.kind == "video"), None)
    audio = next((s for s in media.streams if s.kind == "audio"), None)
    return AssetView(
        asset_id=row["id"],
        upload_id=row["upload_id"],
        status=row["status"],
        source_name=row["source_name"],
        source_uri=row["source_uri"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        content_type=row["content_type"],
        media=MediaSummary(
            format_name=media.format_name,
            duration=media.duration,
            bit_rate=media.bit_rate,
            video=None
            if video is None
            else VideoSummary(
                codec=video.codec,
                width=video.width,
                height=video.height,
                display_width=video.display_width,
                display_height=video.display_height,
                rotation=video.rotation,
                frame_rate=video.frame_rate,
                hdr=video.hdr,
            ),
            audio=None
            if audio is None
            else AudioSummary(
                codec=audio.codec, channels=audio.channels, sample_rate=audio.sample_rate
            ),
            stream_count=len(media.streams),
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        links=AssetLinks(self=f"/v1/assets/{row['id']}"),
    )


def job_view(row: asyncpg.Record) -> JobView:
    asset = f"/v1/assets/{row['asset_id']}"
    return JobView(
        job_id=row["id"],
        kind=row["kind"],
        status=row["status"],
        asset_id=row["asset_id"],
        progress=row["progress"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        error=None
        if row["error_code"] is None
        else JobError(code=row["error_code"], message=row["error_message"] or ""),
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        thumbnails=Thumbnails(
            count=row["thumbnail_count"],
            width=row["thumbnail_width"],
            format=row["thumbnail_format"],
        ),
        storyboard=None
        if row["storyboard_width"] is None or row["storyboard_format"] is None
        else Storyboard(width=row["storyboard_width"], format=row["storyboard_format"]),
        links=JobLinks(
            self=f"/v1/jobs/{row['id']}",
            asset=asset,
            sidecar=f"{asset}/sidecar",
            thumbnails=f"{asset}/thumbnails",
        ),
    )


def cursor_after(rows: list[asyncpg.Record], limit: int) -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    raw = msgspec.json.encode(Cursor(created_at=last["created_at"], id=last["id"]))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- the requests ------------------------------------------------------------------------------


def org_of(request: Request[Any, Any, Any]) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise NotAuthorizedException()
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})
    except jwt.InvalidTokenError as exc:
        raise NotAuthorizedException() from exc
    org = claims.get("org_id")
    if not isinstance(org, str) or not org:
        raise NotAuthorizedException()
    return org


SET_ORG = "SELECT set_config('heimdex.org_id', $1, true)"


async def scoped(request: Request[Any, Any, Any], query: str, *args: Any) -> list[asyncpg.Record]:
    org = org_of(request)
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(SET_ORG, org)
        rows: list[asyncpg.Record] = await connection.fetch(query, org, *args)
        return rows


@get("/v1/assets/{asset_id:uuid}")
async def get_asset(request: Request[Any, Any, Any], asset_id: UUID) -> AssetView:
    rows = await scoped(request, "SELECT * FROM assets WHERE org_id = $1 AND id = $2", asset_id)
    if not rows:
        raise NotFoundException()
    return asset_view(rows[0])


@get("/v1/jobs/{job_id:uuid}")
async def get_job(request: Request[Any, Any, Any], job_id: UUID) -> JobView:
    rows = await scoped(request, "SELECT * FROM jobs WHERE org_id = $1 AND id = $2", job_id)
    if not rows:
        raise NotFoundException()
    return job_view(rows[0])


@get("/v1/assets")
async def list_assets(request: Request[Any, Any, Any], limit: int = 50) -> AssetList:
    rows = await scoped(
        request,
        "SELECT * FROM assets WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        limit + 1,
    )
    return AssetList(
        items=[asset_view(r) for r in rows[:limit]], next_cursor=cursor_after(rows, limit)
    )


@get("/v1/jobs")
async def list_jobs(request: Request[Any, Any, Any], limit: int = 50) -> JobList:
    rows = await scoped(
        request,
        "SELECT * FROM jobs WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        limit + 1,
    )
    return JobList(items=[job_view(r) for r in rows[:limit]], next_cursor=cursor_after(rows, limit))


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def open_pool(app: Litestar) -> None:
    app.state.pool = await asyncpg.create_pool(DSN, min_size=POOL_SIZE, max_size=POOL_SIZE)


async def close_pool(app: Litestar) -> None:
    await app.state.pool.close()


app = Litestar(
    route_handlers=[health, get_asset, get_job, list_assets, list_jobs],
    on_startup=[open_pool],
    on_shutdown=[close_pool],
    openapi_config=None,
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False)
