"""``GET /v1/files/{key}``: derived files (thumbnails, sidecars) of the local backend, fetched
with the signature in the URL instead of a token — what a presigned S3 GET is for S3."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.response import Stream

from heimdex.application.sidecars import SidecarService
from heimdex.application.signed_urls import Refusals, SignedUrlVerifier
from heimdex.domain import errors
from heimdex.domain.errors import InvalidUrlSignature, UrlExpired
from heimdex.domain.storage_keys import validate_key
from heimdex.entrypoints.http.input_guard import InputGuardMiddleware
from heimdex.entrypoints.http.openapi import (
    PARAMETERS,
    SERVER,
    documented,
    raises,
    signed_url_parameters,
)

_REFUSALS = Refusals(
    invalid=InvalidUrlSignature,
    expired=UrlExpired,
    name="this URL",
    unsigned_hint="ask for a fresh one",
    expired_hint="ask for a fresh one",
)
_MEDIA_TYPES = {"jpg": "image/jpeg", "webp": "image/webp", "json": "application/json"}


class FileController(Controller):
    path = "/files"
    tags = ["files"]
    middleware = [InputGuardMiddleware]

    @get(
        "/{key:path}",
        exclude_from_auth=True,
        operation_id="fetchFile",
        security=[{"signedUrl": []}],
        **documented(
            PARAMETERS,
            SERVER,
            raises(
                errors.InvalidUrlSignature,
                errors.UrlExpired,
                errors.NotFound,
                errors.InvalidStorageKey,
                errors.StorageError,
            ),
            parameters=signed_url_parameters("GET"),
            responses={
                200: ResponseSpec(
                    data_container=bytes,
                    media_type="image/jpeg",
                    description="The file (`image/jpeg`, `image/webp` or `application/json`)",
                )
            },
            also_media_types=["image/webp", "application/json", "application/octet-stream"],
        ),
        summary="Fetch a derived file by signed URL",
        description="The URLs come from `GET /v1/assets/{asset_id}/thumbnails`; they expire.",
        include_in_schema=True,
    )
    async def fetch(
        self,
        key: FromPath[str],
        request: Request[Any, Any, Any],
        signed_urls: NamedDependency[SignedUrlVerifier],
        sidecars: NamedDependency[SidecarService],
    ) -> Response[Any]:
        key = key.lstrip("/")
        query = request.query_params
        signed = signed_urls.verify("GET", request.url.path, query, _REFUSALS)
        validate_key(key)
        stored, chunks = await sidecars.signed_file(signed.org_id, key)
        media_type = _MEDIA_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")
        # A browser may keep it for as long as the URL is valid, never a shared cache.
        return Stream(
            chunks,
            media_type=media_type,
            headers={
                "Content-Length": str(stored.size_bytes),
                "Cache-Control": f"private, max-age={signed.seconds_left}",
            },
        )
