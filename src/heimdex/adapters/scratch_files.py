"""Removing old scratch files from a directory: what local storage's writes in flight and the
API's spooled request bodies leave when their process is killed."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from heimdex.domain.ports import ScratchFile
from heimdex.logs import get_logger

log = get_logger(__name__)


def sweep_old_files(
    directory: Path, cutoff: float, *, prefix: str = "", suffix: str = ""
) -> list[ScratchFile]:
    """Unlink the regular files directly in ``directory`` whose name has ``prefix`` and
    ``suffix`` and whose mtime is before ``cutoff`` (a POSIX timestamp). Never follows a link,
    never descends; what vanishes meanwhile (finished, or swept by another process) is skipped."""
    try:
        with os.scandir(directory) as listing:
            entries = [e for e in listing if e.name.startswith(prefix) and e.name.endswith(suffix)]
    except FileNotFoundError:
        return []
    removed: list[ScratchFile] = []
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:  # finished meanwhile, or another process swept it first
            continue
        except OSError as exc:  # one file we may not remove must not keep the rest
            log.warning("scratch_not_removed", path=entry.path, error=str(exc))
            continue
        removed.append(
            ScratchFile(
                path=entry.path,
                size_bytes=info.st_size,
                modified_at=datetime.fromtimestamp(info.st_mtime, UTC),
            )
        )
    return removed
