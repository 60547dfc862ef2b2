"""Sweeping scratch files: what a storage adapter's writes and copies left behind when their
process was killed (SIGKILL, out of memory, power loss) before it could clean up.

A live write or copy keeps writing its file, so a file untouched for ``max_age`` belongs to no
request still running — ``max_age`` is chosen (and checked at start-up) to be longer than any
request may leave one idle. Files are judged by their own modification time, on the clock of
the machine that holds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from heimdex.domain.ports import Clock, ScratchArea, ScratchFile
from heimdex.logs import get_logger

log = get_logger(__name__)


class ScratchSweeper:
    """Removes the scratch files of ``area`` (the storage) and of ``also`` (other areas of this
    process: the legacy endpoint's request bodies) not written to for longer than
    ``max_age``."""

    def __init__(
        self,
        area: ScratchArea,
        clock: Clock,
        max_age: timedelta,
        *,
        also: Sequence[ScratchArea] = (),
    ) -> None:
        self._areas = [area, *also]
        self._clock = clock
        self._max_age = max_age

    async def sweep(self) -> int:
        """Remove what is old enough; answers how many files (or copy directories) went."""
        cutoff = self._clock.now() - self._max_age
        removed: list[ScratchFile] = []
        for area in self._areas:
            removed += await area.sweep_scratch(cutoff)
        for item in removed:
            log.info(
                "scratch_removed",
                path=item.path,
                size_bytes=item.size_bytes,
                modified_at=item.modified_at.isoformat(),
            )
        if removed:
            log.info(
                "scratch_swept",
                count=len(removed),
                size_bytes=sum(item.size_bytes for item in removed),
            )
        return len(removed)
