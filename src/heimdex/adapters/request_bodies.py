"""``RequestBodyFiles``: request bodies the API spools to disk while it reads them (the legacy
``POST /metadata`` upload: its multipart body parsed as it streams in, the first file part
written to a file and probed from there), and the sweep of those a killed process left.

A spooled body is deleted when its request ends; only a process killed mid-request leaves one,
and the scratch sweep removes it once nothing has written to it for the scratch age.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from heimdex.adapters.offload import run_blocking
from heimdex.adapters.scratch_files import sweep_old_files
from heimdex.domain.errors import InvalidInput, UploadTooLarge
from heimdex.domain.ports import ScratchFile

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

PREFIX = "body-"
SUFFIX = ".upload"


class RequestBodyFiles:
    """Named temporary files in ``directory`` (shared with other scratch: only this class's
    names are ever swept)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def spool(self) -> IO[bytes]:
        """A new named file, deleted when closed; blocking (call it off the event loop)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=self.directory, prefix=PREFIX, suffix=SUFFIX)

    @asynccontextmanager
    async def first_file(
        self, body: AsyncIterable[bytes], boundary: bytes, max_bytes: int
    ) -> AsyncIterator[Path]:
        """The first file part of the multipart ``body`` (at most ``max_bytes``), as a spooled
        file that is deleted when the block ends. A malformed or truncated body, or one with no
        file part, is ``InvalidInput``; a larger file is ``UploadTooLarge``."""
        with await run_blocking(self.spool) as handle:
            sink = FirstFilePart(handle, max_bytes)
            parser = MultipartParser(boundary, callbacks=sink.callbacks())
            try:
                async for chunk in body:
                    await run_blocking(parser.write, chunk)
                await run_blocking(parser.finalize)
            except MultipartParseError as exc:
                raise InvalidInput(f"the multipart body is malformed: {exc}") from exc
            if not sink.complete:
                raise InvalidInput("the multipart body ended before its closing boundary")
            if not sink.found:
                raise InvalidInput("the multipart body has no file part")
            await run_blocking(handle.flush)
            yield Path(handle.name)

    async def sweep_scratch(self, modified_before: datetime) -> list[ScratchFile]:
        return await run_blocking(
            sweep_old_files,
            self.directory,
            modified_before.timestamp(),
            prefix=PREFIX,
            suffix=SUFFIX,
        )


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
