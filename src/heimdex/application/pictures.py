"""Storyboards and posters: storing what a sidecar job made, reading them back with signed URLs
(as JSON, and the storyboard as WebVTT for a player's seek bar), and a poster a user chooses.

The sidecar is where both are recorded (``storyboard``, ``poster``); the images are under
``derived/{org_id}/{asset_id}/`` (``storyboard/``, ``poster/``), so deleting the asset, or the
derived-files sweep, removes them with the thumbnails. A poster a user chose is kept by a
re-run of the sidecar job: the job makes it again at the time they chose.
"""

from __future__ import annotations

import math
from uuid import UUID

import msgspec

from heimdex.application.owned_assets import owned_asset
from heimdex.domain.errors import (
    InvalidMedia,
    NoStoryboard,
    NoVideo,
    SidecarNotReady,
    SourceNotFound,
    ThumbnailerUnavailable,
    TimeOutOfRange,
)
from heimdex.domain.model import Asset, Poster, Principal, Storyboard
from heimdex.domain.ports import Clock, PictureMaker, Storage, UnitOfWorkFactory
from heimdex.domain.sidecar import (
    PosterChooser,
    PosterRef,
    SidecarDocument,
    SpriteRef,
    StoryboardRef,
    encode_sidecar,
)
from heimdex.domain.storage_keys import poster_key, sidecar_key, sprite_key


# -- what a job stores --------------------------------------------------------------------------
async def read_sidecar(storage: Storage, asset: Asset) -> SidecarDocument | None:
    """The asset's sidecar as stored; ``None`` before its first job succeeded."""
    try:
        chunks = [c async for c in storage.read_chunks(sidecar_key(asset.org_id, asset.id))]
    except SourceNotFound:
        return None
    return msgspec.json.decode(b"".join(chunks), type=SidecarDocument)


async def store_storyboard(
    storage: Storage, asset: Asset, storyboard: Storyboard | None
) -> StoryboardRef | None:
    """Write the storyboard's sprite sheets; what the sidecar lists of it."""
    if storyboard is None:
        return None
    sprites = []
    for sprite in storyboard.sprites:
        key = sprite_key(asset.org_id, asset.id, sprite.index, storyboard.format)
        await storage.write_bytes(key, sprite.data)
        sprites.append(
            SpriteRef(
                index=sprite.index,
                key=key,
                width=sprite.width,
                height=sprite.height,
                format=storyboard.format,
            )
        )
    return StoryboardRef(
        interval=storyboard.interval,
        tile_width=storyboard.tile_width,
        tile_height=storyboard.tile_height,
        format=storyboard.format,
        sprites=sprites,
        tiles=list(storyboard.tiles),
    )


async def store_poster(
    storage: Storage, asset: Asset, poster: Poster, chosen_by: PosterChooser
) -> PosterRef:
    """Write the poster; what the sidecar lists of it."""
    key = poster_key(asset.org_id, asset.id, poster.time)
    await storage.write_bytes(key, poster.data)
    return PosterRef(
        time=poster.time,
        key=key,
        width=poster.width,
        height=poster.height,
        format="jpg",
        chosen_by=chosen_by,
    )


# -- what clients read --------------------------------------------------------------------------
class StoryboardSheet(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    width: int
    height: int
    url: str


class StoryboardCue(msgspec.Struct, frozen=True, kw_only=True):
    """A cue of the WebVTT file: from ``start`` to ``end`` show ``url`` (a sprite sheet's URL
    with ``#xywh=x,y,w,h``, the tile's place on it); ``time`` is the frame the tile shows."""

    start: float
    end: float
    time: float
    url: str


class StoryboardView(msgspec.Struct, frozen=True, kw_only=True):
    interval: float
    tile_width: int
    tile_height: int
    format: str
    sprites: list[StoryboardSheet]
    cues: list[StoryboardCue]


class PosterView(msgspec.Struct, frozen=True, kw_only=True):
    time: float
    width: int
    height: int
    url: str
    chosen_by: PosterChooser


def webvtt(view: StoryboardView) -> str:
    """The storyboard as WebVTT: one cue per tile, its text the tile's URL."""
    lines = ["WEBVTT", ""]
    for cue in view.cues:
        lines += [f"{_vtt_time(cue.start)} --> {_vtt_time(cue.end)}", cue.url, ""]
    return "\n".join(lines)


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


class PictureService:
    """Reads storyboards and posters with URLs that work without a token until they expire,
    and makes a poster a user chooses."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        storage: Storage,
        clock: Clock,
        url_ttl_seconds: int,
        pictures: PictureMaker | None,
    ) -> None:
        self._uow = uow
        self._storage = storage
        self._clock = clock
        self._url_ttl = url_ttl_seconds
        self._pictures = pictures

    async def _asset(self, principal: Principal, asset_id: UUID) -> Asset:
        return await owned_asset(self._uow, principal, asset_id)

    async def _document(self, asset: Asset) -> SidecarDocument:
        document = await read_sidecar(self._storage, asset)
        if document is None:
            raise SidecarNotReady(
                "the sidecar is not ready: POST /v1/assets/{asset_id}/sidecar and poll the job"
            )
        return document

    def _expires(self) -> int:
        return int(self._clock.now().timestamp()) + self._url_ttl

    async def storyboard(
        self, principal: Principal, asset_id: UUID, base_url: str
    ) -> StoryboardView:
        """The storyboard's cues, each with its tile's signed URL (``…#xywh=x,y,w,h``)."""
        asset = await self._asset(principal, asset_id)
        board = (await self._document(asset)).storyboard
        if board is None:
            if not asset.media.video_streams:
                raise NoVideo("the asset has no video, so no storyboard")
            raise NoStoryboard(
                "the sidecar has no storyboard: POST /v1/assets/{asset_id}/sidecar with "
                '"force": true (and without "storyboard": false) to make one'
            )
        expires = self._expires()
        urls = {
            sprite.index: await self._storage.download_url(sprite.key, base_url, expires)
            for sprite in board.sprites
        }
        return StoryboardView(
            interval=board.interval,
            tile_width=board.tile_width,
            tile_height=board.tile_height,
            format=board.format,
            sprites=[
                StoryboardSheet(index=s.index, width=s.width, height=s.height, url=urls[s.index])
                for s in board.sprites
            ],
            cues=[
                StoryboardCue(
                    start=tile.start,
                    end=tile.end,
                    time=tile.time,
                    url=f"{urls[tile.sprite]}#xywh={tile.x},{tile.y},{tile.w},{tile.h}",
                )
                for tile in board.tiles
            ],
        )

    async def poster(self, principal: Principal, asset_id: UUID, base_url: str) -> PosterView:
        """The poster, with a signed URL."""
        asset = await self._asset(principal, asset_id)
        if not asset.media.video_streams:
            raise NoVideo("the asset has no video, so no poster")
        poster = (await self._document(asset)).poster
        if poster is None:
            raise SidecarNotReady(
                "the sidecar was made before posters were: POST /v1/assets/{asset_id}/sidecar "
                'with "force": true'
            )
        return await self._view(poster, base_url)

    async def set_poster(
        self, principal: Principal, asset_id: UUID, seconds: float, base_url: str
    ) -> PosterView:
        """Make the frame shown at ``seconds`` the poster (in the decode pool, now): the
        sidecar records it as chosen by the user, and later runs of its job keep it."""
        asset = await self._asset(principal, asset_id)
        media = asset.media
        if not media.video_streams:
            raise NoVideo("the asset has no video, so no poster")
        duration = media.duration or media.video_streams[0].duration
        if not math.isfinite(seconds) or seconds < 0 or (duration and seconds > duration):
            raise TimeOutOfRange(f"time must be between 0 and the duration ({duration} s)")
        document = await self._document(asset)
        if self._pictures is None:
            raise ThumbnailerUnavailable("this process makes no posters")
        async with self._storage.local_path(asset.key) as path:
            made = await self._pictures.pictures(path, media, None, seconds)
        if made.poster is None:
            raise InvalidMedia("no frame of the video could be decoded at that time")
        poster = await store_poster(self._storage, asset, made.poster, "user")
        old = document.poster
        await self._storage.write_bytes(
            sidecar_key(asset.org_id, asset.id),
            encode_sidecar(msgspec.structs.replace(document, poster=poster)),
        )
        if old is not None and old.key != poster.key:
            await self._storage.delete(old.key)
        return await self._view(poster, base_url)

    async def _view(self, poster: PosterRef, base_url: str) -> PosterView:
        return PosterView(
            time=poster.time,
            width=poster.width,
            height=poster.height,
            url=await self._storage.download_url(poster.key, base_url, self._expires()),
            chosen_by=poster.chosen_by,
        )
