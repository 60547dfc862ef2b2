"""The periodic sweep, shared by the API process (immediate jobs) and ``heimdex worker``."""

from __future__ import annotations

import anyio

from heimdex.application.jobs import JobService
from heimdex.domain.errors import HeimdexError
from heimdex.logs import get_logger

log = get_logger(__name__)


async def sweep_forever(jobs: JobService, interval_seconds: float) -> None:
    """Sweep every ``interval_seconds`` until cancelled; a failed sweep (database down) is
    logged and tried again next time, never fatal."""
    while True:
        try:
            await jobs.sweep()
        except (HeimdexError, OSError) as exc:
            log.warning("sweep_failed", error=str(exc))
        await anyio.sleep(interval_seconds)
