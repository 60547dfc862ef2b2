"""``LocalStorage``: objects as files under a root directory (the embedded default)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

import anyio

from heimdex.adapters.offload import run_blocking
from heimdex.adapters.scratch_files import sweep_old_files
from heimdex.domain.declared import Declared
from heimdex.domain.errors import (
    ChunkChecksumMismatch,
    InvalidStorageKey,
    SourceNotFound,
    StorageError,
    UploadTooLarge,
)
from heimdex.domain.model import Upload
from heimdex.domain.ports import LocalCopy, ScratchFile, StoredObject, UploadTarget, UrlSigner
from heimdex.domain.resumable import ChunkChecksum
from heimdex.domain.storage_keys import validate_key

CHUNK_SIZE = 1024 * 1024
_DERIVED = "derived/"
#: Under each base directory: writes in flight, renamed into place from here. One directory on
#: the objects' own file system (so the rename is atomic) that the sweep can list without
#: walking every object.
SCRATCH_DIR = ".scratch"
#: Under the root: resumable writes in progress, one file per object, renamed into place by the
#: append that completes it. Not scratch: an idle one lives as long as its slot (the abandoned-
#: upload sweep discards it), however long that is.
RESUMABLE_DIR = ".resumable"
_HIDDEN = frozenset({SCRATCH_DIR, RESUMABLE_DIR})


class LocalStorage:
    """Keys map to paths under ``root``; ``derived/…`` keys under ``derived_root`` when set
    (the seed's ``HEIMDEX_DERIVED_ROOT``). Writes go to a temporary file in the base's
    ``.scratch`` directory and are renamed into place, so a reader never sees half a file; what
    a killed process leaves there is removed by ``sweep_scratch``."""

    def __init__(self, root: Path, signer: UrlSigner, derived_root: Path | None = None) -> None:
        self._signer = signer
        self.root = root.resolve()
        self.derived_root = derived_root.resolve() if derived_root else None
        self.root.mkdir(parents=True, exist_ok=True)
        if self.derived_root:
            self.derived_root.mkdir(parents=True, exist_ok=True)

    # -- key <-> path -------------------------------------------------------------------------
    def _base_and_rest(self, key: str) -> tuple[Path, str]:
        validate_key(key)
        base, rest = self.root, key
        if self.derived_root is not None and key.startswith(_DERIVED):
            base, rest = self.derived_root, key[len(_DERIVED) :]
        if rest.split("/", 1)[0] in _HIDDEN:  # scratch and partial files are never objects
            raise InvalidStorageKey(f"storage key {key!r} is not valid")
        return base, rest

    def _bases(self) -> list[Path]:
        return [self.root] if self.derived_root is None else [self.root, self.derived_root]

    def path_for(self, key: str) -> Path:
        base, rest = self._base_and_rest(key)
        return base / rest

    def _existing_file(self, key: str) -> Path:
        """The object's path, refusing one reached through a symlink or that is not a file."""
        path = self.path_for(key)
        if not path.exists():
            raise SourceNotFound(f"no object at {key!r}")
        base, rest = self._base_and_rest(key)
        if path.resolve() != base / rest:
            raise InvalidStorageKey(f"{key!r} resolves outside its place in storage")
        if not path.is_file():
            raise SourceNotFound(f"no object at {key!r}")
        return path

    def uri_for(self, key: str) -> str:
        # Safe keys hold only unreserved characters, so the path needs no percent-encoding.
        return "file://" + str(self.path_for(key))

    async def download_url(self, key: str, base_url: str, expires: int) -> str:
        """The API's own ``GET /v1/files/{key}``, signed for the key's organisation."""
        org_id = key.split("/", 2)[1]
        path = f"/v1/files/{validate_key(key)}"
        signature = self._signer.sign("GET", path, org_id, expires)
        query = urlencode({"org": org_id, "expires": expires, "signature": signature})
        return f"{base_url.rstrip('/')}{path}?{query}"

    async def upload_target(self, upload: Upload, base_url: str) -> UploadTarget:
        """The API's own ``PUT /v1/uploads/{id}``, signed so the client needs no token."""
        path = f"/v1/uploads/{upload.id}"
        expires = int(upload.expires_at.timestamp())
        signature = self._signer.sign("PUT", path, upload.org_id, expires)
        query = urlencode({"org": upload.org_id, "expires": expires, "signature": signature})
        return UploadTarget(
            url=f"{base_url.rstrip('/')}{path}?{query}",
            method="PUT",
            headers={
                "Content-Type": upload.content_type,
                "Content-Length": str(upload.content_length),
            },
        )

    # -- writes -------------------------------------------------------------------------------
    async def write_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, declared: Declared | None = None
    ) -> StoredObject:
        declared = declared or Declared()
        base, rest = self._base_and_rest(key)
        target = base / rest
        scratch = base / SCRATCH_DIR
        await run_blocking(_make_directories, target.parent, scratch)
        temp = scratch / f"{target.name}.{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        handle: BinaryIO = await run_blocking(open, temp, "xb")

        async def hash_and_write(chunk: bytes) -> None:
            # Hashing and writing both release the GIL: run them side by side.
            try:
                async with anyio.create_task_group() as both:
                    both.start_soon(run_blocking, digest.update, chunk)
                    both.start_soon(run_blocking, handle.write, chunk)
            except Exception as exc:  # e.g. disk full: the one error, not its group
                raise _single(exc) from None

        try:
            size = await _receive_while_writing(chunks, declared.check_so_far, hash_and_write)
            declared.check(size, digest.hexdigest())
            await run_blocking(_flush_and_sync, handle)
            handle.close()
            await run_blocking(os.replace, temp, target)
        except BaseException:
            handle.close()
            temp.unlink(missing_ok=True)
            raise
        return StoredObject(key=key, size_bytes=size, sha256=digest.hexdigest())

    async def write_bytes(self, key: str, data: bytes) -> StoredObject:
        async def one_chunk() -> AsyncIterator[bytes]:
            yield data

        return await self.write_stream(key, one_chunk())

    # -- resumable writes ---------------------------------------------------------------------
    def _partial_path(self, key: str) -> Path:
        base, rest = self._base_and_rest(key)
        return base / RESUMABLE_DIR / hashlib.sha256(rest.encode()).hexdigest()

    async def begin_resumable(self, key: str) -> str:
        """The session is the partial file's name (the key decides it: one write per key)."""
        path = self._partial_path(key)
        await run_blocking(_make_directories, path.parent)
        await run_blocking(path.touch)
        return path.name

    async def append_resumable(
        self,
        key: str,
        session: str,
        *,
        offset: int,
        total: int,
        chunks: AsyncIterable[bytes],
        checksum: ChunkChecksum | None = None,
    ) -> int:
        """Appends to the partial file, fsyncs, then verifies: on any failure the file is cut
        back to ``offset``. A process killed mid-append leaves bytes past the recorded offset,
        which the next append cuts off first."""
        path, target = self._partial_path(key), self.path_for(key)
        if path.name != session:
            raise StorageError(f"{session!r} is not the resumable write of {key!r}")
        handle = await run_blocking(_open_partial_at, path, target, offset)
        hasher = hashlib.new(checksum.algorithm) if checksum is not None else None

        def within_total(size: int) -> None:
            if offset + size > total:
                raise UploadTooLarge(f"the upload is {total} bytes; this chunk goes past it")

        async def write(chunk: bytes) -> None:
            try:
                await run_blocking(_write_and_hash, handle, hasher, chunk)
            except OSError as exc:  # e.g. the disk is full
                raise StorageError(f"appending to {key!r}: {exc}") from exc

        try:
            written = await _receive_while_writing(chunks, within_total, write)
            try:
                await run_blocking(_flush_and_sync, handle)
            except OSError as exc:
                raise StorageError(f"appending to {key!r}: {exc}") from exc
            if checksum is not None and hasher is not None and hasher.digest() != checksum.digest:
                raise ChunkChecksumMismatch(
                    f"the chunk's {checksum.algorithm} is not the one in Upload-Checksum; "
                    "it was discarded"
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_blocking(_cut_back, handle, offset)
            raise
        handle.close()
        if offset + written == total:
            await run_blocking(_make_directories, target.parent)
            await run_blocking(os.replace, path, target)
        return offset + written

    async def discard_resumable(self, key: str, session: str) -> None:
        path = self._partial_path(key)
        if path.name == session:
            await run_blocking(path.unlink, missing_ok=True)

    # -- reads --------------------------------------------------------------------------------
    async def stat(self, key: str) -> StoredObject | None:
        path = self.path_for(key)
        try:
            info = await run_blocking(path.stat)
        except FileNotFoundError:
            return None
        return StoredObject(key=key, size_bytes=info.st_size)

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[LocalCopy]:
        """The stored file itself (no copy to make), hashed by one read of it."""
        path = await run_blocking(self._existing_file, key)
        size, sha256 = await run_blocking(_hash_file, path)
        yield LocalCopy(path=path, stored=StoredObject(key=key, size_bytes=size, sha256=sha256))

    @asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        yield await run_blocking(self._existing_file, key)

    async def read_chunks(self, key: str) -> AsyncIterator[bytes]:
        path = await run_blocking(self._existing_file, key)
        handle: BinaryIO = await run_blocking(open, path, "rb")
        try:
            while chunk := await run_blocking(handle.read, CHUNK_SIZE):
                yield chunk
        finally:
            handle.close()

    async def list_names(self, prefix: str) -> AsyncIterator[str]:
        """The directory's entries: files as their names, directories as ``name/``. The
        scratch directory and anything reached through a symlink are never listed."""
        if not prefix.endswith("/"):
            raise InvalidStorageKey(f"{prefix!r} is not a prefix ending in '/'")
        base, rest = self._base_and_rest(prefix)
        directory = base / rest
        for name in await run_blocking(_list_directory, directory, directory == base):
            yield name

    # -- deletes ------------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        try:
            await run_blocking(path.unlink, missing_ok=True)
        except OSError as exc:  # the port's callers expect its own error, not the filesystem's
            raise StorageError(f"deleting {key!r}: {exc}") from exc

    async def delete_prefix(self, prefix: str) -> int:
        validate_key(prefix)
        try:
            return await run_blocking(self._delete_prefix, prefix)
        except OSError as exc:
            raise StorageError(f"deleting under {prefix!r}: {exc}") from exc

    def _delete_prefix(self, prefix: str) -> int:
        if prefix.endswith("/"):
            directory = self.path_for(prefix.rstrip("/"))
            if not directory.is_dir():
                return 0
            count = sum(1 for p in directory.rglob("*") if p.is_file())
            shutil.rmtree(directory)
            return count
        base = self.path_for(prefix)
        count = 0
        for path in base.parent.glob(base.name + "*"):
            if path.is_file():
                path.unlink(missing_ok=True)
                count += 1
            elif path.is_dir():
                count += sum(1 for p in path.rglob("*") if p.is_file())
                shutil.rmtree(path)
        return count

    # -- scratch ------------------------------------------------------------------------------
    async def sweep_scratch(self, modified_before: datetime) -> list[ScratchFile]:
        """Remove the files in each base's ``.scratch`` directory last written before
        ``modified_before``; objects live outside it and are never looked at."""
        cutoff = modified_before.timestamp()
        removed: list[ScratchFile] = []
        for base in self._bases():
            removed += await run_blocking(sweep_old_files, base / SCRATCH_DIR, cutoff)
        return removed

    # -- health -------------------------------------------------------------------------------
    async def check(self) -> None:
        await run_blocking(self._check)

    def _check(self) -> None:
        probe = self.root / f".health-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"storage root {self.root} is not writable: {exc}") from exc


async def _receive_while_writing(
    chunks: AsyncIterable[bytes],
    check: Callable[[int], None],
    write: Callable[[bytes], Awaitable[None]],
) -> int:
    """Receive the next chunk while the previous one is written (a bounded queue keeps memory
    at a few chunks): ``check`` sees the running size before a chunk is handed on, ``write``
    runs for each chunk in order. Answers the size; raises the first failure of either side."""
    send, receive = anyio.create_memory_object_stream[bytes](max_buffer_size=2)
    failure: Exception | None = None
    size = 0

    async def drain() -> None:
        nonlocal failure
        async with receive:
            try:
                async for chunk in receive:
                    await write(chunk)
            except Exception as exc:  # kept, raised below: the sender then stops
                failure = exc

    async def fill() -> None:
        nonlocal failure, size
        async with send:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    check(size)
                    await send.send(chunk)
            except anyio.BrokenResourceError:
                pass  # the drain stopped; its failure is kept
            except Exception as exc:
                failure = failure or exc

    async with anyio.create_task_group() as group:
        group.start_soon(drain)
        await fill()
    if failure is not None:
        raise failure
    return size


def _single(exc: Exception) -> Exception:
    """The one error inside a task group's wrapper, so callers can catch OSError and friends."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _list_directory(directory: Path, is_base: bool) -> list[str]:
    try:
        with os.scandir(directory) as listing:
            entries = list(listing)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names: list[str] = []
    for entry in entries:
        if is_base and entry.name in _HIDDEN:
            continue
        if entry.is_dir(follow_symlinks=False):
            names.append(entry.name + "/")
        elif entry.is_file(follow_symlinks=False):
            names.append(entry.name)
    return names


def _make_directories(*directories: Path) -> None:
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def _open_partial_at(path: Path, target: Path, offset: int) -> BinaryIO:
    """The partial file opened for writing at ``offset``, cut back to it. Should the process
    have died between completing the object and recording that, the object is the partial."""
    if not path.exists() and target.exists():
        os.replace(target, path)
    try:
        handle: BinaryIO = path.open("r+b")
    except FileNotFoundError as exc:
        raise StorageError("the resumable upload's bytes are gone; start a new upload") from exc
    size = os.fstat(handle.fileno()).st_size
    if size < offset:
        handle.close()
        raise StorageError(
            f"the resumable upload holds {size} bytes, fewer than its offset {offset}"
        )
    handle.truncate(offset)
    handle.seek(offset)
    return handle


def _write_and_hash(handle: BinaryIO, hasher: Any, chunk: bytes) -> None:
    handle.write(chunk)
    if hasher is not None:
        hasher.update(chunk)


def _cut_back(handle: BinaryIO, offset: int) -> None:
    with contextlib.suppress(OSError):  # e.g. the disk is full: the truncate drops them anyway
        handle.flush()
    handle.truncate(offset)
    os.fsync(handle.fileno())
    handle.close()


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
