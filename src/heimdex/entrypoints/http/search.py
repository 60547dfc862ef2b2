"""Search by what frames look like: ``GET /v1/assets/{id}/similar`` and
``POST /v1/search/frames`` (``heimdex.application.search``)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import SerializationException
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    RequestBody,
    Schema,
)
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_200_OK

from heimdex.application.search import (
    MAX_LIMIT,
    FrameHits,
    SearchService,
    SimilarAssets,
)
from heimdex.domain import errors
from heimdex.domain.frames import DEFAULT_MAX_DISTANCE, MAX_DISTANCE
from heimdex.domain.model import Principal
from heimdex.entrypoints.http.openapi import (
    AUTHENTICATED,
    JSON_BODY,
    PARAMETERS,
    SERVER,
    documented,
    raises,
)

#: a search image's bytes, at most (the route's body cap)
MAX_IMAGE_BYTES = 5 << 20
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
_MAX_DISTANCE_TEXT = (
    f"the largest Hamming distance (of 64 bits) a frame may be from the query, 0 to "
    f"{MAX_DISTANCE}, the most the search answers exactly. {DEFAULT_MAX_DISTANCE} finds "
    "re-encodes, rescales and brightened copies"
)


class FrameQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The frame of ``asset_id`` at ``time`` seconds, or (not yet available) ``text``."""

    asset_id: UUID | None = None
    time: float | None = None
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)] | None = None


_QUERY_SCHEMA = Schema(
    one_of=[
        Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "asset_id": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID),
                "time": Schema(
                    type=OpenAPIType.NUMBER,
                    description="seconds; outside [0, duration] is 422 `time_out_of_range`",
                ),
            },
            required=["asset_id", "time"],
            additional_properties=False,
        ),
        Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "text": Schema(
                    type=OpenAPIType.STRING,
                    min_length=1,
                    max_length=1000,
                    description="search by text: answered 501 `semantic_search_unavailable` "
                    "until a text model is plugged in",
                )
            },
            required=["text"],
            additional_properties=False,
        ),
    ]
)
_IMAGE_SCHEMA = Schema(
    type=OpenAPIType.STRING,
    format=OpenAPIFormat.BINARY,
    description="one picture, at most 5 MiB",
)
_SEARCH_BODY = RequestBody(
    required=True,
    description="The query frame: `{asset_id, time}`, or an image (JPEG, PNG or WebP).",
    content={
        "application/json": OpenAPIMediaType(schema=_QUERY_SCHEMA),
        **{kind: OpenAPIMediaType(schema=_IMAGE_SCHEMA) for kind in IMAGE_TYPES},
    },
)


def _query(value: Any) -> tuple[UUID, float] | str:
    """The frame of a JSON query (asset id, time), or its text."""
    try:
        query = msgspec.convert(value, type=FrameQuery)
    except msgspec.ValidationError as exc:
        raise errors.InvalidInput(f"the query is not valid: {exc}") from exc
    if query.text is not None:
        if query.asset_id is not None or query.time is not None:
            raise errors.InvalidInput("send either text, or asset_id and time")
        return query.text
    if query.asset_id is None or query.time is None:
        raise errors.InvalidInput("send asset_id and time (or an image, or text)")
    return query.asset_id, query.time


async def _json(request: Request[Any, Any, Any]) -> Any:
    """The JSON body, through the app's guarded request (depth, NUL characters)."""
    try:
        return await request.json()
    except SerializationException as exc:
        raise errors.InvalidInput("the body is not JSON") from exc


class SearchController(Controller):
    tags = ["search"]

    @get(
        "/assets/{asset_id:uuid}/similar",
        operation_id="similarAssets",
        **documented(
            AUTHENTICATED,
            PARAMETERS,
            SERVER,
            raises(errors.NotFound, errors.FramesNotReady),
        ),
        summary="Find assets that share frames with this one",
        description="Other assets of the organisation with frames within `max_distance` of "
        "this one's (its storyboard tiles and thumbnails, fingerprinted by the sidecar job): a "
        "re-encode, a rescale, a trim. Ranked by how many of this asset's frames they match, "
        "then by the mean distance; each with a few matched time pairs. 409 "
        "`frames_not_ready` before the asset's first sidecar job (or `heimdex reindex`).",
    )
    async def similar(
        self,
        asset_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        search: NamedDependency[SearchService],
        max_distance: Annotated[
            int, QueryParameter(ge=0, le=MAX_DISTANCE, description=_MAX_DISTANCE_TEXT)
        ] = DEFAULT_MAX_DISTANCE,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 10,
    ) -> SimilarAssets:
        return await search.similar_assets(
            principal, asset_id, max_distance=max_distance, limit=limit
        )

    @post(
        "/search/frames",
        operation_id="searchFrames",
        status_code=HTTP_200_OK,
        request_max_body_size=MAX_IMAGE_BYTES,
        **documented(
            AUTHENTICATED,
            PARAMETERS,
            SERVER,
            JSON_BODY,
            raises(
                errors.NotFound,
                errors.FramesNotReady,
                errors.TimeOutOfRange,
                errors.UnsupportedMediaType,
                errors.SemanticSearchUnavailable,
                errors.ProberUnavailable,
                errors.SearchImagesBusy,
                errors.DecodersBusy,
                errors.DecoderCrashed,
                errors.StorageError,
            ),
            raises(errors.InvalidImage, family=True),
            raises(errors.DecodeLimitExceeded, family=True),
            {413: ["request_too_large"]},
            request_body=_SEARCH_BODY,
        ),
        summary="Find frames that look like this one",
        description="The frames of the organisation's assets nearest a query frame, best "
        "first: the frame of an asset at a time (`{asset_id, time}`: its fingerprinted frame "
        "nearest that time, itself left out), or an image sent as the body (`image/jpeg`, "
        "`image/png` or `image/webp`, at most 5 MiB, one frame, decoded in the decode pool "
        "within `HEIMDEX_DECODE_MAX_PIXELS`). Each with a signed URL of its picture. "
        "`{text}` answers 501 `semantic_search_unavailable`: there is no text model yet.",
    )
    async def frames(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        search: NamedDependency[SearchService],
        public_url: NamedDependency[str],
        max_distance: Annotated[
            int, QueryParameter(ge=0, le=MAX_DISTANCE, description=_MAX_DISTANCE_TEXT)
        ] = DEFAULT_MAX_DISTANCE,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
    ) -> FrameHits:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        base_url = public_url
        if content_type in IMAGE_TYPES:
            return await search.frames_like_image(
                principal,
                await request.body(),
                max_distance=max_distance,
                limit=limit,
                base_url=base_url,
            )
        if content_type != "application/json":
            raise errors.UnsupportedMediaType(
                "send application/json ({asset_id, time}) or an image: " + ", ".join(IMAGE_TYPES)
            )
        query = _query(await _json(request))
        if isinstance(query, str):
            return await search.frames_like_text(principal, query)
        asset_id, time = query
        return await search.frames_like_asset_frame(
            principal,
            asset_id,
            time,
            max_distance=max_distance,
            limit=limit,
            base_url=base_url,
        )
