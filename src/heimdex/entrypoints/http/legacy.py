"""``POST /metadata``: the seed's synchronous upload-and-probe, kept for old clients.

Off unless ``HEIMDEX_ENABLE_LEGACY=true``. The multipart body is parsed as it streams in and the
first file part is written to a temporary file (never held in memory), probed, then removed.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from litestar import Request, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, InternalServerException
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from python_multipart.multipart import parse_options_header

from heimdex.application.probing import ProbeService
from heimdex.domain import errors
from heimdex.domain.errors import InvalidInput
from heimdex.domain.media import MediaInfo
from heimdex.entrypoints.http.openapi import SERVER, documented, raises


# Runtime-checkable: Litestar checks a dependency's value against the handler's annotation.
@runtime_checkable
class BodySpool(Protocol):
    """Where the multipart body's first file part is written while it streams in."""

    def first_file(
        self, body: AsyncIterable[bytes], boundary: bytes, max_bytes: int
    ) -> AbstractAsyncContextManager[Path]: ...


@post(
    "/metadata",
    tags=["legacy"],
    summary="Legacy upload-and-probe",
    description="Multipart upload of one file, answered with its media description. "
    "Served only with `HEIMDEX_ENABLE_LEGACY=true`. New clients use `/v1/ingest`.",
    status_code=200,
    **documented(
        SERVER,
        raises(errors.InvalidInput, errors.UploadTooLarge),
        raises(errors.ProberUnavailable, errors.ProbeBusy, errors.DecodersBusy),
        raises(errors.InvalidMedia, family=True),
        {413: ["request_too_large"]},
        request_body=RequestBody(
            required=True,
            content={
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        properties={
                            "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                        },
                        required=["file"],
                    )
                )
            },
        ),
    ),
)
async def legacy_metadata(
    request: Request[Any, Any, Any],
    probing: NamedDependency[ProbeService],
    request_bodies: NamedDependency[BodySpool],
    max_upload_bytes: NamedDependency[int],
) -> MediaInfo:
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInput("send the file as multipart/form-data")
    async with request_bodies.first_file(_body(request), boundary, max_upload_bytes) as path:
        return await probing.probe_file(path)


async def _body(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except InternalServerException as exc:  # the client went away mid-body
        raise ClientException("the request body ended early") from exc
