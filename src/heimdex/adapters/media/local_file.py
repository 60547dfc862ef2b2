"""The local file FFmpeg may open, whichever adapter opens it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec

from heimdex.adapters.media.limits import DecodeLimits
from heimdex.domain.errors import InvalidMedia


def regular_file_size(path: Path) -> int:
    """The size of ``path`` if it is a regular file (symlinks followed); ``InvalidMedia`` if not.

    A FIFO or device would block the prober or stream forever, a directory is not media.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InvalidMedia(f"{path.name}: no such file") from None
    except OSError as exc:
        raise InvalidMedia(f"{path.name}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidMedia(f"{path.name}: not a regular file")
    if info.st_size == 0:
        raise InvalidMedia(f"{path.name}: the file is empty")
    return info.st_size


class LocalFile(msgspec.Struct, frozen=True):
    """A regular file within the metadata budget: its size and its absolute path."""

    size: int
    path: str

    @property
    def url(self) -> str:
        """``file:`` and the absolute path: a name starting with ``-`` is never an option, a
        name with a colon never another protocol."""
        return "file:" + self.path


def local_file(path: Path, limits: DecodeLimits | None = None) -> LocalFile:
    """``path`` if FFmpeg may open it: a FIFO, a device or a directory never reaches FFmpeg
    (``InvalidMedia``), nor a file with more metadata than ``limits`` allow
    (``MetadataTooLarge``: FFmpeg would parse the tags, quadratically, before any frame)."""
    size = regular_file_size(path)
    if limits is not None:
        limits.check_metadata(path)
    return LocalFile(size=size, path=os.path.abspath(path))
