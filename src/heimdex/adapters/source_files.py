"""The ``SourceFiles`` port on the local file system: which files are media (by extension and
by their first bytes), their checksums and their bytes, read in chunks off the event loop."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from heimdex.adapters.offload import run_blocking
from heimdex.application.bulk_ingest import Candidate, FileOutcome, FileStatus, IngestFailure

CHUNK_BYTES = 4 * 1024 * 1024  # fewer thread hops and HTTP writes per file

#: what a media file's name ends with, and the content type to declare for it
EXTENSIONS = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".qt": "video/quicktime",
    ".3gp": "video/3gpp",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
    ".flv": "video/x-flv",
    ".ts": "video/mp2t",
    ".mts": "video/mp2t",
    ".m2ts": "video/mp2t",
    ".mpg": "video/mpeg",
    ".mpeg": "video/mpeg",
    ".ogv": "video/ogg",
    ".wmv": "video/x-ms-wmv",
    ".m4a": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".aac": "audio/aac",
}


def sniff(head: bytes) -> str | None:
    """The content type the first bytes of a file say, or ``None`` when they say no media."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "audio/mp4" if head[8:11] == b"M4A" else "video/mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "video/quicktime"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"FLV"):
        return "video/x-flv"
    if head.startswith(b"OggS"):
        return "audio/ogg" if b"Opus" in head or b"\x7fFLAC" in head else "video/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head[:2] in (b"\xff\xf1", b"\xff\xf9"):
        return "audio/aac"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "video/mp2t"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "video/mpeg"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "video/x-ms-wmv"
    return None


def _content_type(path: Path, size: int) -> str | None:
    """Media when its first bytes say so (their type wins) or its name does (then the server's
    probe has the last word: a text file named .mp4 fails as invalid media, it is not skipped)."""
    by_name = EXTENSIONS.get(path.suffix.lower())
    with path.open("rb") as file:  # OSError: the file cannot be read, whatever its name
        head = file.read(512)
    if size == 0:
        return by_name
    return sniff(head) or by_name


class LocalSourceFiles:
    """Files on this machine. In a folder, a hidden file (a leading dot: macOS's ``._clip.mp4``
    companions, ``.DS_Store``) is not media, and a hidden folder is not entered; named on the
    command line, either is taken like any other."""

    def discover(
        self, paths: Sequence[Path], *, recursive: bool
    ) -> tuple[list[Candidate], list[FileOutcome]]:
        found: list[Candidate] = []
        problems: list[FileOutcome] = []
        seen: set[tuple[int, int]] = set()

        def failed(path: Path, code: str, message: str) -> None:
            problems.append(
                FileOutcome(file=str(path), status=FileStatus.FAILED, error=code, message=message)
            )

        def add(path: Path, info: os.stat_result, *, named: bool) -> None:
            if (info.st_dev, info.st_ino) in seen:  # the same file named twice
                return
            seen.add((info.st_dev, info.st_ino))
            try:
                content_type = _content_type(path, info.st_size)
            except OSError as exc:
                failed(path, "unreadable", exc.strerror or str(exc))
                return
            found.append(
                Candidate(path=path, size=info.st_size, content_type=content_type, named=named)
            )

        for path in paths:
            try:
                info = path.stat()
            except FileNotFoundError:
                failed(path, "not_found", "no such file")
                continue
            except OSError as exc:
                failed(path, "unreadable", exc.strerror or str(exc))
                continue
            if stat.S_ISDIR(info.st_mode):
                files, unreadable = _walk(path, recursive=recursive)
                for where, error in unreadable:
                    failed(where, "unreadable", error.strerror or str(error))
                for file, file_info in files:
                    if file.name.startswith("."):  # never read: ._clip.mp4 is no clip
                        found.append(
                            Candidate(
                                path=file, size=file_info.st_size, content_type=None, named=False
                            )
                        )
                    else:
                        add(file, file_info, named=False)
            elif stat.S_ISREG(info.st_mode):
                add(path, info, named=True)
            else:
                failed(path, "not_a_file", "not a regular file (a device, FIFO or socket)")
        return found, problems

    async def sha256(self, path: Path, size: int) -> str:
        return await run_blocking(_sha256, path, size)

    async def chunks(
        self, path: Path, size: int, on_bytes: Callable[[int], None]
    ) -> AsyncIterator[bytes]:
        # A file still being copied or recorded has another size than the one hashed and
        # declared: stop before its last chunk, so the receiver never has a whole body of it
        # (and no HTTP client is handed more or fewer bytes than its Content-Length).
        try:
            file = await run_blocking(path.open, "rb")
        except OSError as exc:
            raise IngestFailure("unreadable", exc.strerror or str(exc)) from None
        try:
            left = size
            while left > 0:
                chunk = await run_blocking(_read, file, min(CHUNK_BYTES, left))
                if not chunk:
                    raise _changed(size, size - left)
                left -= len(chunk)
                if left == 0:
                    more: bytes = await run_blocking(_read, file, 1)
                    if more:
                        raise _changed(size, None)
                on_bytes(len(chunk))
                yield chunk
        finally:
            file.close()


def _read(file: BinaryIO, count: int) -> bytes:
    try:
        return file.read(count)
    except OSError as exc:
        raise IngestFailure("unreadable", exc.strerror or str(exc)) from None


def _changed(size: int, read: int | None) -> IngestFailure:
    """``read``: the bytes there were (``None``: more than ``size``)."""
    now = f"more than {size}" if read is None else str(read)
    return IngestFailure(
        "file_changed", f"the file changed while it was read ({size} → {now} bytes)"
    )


def _walk(
    root: Path, *, recursive: bool
) -> tuple[list[tuple[Path, os.stat_result]], list[tuple[Path, OSError]]]:
    """Regular files under ``root``, sorted, and the folders and files that could not be read
    (os.walk would pass over them in silence: files missed without a word); a symlink counts
    only when it stays in the tree. Hidden folders (``.Trashes``, ``.git``, ``.thumbnails``…)
    are not entered: what is in them is a system's or a program's, not the user's footage (name
    one to ingest it)."""
    real_root = os.path.realpath(root)
    files: list[tuple[Path, os.stat_result]] = []
    unreadable: list[tuple[Path, OSError]] = []

    def cannot_list(error: OSError) -> None:
        unreadable.append((Path(error.filename), error))

    for directory, subdirectories, names in os.walk(root, followlinks=False, onerror=cannot_list):
        if not recursive:
            subdirectories.clear()
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(names):
            path = Path(directory) / name
            if path.is_symlink():
                target = os.path.realpath(path)
                if os.path.commonpath([real_root, target]) != real_root:
                    continue  # out of the tree
            try:
                info = path.stat()
            except FileNotFoundError:
                continue  # a dangling link
            except OSError as exc:
                unreadable.append((path, exc))
                continue
            if stat.S_ISREG(info.st_mode):
                files.append((path, info))
    return files, unreadable


def _sha256(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    read = 0
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                digest.update(chunk)
                read += len(chunk)
    except OSError as exc:
        raise IngestFailure("unreadable", exc.strerror or str(exc)) from None
    if read != size:
        raise _changed(size, read)
    return digest.hexdigest()
