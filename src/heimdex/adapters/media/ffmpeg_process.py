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

from heimdex.adapters.media.limits import DecodeLimits

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
    try:
        process = await asyncio.create_subprocess_exec(
            *limits.argv(binary, args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a kill takes any children
            env=_ENV,
        )
    except OSError as exc:
        raise failures.unavailable(f"cannot run {name}: {exc.strerror or exc}") from exc
    try:
        async with asyncio.timeout(limit):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        raise failures.timed_out(f"{what}: {failures.doing} took longer than {limit:g} s") from None
    finally:
        # Timed out or cancelled: kill the group and reap the child, leaving no zombie.
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    return process.returncode if process.returncode is not None else -1, stdout, stderr
