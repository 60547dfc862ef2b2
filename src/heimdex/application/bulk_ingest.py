"""``heimdex ingest``: many local files into assets, each at most once.

For each file: hash it; skip it when the organisation (or this run) already has its sha256;
else init an upload slot, stream the file to it, commit, and ask for the sidecar. The Heimdex
it talks to is a port (:class:`IngestTarget`: over HTTP, or the embedded one in this process),
and so are the local files (:class:`SourceFiles`), so this module only orchestrates.

A commit is atomic on the server: stopping the run at any moment leaves each file either an
asset or nothing (an upload slot the sweep removes), and a re-run finds the assets by sha256.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec

#: the longest one request to a Heimdex waits out a per-organisation limit that says when to
#: try again (the rate limit, the probe or job cap) before its file fails: a folder reaches
#: those within seconds, and ending each file at its first refusal ended them all
LIMIT_WAIT_SECONDS = 120.0


class IngestFailure(Exception):
    """One file could not be ingested: a stable ``code`` (the server's problem code when it
    answered one) and a message for people; ``asset_id`` when the asset was made all the same
    (its sidecar request or job failed)."""

    def __init__(self, code: str, message: str, *, asset_id: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.asset_id = code, message, asset_id


class FileStatus(enum.StrEnum):
    INGESTED = "ingested"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    FAILED = "failed"


class FileOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one file (one JSON line of ``--json``)."""

    file: str
    status: FileStatus
    asset_id: str | None = None
    error: str | None = None
    message: str | None = None
    size_bytes: int = 0


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A file found under the paths given: media with its content type, or not media."""

    path: Path
    size: int
    #: ``None``: not media (skipped in a folder; an error when named)
    content_type: str | None
    #: named on the command line rather than found in a folder
    named: bool


class UploadSlot(msgspec.Struct, frozen=True, kw_only=True):
    upload_id: str
    url: str
    method: str
    headers: dict[str, str]
    #: a tus upload (one PATCH from offset 0), not one PUT
    resumable: bool = False


class KnownAsset(msgspec.Struct, frozen=True, kw_only=True):
    """The organisation's asset with a file's checksum."""

    asset_id: str
    #: committed and no sidecar asked for yet: a run stopped between the two, or ran with
    #: ``--no-sidecar``
    needs_sidecar: bool


class SourceFiles(Protocol):
    """The local files to ingest."""

    def discover(
        self, paths: Sequence[Path], *, recursive: bool
    ) -> tuple[list[Candidate], list[FileOutcome]]:
        """The candidates under ``paths`` (symlinks are not followed out of a folder), and the
        outcomes already known: paths that do not exist or cannot be read."""
        ...

    async def sha256(self, path: Path, size: int) -> str:
        """The file's checksum, read in chunks; ``IngestFailure("file_changed")`` when the size
        changed while it was read."""
        ...

    def chunks(
        self, path: Path, size: int, on_bytes: Callable[[int], None]
    ) -> AsyncIterator[bytes]:
        """The file's bytes, in chunks, never whole in memory: exactly ``size`` of them, else
        ``IngestFailure("file_changed")`` before the last one (the upload declared ``size``);
        ``IngestFailure("unreadable")`` when a read fails."""
        ...


class IngestTarget(Protocol):
    """The Heimdex that ``heimdex ingest`` talks to. Raises :class:`IngestFailure`."""

    async def find_asset(self, sha256: str) -> KnownAsset | None:
        """The organisation's asset with this checksum, if it has one."""
        ...

    async def init_upload(
        self, name: str, size: int, content_type: str, sha256: str, *, resumable: bool = False
    ) -> UploadSlot:
        """An upload slot; ``resumable``: a tus slot, which the server takes up to its larger
        limit for resumable uploads."""
        ...

    async def upload(self, slot: UploadSlot, size: int, chunks: AsyncIterator[bytes]) -> None:
        """Send the bytes exactly as the slot says (its method, URL and headers). A resumable
        slot that did not get them all is terminated (it would hold one of the organisation's
        few unfinished resumable uploads for a day)."""
        ...

    async def commit(self, upload_id: str) -> str:
        """Make the upload an asset; answers its id."""
        ...

    async def request_sidecar(self, asset_id: str) -> str:
        """Ask for the asset's sidecar; answers the job id."""
        ...

    async def wait_for_job(self, job_id: str) -> str | None:
        """Wait until the job has finished; ``None`` when it succeeded, else its error code."""
        ...


@dataclass(frozen=True, kw_only=True)
class IngestOptions:
    jobs: int = 4
    sidecar: bool = True
    wait: bool = False


class ProgressListener(Protocol):
    def started(self, name: str) -> None: ...
    def advance_bytes(self, count: int) -> None: ...
    def finished(self, name: str) -> None: ...


@dataclass
class _Run:
    #: sha256 → the asset that this run made (or is making) of it
    claimed: dict[str, asyncio.Future[str | None]] = field(default_factory=dict)


class BulkIngest:
    """Ingests local files into one organisation of one Heimdex."""

    def __init__(self, files: SourceFiles, target: IngestTarget, options: IngestOptions) -> None:
        self._files, self._target, self._options = files, target, options

    async def run(
        self,
        candidates: Sequence[Candidate],
        progress: ProgressListener,
        report: Callable[[FileOutcome], None],
    ) -> None:
        """Ingest ``candidates``, ``jobs`` at once; ``report`` gets each file's outcome as it
        ends. Cancelling stops the files in flight (none is half an asset)."""
        run = _Run()
        limit = asyncio.Semaphore(max(1, self._options.jobs))

        async def one(candidate: Candidate) -> None:
            async with limit:
                name = str(candidate.path)
                progress.started(name)
                try:
                    outcome = await self._one(candidate, run, progress)
                finally:
                    progress.finished(name)
                report(outcome)

        async with asyncio.TaskGroup() as group:
            for candidate in candidates:
                group.create_task(one(candidate))

    async def _one(self, c: Candidate, run: _Run, progress: ProgressListener) -> FileOutcome:
        name = str(c.path)
        if c.content_type is None:
            if c.named:
                return FileOutcome(
                    file=name,
                    status=FileStatus.FAILED,
                    error="not_media",
                    message="not a video or audio file",
                    size_bytes=c.size,
                )
            return FileOutcome(file=name, status=FileStatus.SKIPPED, size_bytes=c.size)
        if c.size == 0:
            return FileOutcome(
                file=name,
                status=FileStatus.FAILED,
                error="empty_file",
                message="the file is empty",
            )
        try:
            sha256 = await self._files.sha256(c.path, c.size)
            mine = run.claimed.get(sha256)
            if mine is not None:  # an identical file earlier in this run
                asset_id = await asyncio.shield(mine)
                if asset_id is not None:
                    progress.advance_bytes(c.size)
                    return self._duplicate(c, asset_id)
            claim: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            run.claimed[sha256] = claim
            try:
                made, existed = await self._ingest(c, sha256, progress)
            except BaseException:
                claim.set_result(None)
                raise
            claim.set_result(made)
            if existed:
                return self._duplicate(c, made)
            return FileOutcome(
                file=name, status=FileStatus.INGESTED, asset_id=made, size_bytes=c.size
            )
        except IngestFailure as exc:
            return FileOutcome(
                file=name,
                status=FileStatus.FAILED,
                asset_id=exc.asset_id,
                error=exc.code,
                message=exc.message,
                size_bytes=c.size,
            )

    @staticmethod
    def _duplicate(c: Candidate, asset_id: str) -> FileOutcome:
        return FileOutcome(
            file=str(c.path), status=FileStatus.DUPLICATE, asset_id=asset_id, size_bytes=c.size
        )

    async def _ingest(
        self, c: Candidate, sha256: str, progress: ProgressListener
    ) -> tuple[str, bool]:
        """The asset for this file and whether it was there already."""
        assert c.content_type is not None
        existing = await self._target.find_asset(sha256)
        if existing is not None:
            progress.advance_bytes(c.size)
            if existing.needs_sidecar and self._options.sidecar:
                await self._sidecar(existing.asset_id)  # so a re-run finishes what was stopped
            return existing.asset_id, True
        name = printable(c.path.name)
        try:
            slot = await self._target.init_upload(name, c.size, c.content_type, sha256)
        except IngestFailure as exc:
            if exc.code != "upload_too_large":
                raise
            # Over the server's limit for one PUT (512 MiB by default; a camera file often is):
            # a resumable slot takes it, up to the larger resumable limit, in one PATCH.
            slot = await self._target.init_upload(
                name, c.size, c.content_type, sha256, resumable=True
            )
        await self._target.upload(
            slot, c.size, self._files.chunks(c.path, c.size, progress.advance_bytes)
        )
        asset_id = await self._target.commit(slot.upload_id)
        if self._options.sidecar:
            await self._sidecar(asset_id)
        return asset_id, False

    async def _sidecar(self, asset_id: str) -> None:
        try:
            job_id = await self._target.request_sidecar(asset_id)
            if self._options.wait:
                await _job_succeeded(self._target.wait_for_job(job_id))
        except IngestFailure as exc:
            exc.asset_id = asset_id  # the asset is there; only its sidecar failed
            raise


async def _job_succeeded(waiting: Awaitable[str | None]) -> None:
    error = await waiting
    if error is not None:
        raise IngestFailure(error, f"the sidecar job failed ({error})")


def printable(name: str) -> str:
    """``name`` as text that JSON, a request or a terminal takes: a file name that is not UTF-8
    (a Latin-1 name from an old archive) reaches Python with lone surrogates, one per byte it
    could not decode; each becomes U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def exit_status(outcomes: Sequence[FileOutcome]) -> int:
    """0 when every media file ended ingested or duplicate, else 1 (skipped files do not count)."""
    return 1 if any(o.status is FileStatus.FAILED for o in outcomes) else 0
