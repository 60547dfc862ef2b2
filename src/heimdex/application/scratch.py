"""Sweeping scratch files: what a storage adapter's writes and copies left behind when their
process was killed (SIGKILL, out of memory, power loss) before it could clean up.

A live write or copy keeps writing its file, so a file untouched for ``max_age`` belongs to no
request still running — ``max_age`` is chosen (and checked at start-up) to be longer than any
request may leave one idle. Files are judged by their own modification time, on the clock of
the machine that holds them.
"""

from __future__ import annotations

from datetime import timedelta

from heimdex.domain.ports import Clock, Storage
from heimdex.logs import get_logger

log = get_logger(__name__)


class ScratchSweeper:
    """Removes the storage's scratch files not written to for longer than ``max_age``."""

    def __init__(self, storage: Storage, clock: Clock, max_age: timedelta) -> None:
        self._storage = storage
        self._clock = clock
        self._max_age = max_age

    async def sweep(self) -> int:
        """Remove what is old enough; answers how many files (or copy directories) went."""
        removed = await self._storage.sweep_scratch(self._clock.now() - self._max_age)
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
