"""The periodic sweep, shared by the API process (immediate jobs) and ``heimdex worker``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

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


@asynccontextmanager
async def sweeping(interval_seconds: float, *sweeps: Sweep) -> AsyncIterator[None]:
    """:func:`sweep_forever` in the background for the duration of the block: what a command
    that runs jobs in its own process (``heimdex ingest --wait``, ``heimdex reindex`` on the
    embedded default) needs, as the server and the workers have it. Without it a job left
    queued with no message (a retry after its back-off, a hand-over that did not happen) runs
    nowhere, and the command waits for it for ever."""
    task = asyncio.create_task(sweep_forever(interval_seconds, *sweeps))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
