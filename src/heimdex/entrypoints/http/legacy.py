"""``POST /metadata``: the seed's synchronous upload-and-probe, kept for old clients.

Off unless ``HEIMDEX_ENABLE_LEGACY=true``. The multipart body is parsed as it streams in and the
first file part is written to a temporary file (never held in memory), probed, then removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from litestar import Request, post
from litestar.datastructures import State
from litestar.exceptions import ClientException, InternalServerException
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from heimdex.adapters.offload import run_blocking
from heimdex.domain import errors
from heimdex.domain.errors import InvalidInput, UploadTooLarge
from heimdex.domain.media import MediaInfo
from heimdex.entrypoints.http.deps import services_from
from heimdex.entrypoints.http.openapi import SERVER, documented, raises

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks


class FirstFilePart:
    """Multipart callbacks that copy the first part carrying a filename into ``target``."""

    def __init__(self, target: IO[bytes], max_bytes: int) -> None:
        self._target = target
        self._max_bytes = max_bytes
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._writing = False
        self.found = False
        self.complete = False
        self.filename: str | None = None
        self.size = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if not self.found and b"filename" in params:
            self.found = self._writing = True
            self.filename = params[b"filename"].decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._writing:
            return
        self.size += end - start
        if self.size > self._max_bytes:
            raise UploadTooLarge(f"the file is larger than {self._max_bytes} bytes")
        self._target.write(data[start:end])

    def _part_end(self) -> None:
        self._writing = False

    def _end(self) -> None:
        self.complete = True


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
async def legacy_metadata(request: Request[Any, Any, Any], state: State) -> MediaInfo:
    services = services_from(state)
    settings = services.settings
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInput("send the file as multipart/form-data")
    with await run_blocking(services.request_bodies.spool) as handle:
        sink = FirstFilePart(handle, settings.uploads.max_size_bytes)
        await _stream_into(request, MultipartParser(boundary, callbacks=sink.callbacks()))
        if not sink.complete:
            raise InvalidInput("the multipart body ended before its closing boundary")
        if not sink.found:
            raise InvalidInput("the multipart body has no file part")
        await run_blocking(handle.flush)
        return await services.probing.probe_file(Path(handle.name))


async def _stream_into(request: Request[Any, Any, Any], parser: MultipartParser) -> None:
    try:
        async for chunk in request.stream():
            await run_blocking(parser.write, chunk)
        await run_blocking(parser.finalize)
    except MultipartParseError as exc:
        raise InvalidInput(f"the multipart body is malformed: {exc}") from exc
    except InternalServerException as exc:  # the client went away mid-body
        raise ClientException("the request body ended early") from exc
