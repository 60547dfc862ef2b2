"""Storyboards and posters over HTTP: read them (with signed URLs), choose a poster."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, Response, get, put
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from heimdex.application.pictures import PictureService, PosterView, StoryboardView, webvtt
from heimdex.domain import errors
from heimdex.domain.model import Principal
from heimdex.entrypoints.http.openapi import (
    AUTHENTICATED,
    JSON_BODY,
    PARAMETERS,
    SERVER,
    documented,
    raises,
)

_READ = raises(errors.NotFound, errors.SidecarNotReady, errors.NoVideo, errors.StorageError)


class PosterChoice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Any number: one outside [0, duration] is answered 422 time_out_of_range.
    time: float


class PictureController(Controller):
    path = "/assets/{asset_id:uuid}"
    tags = ["sidecars"]

    @get(
        "/storyboard",
        operation_id="getStoryboard",
        **documented(AUTHENTICATED, PARAMETERS, SERVER, _READ, raises(errors.NoStoryboard)),
        summary="Read the storyboard",
        description="Tiles for a seek bar: one every `interval` seconds (max(1 s, duration / "
        "100)), on sprite sheets; each cue's `url` is its sheet's signed URL (no token needed "
        "until it expires) with `#xywh=x,y,w,h`, the tile's place on it. The same as "
        "`storyboard.vtt`, as JSON.",
    )
    async def get_storyboard(
        self,
        asset_id: FromPath[UUID],
        public_url: NamedDependency[str],
        principal: NamedDependency[Principal],
        pictures: NamedDependency[PictureService],
    ) -> StoryboardView:
        return await pictures.storyboard(principal, asset_id, public_url)

    @get(
        "/storyboard.vtt",
        operation_id="getStoryboardVtt",
        **documented(
            AUTHENTICATED,
            PARAMETERS,
            SERVER,
            _READ,
            raises(errors.NoStoryboard),
            responses={
                200: ResponseSpec(
                    data_container=str,
                    media_type="text/vtt",
                    generate_examples=False,
                    description="WebVTT: one cue per tile, its text the tile's signed URL "
                    "with `#xywh=x,y,w,h`",
                )
            },
        ),
        summary="Read the storyboard as WebVTT",
        description='For a player\'s seek-bar previews (`<track kind="metadata">`, or a '
        "player's thumbnails option): the sprite URLs are absolute, signed and expiring.",
        media_type="text/vtt",
    )
    async def get_storyboard_vtt(
        self,
        asset_id: FromPath[UUID],
        public_url: NamedDependency[str],
        principal: NamedDependency[Principal],
        pictures: NamedDependency[PictureService],
    ) -> Response[str]:
        view = await pictures.storyboard(principal, asset_id, public_url)
        return Response(webvtt(view), media_type="text/vtt; charset=utf-8")

    @get(
        "/poster",
        operation_id="getPoster",
        **documented(AUTHENTICATED, PARAMETERS, SERVER, _READ),
        summary="Read the poster",
        description="The picture that stands for the video, with a signed URL. Made by every "
        "sidecar job (`chosen_by: auto`: among the storyboard's tiles — or the ten thumbnail "
        "slots' frames without a storyboard — the most detailed one that is not dull) unless a "
        "user chose one (`chosen_by: user`).",
    )
    async def get_poster(
        self,
        asset_id: FromPath[UUID],
        public_url: NamedDependency[str],
        principal: NamedDependency[Principal],
        pictures: NamedDependency[PictureService],
    ) -> PosterView:
        return await pictures.poster(principal, asset_id, public_url)

    @put(
        "/poster",
        operation_id="setPoster",
        **documented(
            AUTHENTICATED,
            JSON_BODY,
            SERVER,
            _READ,
            raises(
                errors.TimeOutOfRange,
                errors.InvalidMedia,
                errors.DecoderCrashed,
                errors.DecodeLimitExceeded,
                errors.ThumbnailTimeout,
                errors.ThumbnailerUnavailable,
                errors.DecodersBusy,
            ),
            idempotent=True,
        ),
        summary="Choose the poster",
        description="Makes the frame shown at `time` (seconds) the poster, now (decoded in "
        "the decode pool, bounded by `HEIMDEX_THUMBNAIL_TIMEOUT_SECONDS`), and answers it. "
        "Later runs of the sidecar job keep the choice. 422 `time_out_of_range` outside "
        "[0, duration]; 409 `no_video` for an asset without video.",
    )
    async def set_poster(
        self,
        asset_id: FromPath[UUID],
        data: JSONBody[PosterChoice],
        public_url: NamedDependency[str],
        principal: NamedDependency[Principal],
        pictures: NamedDependency[PictureService],
    ) -> PosterView:
        return await pictures.set_poster(principal, asset_id, data.time, public_url)
