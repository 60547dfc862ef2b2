"""One run of the ffprobe or ffmpeg binary under the decode limits, in a process group of its
own: what the ffprobe prober and the ffmpeg thumbnailer share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from heimdex.adapters.media.limits import DecodeLimits

T = TypeVar("T")

# No colour codes in the error text we hand back.
_ENV = {**os.environ, "AV_LOG_FORCE_NOCOLOR": "1"}


@dataclass(frozen=True, slots=True)
class Failures:
    """How one binary's runs fail: ``unavailable`` when it cannot be started, ``timed_out``
    when a run outlives its limit (said as "<what>: <doing> took longer than …")."""

    unavailable: type[Exception]
    timed_out: type[Exception]
    doing: str


async def run_binary(
    name: str,
    args: Sequence[str],
    *,
    limits: DecodeLimits,
    limit: float,
    what: str,
    failures: Failures,
) -> tuple[int, bytes, bytes]:
    """Run the binary ``name`` with ``args`` under the decode limits; kill its process group if
    it outlives ``limit`` seconds. Answers the exit status (``-N``: killed by signal N), stdout
    and stderr."""
    binary = shutil.which(name)
    if binary is None:  # found here: behind nice/prlimit it would be their exit status
        raise failures.unavailable(f"cannot run {name}: not found or not executable")
    spawning = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *limits.argv(binary, args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a kill takes any children
            env=_ENV,
        )
    )
    # Started whole even if cancelled meanwhile: then the clean-up below ends it.
    cancelled = await outlast_cancellation(spawning)
    try:
        process = spawning.result()
    except OSError as exc:
        raise failures.unavailable(f"cannot run {name}: {exc.strerror or exc}") from exc
    try:
        if cancelled:
            raise asyncio.CancelledError
        async with asyncio.timeout(limit):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        raise failures.timed_out(f"{what}: {failures.doing} took longer than {limit:g} s") from None
    finally:
        # Timed out or cancelled: kill the group and reap the child, leaving no zombie.
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(process.pid, signal.SIGKILL)
            if await outlast_cancellation(asyncio.ensure_future(process.wait())):
                raise asyncio.CancelledError
    return process.returncode if process.returncode is not None else -1, stdout, stderr


async def outlast_cancellation(work: asyncio.Future[T]) -> bool:
    """Wait until ``work`` is done, however often the caller is cancelled meanwhile; answers
    whether it was, for the caller to raise once its clean-up is over.

    A single wait is not enough: an anyio scope cancels every await again until the task leaves
    it (the job runner's task group, when the storyboard fails before the thumbnails), and
    ``asyncio.gather`` passes each cancel it gets on to its children, so reaping a killed
    process could be cut short and leave it running or a zombie.
    """
    cancelled = False
    while not work.done():
        try:
            await asyncio.wait({work})
        except asyncio.CancelledError:
            cancelled = True
    return cancelled
