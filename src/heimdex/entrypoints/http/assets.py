"""``/v1/assets``: the catalogue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get
from litestar.di import NamedDependency
from litestar.openapi.spec import Link
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from heimdex.application.assets import MAX_HEIGHT, MAX_PAGE_SIZE, AssetService, encode_cursor
from heimdex.domain import errors
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Asset, AssetFilter, AssetStatus, Principal
from heimdex.entrypoints.http.auth import current_principal
from heimdex.entrypoints.http.openapi import (
    AUTHENTICATED,
    NOT_FOUND,
    PARAMETERS,
    SERVER,
    documented,
    raises,
)
from heimdex.entrypoints.http.query_values import parse_timestamp

SHA256_PATTERN = "^[0-9a-fA-F]{64}$"
_ASSET_ID = {"asset_id": "$response.body#/asset_id"}
#: where a client goes from an answer that carries an asset
ASSET_LINKS = {
    "getAsset": Link(operation_id="getAsset", parameters=_ASSET_ID),
    "requestSidecar": Link(operation_id="requestSidecar", parameters=_ASSET_ID),
    "readSidecar": Link(operation_id="readSidecar", parameters=_ASSET_ID),
    "listThumbnails": Link(operation_id="listThumbnails", parameters=_ASSET_ID),
    "probeAsset": Link(operation_id="probeMedia", request_body=_ASSET_ID),
    "deleteAsset": Link(operation_id="deleteAsset", parameters=_ASSET_ID),
}


class VideoSummary(msgspec.Struct, frozen=True, kw_only=True):
    codec: str | None
    width: int | None
    height: int | None
    display_width: int | None
    display_height: int | None
    rotation: int | None
    frame_rate: float | None
    hdr: bool | None


class AudioSummary(msgspec.Struct, frozen=True, kw_only=True):
    codec: str | None
    channels: int | None
    sample_rate: int | None


class MediaSummary(msgspec.Struct, frozen=True, kw_only=True):
    format_name: str
    duration: float | None
    bit_rate: int | None
    video: VideoSummary | None
    audio: AudioSummary | None
    stream_count: int


class AssetLinks(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class AssetView(msgspec.Struct, frozen=True, kw_only=True):
    asset_id: UUID
    upload_id: UUID
    status: AssetStatus
    source_name: str
    source_uri: str
    size_bytes: int
    sha256: str
    content_type: str
    media: MediaSummary
    created_at: datetime
    updated_at: datetime
    links: AssetLinks


class AssetList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AssetView]
    next_cursor: str | None


def media_summary(media: MediaInfo) -> MediaSummary:
    video = next(iter(media.video_streams), None)
    audio = next(iter(media.audio_streams), None)
    return MediaSummary(
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
    )


def asset_view(asset: Asset) -> AssetView:
    return AssetView(
        asset_id=asset.id,
        upload_id=asset.upload_id,
        status=asset.status,
        source_name=asset.source_name,
        source_uri=asset.source_uri,
        size_bytes=asset.size_bytes,
        sha256=asset.sha256,
        content_type=asset.content_type,
        media=media_summary(asset.media),
        created_at=asset.created_at,
        updated_at=asset.updated_at,
        links=AssetLinks(self=f"/v1/assets/{asset.id}"),
    )


class AssetController(Controller):
    path = "/assets"
    tags = ["assets"]

    @get(
        "/",
        operation_id="listAssets",
        **documented(AUTHENTICATED, PARAMETERS, SERVER, raises(errors.TimestampOutOfRange)),
        summary="List assets",
        description="Newest first. Pass `next_cursor` back as `cursor` for the next page. "
        "`codec` matches the video or audio codec; `min_height` the displayed height; "
        "`sha256` the source's checksum exactly (is this file already here?).",
    )
    async def list_assets(
        self,
        request: Request[Any, Any, Any],
        assets: NamedDependency[AssetService],
        status: Annotated[AssetStatus | None, QueryParameter()] = None,
        min_duration: Annotated[float | None, QueryParameter(ge=0)] = None,
        max_duration: Annotated[float | None, QueryParameter(ge=0)] = None,
        codec: Annotated[str | None, QueryParameter(max_length=64)] = None,
        min_height: Annotated[int | None, QueryParameter(ge=0, le=MAX_HEIGHT)] = None,
        created_after: Annotated[str | None, QueryParameter(format="date-time")] = None,
        created_before: Annotated[str | None, QueryParameter(format="date-time")] = None,
        # The length too: "$" matches before a final newline, so the pattern alone let one in.
        sha256: Annotated[
            str | None, QueryParameter(pattern=SHA256_PATTERN, min_length=64, max_length=64)
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> AssetList:
        page = await assets.list(
            current_principal(request),
            AssetFilter(
                status=status,
                min_duration=min_duration,
                max_duration=max_duration,
                codec=codec,
                min_height=min_height,
                created_after=parse_timestamp("created_after", created_after),
                created_before=parse_timestamp("created_before", created_before),
                sha256=sha256.lower() if sha256 else None,
            ),
            limit,
            cursor,
        )
        return AssetList(
            items=[asset_view(a) for a in page.items],
            next_cursor=encode_cursor(page.next_cursor) if page.next_cursor else None,
        )

    @get(
        "/{asset_id:uuid}",
        operation_id="getAsset",
        **documented(AUTHENTICATED, PARAMETERS, NOT_FOUND, SERVER, links=ASSET_LINKS),
        summary="Read an asset",
    )
    async def get_asset(
        self,
        asset_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        assets: NamedDependency[AssetService],
    ) -> AssetView:
        # The caller from the request, not injected: with two dependencies Litestar resolves
        # them concurrently in a task group, which cost a hot read more than its lookup.
        return asset_view(await assets.get(current_principal(request), asset_id))

    @delete(
        "/{asset_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        operation_id="deleteAsset",
        **documented(
            AUTHENTICATED,
            PARAMETERS,
            NOT_FOUND,
            SERVER,
            raises(errors.StorageError),
            idempotent=True,
        ),
        summary="Delete an asset",
        description="Removes the asset, its source object and every derived file.",
    )
    async def delete_asset(
        self,
        asset_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        assets: NamedDependency[AssetService],
    ) -> None:
        await assets.delete(principal, asset_id)
