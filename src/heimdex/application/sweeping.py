"""The periodic sweep, shared by the API process (immediate jobs) and ``heimdex worker``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from heimdex.domain.errors import HeimdexError
from heimdex.logs import get_logger

log = get_logger(__name__)

Sweep = Callable[[], Awaitable[int]]


async def sweep_forever(interval_seconds: float, *sweeps: Sweep) -> None:
    """Run each sweep every ``interval_seconds`` until cancelled. A sweep that fails is logged
    and tried again next time, never fatal, and never stops the others: a database outage is
    expected (a warning), anything else is a bug to see (an error with its traceback) — but
    not one that should stop jobs being redelivered."""
    while True:
        for sweep in sweeps:
            name = getattr(sweep, "__qualname__", repr(sweep))
            try:
                await sweep()
            except (HeimdexError, OSError) as exc:
                log.warning("sweep_failed", sweep=name, error=str(exc))
            except Exception:
                log.exception("sweep_crashed", sweep=name)
        await anyio.sleep(interval_seconds)
