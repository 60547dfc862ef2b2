"""``PUT /v1/uploads/{upload_id}``: the local backend's direct-upload target.

Authorised by a bearer token of the upload's organisation, or by the signature carried in the
``upload_url`` itself (like a presigned S3 URL), so a browser or a CDN can send the bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, put
from litestar.di import NamedDependency
from litestar.exceptions import InternalServerException
from litestar.openapi.spec import (
    Link,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    RequestBody,
    Schema,
)
from litestar.params import FromPath

from heimdex.application.ingest import IngestService
from heimdex.application.signed_urls import Refusals, SignedUrlVerifier
from heimdex.domain import errors
from heimdex.domain.chunks import rechunk
from heimdex.domain.errors import (
    InvalidUploadSignature,
    LengthMismatch,
    PartialUploadUnsupported,
    UploadExpired,
)
from heimdex.domain.model import Principal, UploadStatus
from heimdex.entrypoints.http.auth import TokenDecoder
from heimdex.entrypoints.http.openapi import (
    PARAMETERS,
    SERVER,
    documented,
    raises,
    signed_url_parameters,
)

CHUNK_SIZE = 1024 * 1024
_REFUSALS = Refusals(
    invalid=InvalidUploadSignature,
    expired=UploadExpired,
    name="the upload URL",
    unsigned_hint="use upload_url as issued",
    expired_hint="ask for a new upload slot",
)


class UploadReceipt(msgspec.Struct, frozen=True, kw_only=True):
    upload_id: UUID
    status: UploadStatus
    size_bytes: int
    sha256: str | None
    received_at: datetime | None


def _org_from_request(
    request: Request[Any, Any, Any], tokens: TokenDecoder, signed_urls: SignedUrlVerifier
) -> str:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidUploadSignature("send a bearer token or use the signed upload_url")
        principal: Principal = tokens.decode(token.strip())
        return principal.org_id
    signed = signed_urls.verify("PUT", request.url.path, request.query_params, _REFUSALS)
    return signed.org_id


async def fixed_chunks(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """The body re-cut into about CHUNK_SIZE pieces: fewer thread hops, memory bounded by a
    couple of chunks, one copy per chunk."""
    try:
        async for chunk in rechunk(request.stream(), CHUNK_SIZE):
            yield chunk
    except InternalServerException as exc:  # the client went away mid-body
        raise LengthMismatch("the connection closed before the whole body arrived") from exc


class UploadController(Controller):
    path = "/uploads"
    tags = ["ingest"]

    @put(
        "/{upload_id:uuid}",
        exclude_from_auth=True,
        operation_id="receiveUpload",
        security=[{"bearer": []}, {"signedUrl": []}],
        **documented(
            PARAMETERS,
            SERVER,
            raises(
                errors.Unauthenticated,
                errors.InvalidUploadSignature,
                errors.LengthMismatch,
                errors.PartialUploadUnsupported,
                errors.NotFound,
                errors.UploadAlreadyReceived,
                errors.UploadInProgress,
                errors.NotResumable,
                errors.UploadExpired,
                errors.UploadTooLarge,
                errors.ChecksumMismatch,
                errors.StorageError,
            ),
            {413: ["request_too_large"]},
            parameters=signed_url_parameters("PUT"),
            request_body=RequestBody(
                required=True,
                description="The file's bytes, exactly `content_length` of them.",
                content={
                    "application/octet-stream": OpenAPIMediaType(
                        schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                    )
                },
            ),
            links={
                "commitUpload": Link(
                    operation_id="commitUpload",
                    request_body={"upload_id": "$response.body#/upload_id"},
                )
            },
        ),
        summary="Send an upload's bytes",
        description="The raw file as the body, with the headers init returned. Streams to "
        "storage in constant memory, hashing as it goes; more bytes than declared → 413, fewer → "
        "400 `length_mismatch`, a `Content-Range` (a part of the file) → 400 "
        "`content_range_unsupported`, another sha256 → 422 `checksum_mismatch`; nothing is kept on "
        "failure. 410 after expiry, 409 once the slot holds its file (or when it is a resumable "
        "slot: `upload_not_resumable`, send tus PATCHes).",
    )
    async def receive(
        self,
        upload_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        ingest: NamedDependency[IngestService],
        tokens: NamedDependency[TokenDecoder],
        signed_urls: NamedDependency[SignedUrlVerifier],
    ) -> UploadReceipt:
        org_id = _org_from_request(request, tokens, signed_urls)
        request.scope["user"] = Principal(org_id=org_id)  # for the request log line
        if "content-range" in request.headers:  # until resumable uploads exist
            raise PartialUploadUnsupported("send the whole file in one PUT, without Content-Range")
        upload = await ingest.receive_upload(org_id, upload_id, fixed_chunks(request))
        return UploadReceipt(
            upload_id=upload.id,
            status=upload.status,
            size_bytes=upload.content_length,
            sha256=upload.received_sha256,
            received_at=upload.received_at,
        )
