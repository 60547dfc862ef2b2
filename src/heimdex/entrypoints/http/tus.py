"""``/v1/uploads``: resumable uploads with tus 1.0 (core, creation, termination, checksum,
expiration), so off-the-shelf clients (Uppy, tus-js-client, tuspy, TUSKit) work.

``POST /v1/uploads`` makes a resumable slot (``Upload-Length``, ``Upload-Metadata`` with
``filename``, ``filetype`` and optionally ``sha256``) and answers its URL in ``Location``;
``HEAD`` tells its offset, ``PATCH`` appends at it, ``DELETE`` terminates it. Every request
carries a bearer token of the slot's organisation; another organisation's slot is 404. The
upload id in the URL is the one ``POST /v1/ingest/commit`` takes once the last byte arrived.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, head, patch, post
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Parameter,
    RequestBody,
    Schema,
)
from litestar.params import FromPath
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from heimdex.application.ingest import IngestService, UploadRequest
from heimdex.application.resumable_uploads import ResumableUploads
from heimdex.domain import errors
from heimdex.domain.errors import (
    ChecksumAlgorithmUnsupported,
    ChunkContentTypeInvalid,
    TusHeaderInvalid,
    TusVersionUnsupported,
    Unauthenticated,
)
from heimdex.domain.model import Principal, Upload
from heimdex.domain.resumable import CHECKSUM_ALGORITHMS, TUS_VERSION, ChunkChecksum
from heimdex.entrypoints.http.auth import TokenDecoder
from heimdex.entrypoints.http.openapi import (
    AUTHENTICATED,
    PARAMETERS,
    SERVER,
    Problems,
    documented,
    raises,
)
from heimdex.entrypoints.http.uploads import fixed_chunks
from heimdex.settings import Settings

TUS_EXTENSIONS = "creation,termination,checksum,expiration"
PATCH_CONTENT_TYPE = "application/offset+octet-stream"
#: set in a request's scope state on the tus routes: its problem answers carry Tus-Resumable
TUS_STATE = "tus"
_MAX_METADATA_BYTES = 4096


def tus_options_headers(settings: Settings) -> dict[str, str]:
    """What ``OPTIONS /v1/uploads`` tells a tus client about this server."""
    return {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(settings.uploads.resumable_max_size_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


class TusHeadersMiddleware:
    """``Tus-Resumable`` on every answer of the tus routes, problem answers too; the scope
    flag has a 412 name the version this server speaks (``problems.problem_response``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})[TUS_STATE] = True

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"tus-resumable", TUS_VERSION.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_header)


def _principal(request: Request[Any, Any, Any], tokens: TokenDecoder) -> Principal:
    """The bearer token's organisation; the tus version is checked first, as tus asks."""
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise TusVersionUnsupported(f"send Tus-Resumable: {TUS_VERSION}")
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated("send a bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send a bearer token")
    principal: Principal = tokens.decode(token.strip())
    request.scope["user"] = principal  # for the request log line
    return principal


def _int_header(request: Request[Any, Any, Any], name: str, *, minimum: int) -> int:
    value = request.headers.get(name)
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 19:
        raise TusHeaderInvalid(f"{name} must be a whole number")
    number = int(value)
    if number < minimum:
        raise TusHeaderInvalid(f"{name} must be at least {minimum}")
    return number


def parse_metadata(header: str) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (a value may be absent)."""
    if len(header) > _MAX_METADATA_BYTES:
        raise TusHeaderInvalid(f"Upload-Metadata is longer than {_MAX_METADATA_BYTES} bytes")
    metadata: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if not parts[0] or len(parts) > 2:
            if pair.strip() == "":
                continue
            raise TusHeaderInvalid("Upload-Metadata pairs are 'key base64value'")
        try:
            value = base64.b64decode(parts[1], validate=True).decode() if len(parts) == 2 else ""
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise TusHeaderInvalid(f"Upload-Metadata {parts[0]!r} is not base64 UTF-8") from exc
        metadata[parts[0]] = value
    return metadata


def parse_checksum(header: str | None) -> ChunkChecksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm.lower() not in CHECKSUM_ALGORITHMS:
        raise ChecksumAlgorithmUnsupported(
            f"Upload-Checksum algorithm {algorithm!r}: use one of {', '.join(CHECKSUM_ALGORITHMS)}"
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error as exc:
        raise TusHeaderInvalid("Upload-Checksum's digest is not base64") from exc
    return ChunkChecksum(algorithm=algorithm.lower(), digest=digest)


def _expires(at: datetime) -> str:
    return format_datetime(at, usegmt=True)


def _offset_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.received_bytes), "Cache-Control": "no-store"}
    if upload.received_at is None:  # still expiring: the whole file has not arrived
        headers["Upload-Expires"] = _expires(upload.expires_at)
    return headers


_TUS_VERSION_HEADER = Parameter(
    name="Tus-Resumable",
    param_in="header",
    required=True,
    description="The tus version: `1.0.0` (another one → 412 `tus_version_unsupported`).",
    schema=Schema(type=OpenAPIType.STRING, const=TUS_VERSION),
)


def _header(
    name: str, description: str, *, required: bool = True, pattern: str | None = None
) -> Parameter:
    return Parameter(
        name=name,
        param_in="header",
        required=required,
        description=description,
        schema=Schema(type=OpenAPIType.STRING, pattern=pattern),
    )


_WHOLE_NUMBER = "^[0-9]{1,18}$"


_TUS = raises(errors.TusVersionUnsupported, errors.Unauthenticated)
_NO_CONTENT = {204: ResponseSpec(data_container=None, description="Done; see the headers.")}


def _tus_route(operation_id: str, *groups: Problems, **options: Any) -> dict[str, Any]:
    """The route arguments every tus operation shares: a bearer token read by the handler (the
    version is checked first), its problems documented."""
    return {
        "exclude_from_auth": True,
        "operation_id": operation_id,
        "security": [{"bearer": []}],
        **documented(SERVER, AUTHENTICATED, PARAMETERS, _TUS, *groups, **options),
    }


class TusController(Controller):
    path = "/uploads"
    tags = ["ingest"]
    middleware = [TusHeadersMiddleware]

    @post(
        "/",
        status_code=201,
        **_tus_route(
            "createResumableUpload",
            raises(
                errors.TusHeaderInvalid,
                errors.UploadTooLarge,
                errors.UnsupportedMediaType,
                errors.StorageQuotaExceeded,
                errors.TooManyResumableUploads,
                errors.InvalidInput,
            ),
            responses={
                201: ResponseSpec(
                    data_container=None, description="Made; its URL is in `Location`."
                )
            },
            parameters=[
                _TUS_VERSION_HEADER,
                _header("Upload-Length", "The file's size in bytes.", pattern=_WHOLE_NUMBER),
                _header(
                    "Upload-Metadata",
                    "`filename`, `filetype` (else guessed from the name), optionally `sha256` "
                    "(hex, verified at commit): comma-separated `key base64(value)` pairs.",
                    required=False,
                ),
            ],
        ),
        summary="Make a resumable (tus) upload slot",
        description="tus creation. Answers 201 with `Location` (the upload URL, whose last "
        "segment is the `upload_id` commit takes) and `Upload-Expires`. The size is checked "
        "against HEIMDEX_UPLOAD_RESUMABLE_MAX_SIZE_BYTES, the organisation's unfinished "
        "resumable uploads against HEIMDEX_ORG_MAX_RESUMABLE_UPLOADS (429 "
        "`too_many_resumable_uploads`).",
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        ingest: NamedDependency[IngestService],
        tokens: NamedDependency[TokenDecoder],
        public_url: NamedDependency[str],
    ) -> Response[None]:
        principal = _principal(request, tokens)
        if "upload-defer-length" in request.headers:
            raise TusHeaderInvalid("Upload-Defer-Length is not supported: send Upload-Length")
        length = _int_header(request, "upload-length", minimum=1)
        metadata = parse_metadata(request.headers.get("upload-metadata", ""))
        name = metadata.get("filename") or metadata.get("name") or "upload"
        content_type = (
            metadata.get("filetype")
            or metadata.get("type")
            or mimetypes.guess_type(name)[0]
            or "application/octet-stream"
        )
        issued = await ingest.init_upload(
            principal,
            UploadRequest(
                source_name=name,
                content_length=length,
                content_type=content_type,
                sha256=metadata.get("sha256") or None,
                resumable=True,
            ),
            public_url,
        )
        return Response(
            None,
            status_code=201,
            headers={
                "Location": issued.target.url,
                "Upload-Expires": _expires(issued.upload.expires_at),
            },
            media_type=MediaType.TEXT,
        )

    @head(
        "/{upload_id:uuid}",
        **_tus_route(
            "resumableUploadOffset",
            raises(errors.NotFound, errors.NotResumable, errors.UploadExpired),
            responses={200: ResponseSpec(data_container=None, description="See the headers.")},
            parameters=[_TUS_VERSION_HEADER],
        ),
        summary="A resumable upload's offset",
        description="tus HEAD: `Upload-Offset` (bytes stored so far), `Upload-Length`, and "
        "`Upload-Expires` until the last byte arrived. 410 once the slot expired.",
    )
    async def offset(
        self,
        upload_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        resumable_uploads: NamedDependency[ResumableUploads],
        tokens: NamedDependency[TokenDecoder],
    ) -> Response[None]:
        principal = _principal(request, tokens)
        upload = await resumable_uploads.status(principal.org_id, upload_id)
        return Response(
            None,
            status_code=200,
            headers={**_offset_headers(upload), "Upload-Length": str(upload.content_length)},
            media_type=MediaType.TEXT,
        )

    @patch(
        "/{upload_id:uuid}",
        status_code=204,
        **_tus_route(
            "appendResumableUpload",
            raises(
                errors.TusHeaderInvalid,
                errors.ChecksumAlgorithmUnsupported,
                errors.ChunkContentTypeInvalid,
                errors.ChunkChecksumMismatch,
                errors.NotFound,
                errors.NotResumable,
                errors.UploadOffsetMismatch,
                errors.UploadAlreadyReceived,
                errors.UploadInProgress,
                errors.UploadExpired,
                errors.UploadTooLarge,
                errors.StorageError,
            ),
            {413: ["request_too_large"]},
            responses=_NO_CONTENT,
            parameters=[
                _TUS_VERSION_HEADER,
                _header(
                    "Upload-Offset", "The upload's offset, as HEAD told it.", pattern=_WHOLE_NUMBER
                ),
                _header(
                    "Upload-Checksum",
                    "`sha1|sha256|sha512 <base64 digest>` of this body; a mismatch → 460 "
                    "`chunk_checksum_mismatch`, the chunk discarded.",
                    required=False,
                    pattern="^(sha1|sha256|sha512) [A-Za-z0-9+/]+={0,2}$",
                ),
            ],
            request_body=RequestBody(
                required=True,
                description="The next bytes of the file, from `Upload-Offset`.",
                content={
                    PATCH_CONTENT_TYPE: OpenAPIMediaType(
                        schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                    )
                },
            ),
        ),
        summary="Append to a resumable upload",
        description="tus PATCH, `Content-Type: application/offset+octet-stream` (else 415). "
        "`Upload-Offset` must be the upload's (409 `upload_offset_mismatch`). Streams to "
        "storage in constant memory; answers the new `Upload-Offset`. A body cut off keeps what "
        "arrived whole (with `Upload-Checksum`: nothing of it). The PATCH that brings the offset "
        "to `Upload-Length` completes the file; then `POST /v1/ingest/commit`.",
    )
    async def append(
        self,
        upload_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        resumable_uploads: NamedDependency[ResumableUploads],
        tokens: NamedDependency[TokenDecoder],
    ) -> Response[None]:
        principal = _principal(request, tokens)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != PATCH_CONTENT_TYPE:
            raise ChunkContentTypeInvalid(f"send the chunk as Content-Type: {PATCH_CONTENT_TYPE}")
        offset = _int_header(request, "upload-offset", minimum=0)
        checksum = parse_checksum(request.headers.get("upload-checksum"))
        upload = await resumable_uploads.append(
            principal.org_id, upload_id, offset, fixed_chunks(request), checksum
        )
        return Response(
            None, status_code=204, headers=_offset_headers(upload), media_type=MediaType.TEXT
        )

    @delete(
        "/{upload_id:uuid}",
        status_code=204,
        **_tus_route(
            "terminateResumableUpload",
            raises(
                errors.NotFound,
                errors.NotResumable,
                errors.UploadAlreadyReceived,
                errors.UploadInProgress,
                errors.StorageError,
            ),
            parameters=[_TUS_VERSION_HEADER],
        ),
        summary="Terminate a resumable upload",
        description="tus termination: the slot and its bytes are removed; its URL answers 404 "
        "from then on. A committed upload is not (409): delete its asset instead.",
    )
    async def terminate(
        self,
        upload_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        resumable_uploads: NamedDependency[ResumableUploads],
        tokens: NamedDependency[TokenDecoder],
    ) -> None:
        principal = _principal(request, tokens)
        await resumable_uploads.terminate(principal.org_id, upload_id)


def tus_controller(settings: Settings) -> type[TusController]:
    """The controller with its body cap: room for the largest resumable upload in one PATCH
    (the PUT's router allows only the largest single upload)."""
    return type(
        "TusController",
        (TusController,),
        {"request_max_body_size": settings.uploads.resumable_max_size_bytes + 1},
    )
