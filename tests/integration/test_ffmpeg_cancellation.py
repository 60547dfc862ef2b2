"""A run of ffmpeg cancelled by an anyio task group — the job runner cancels the thumbnails
when the storyboard fails first — is killed and reaped before the group ends.

anyio cancels level-triggered: every await inside a cancelled scope is cancelled again, so
clean-up that awaits (reaping the killed process, waiting for the runs it cancelled) must be
shielded or the group ends with the process still running or a zombie.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest

from heimdex.adapters.media.ffmpeg_process import Failures, run_binary
from heimdex.adapters.media.ffmpeg_thumbnailer import FfmpegThumbnailer
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.pyav import InProcessPyAVProber
from heimdex.domain.model import ThumbnailSpec
from tests.fixtures.processes import child_processes
from tests.requirements import require_binary

# Seconds of a 1080p test pattern: far longer than the test waits.
ENDLESS = ["-nostdin", "-v", "error", "-f", "lavfi", "-re", "-i", "testsrc2=size=1920x1080:rate=25"]


def ffmpeg_children() -> list[tuple[int, str]]:
    """``(pid, state)`` of this process's ffmpeg children, running or zombie."""
    return [
        (pid, state)
        for pid, state, name in child_processes()
        if name in ("ffmpeg", "nice", "prlimit")
    ]


async def cancelled_while_running(
    work: Callable[[], Coroutine[Any, Any, object]], *, copies: int = 1, runs: int = 1
) -> None:
    """Run ``copies`` of ``work`` in a task group whose sibling fails once ``runs`` ffmpeg
    processes run. (Several at once: whether one reaping is cut short is a race; that none of
    them is is what must hold.)"""

    async def fail_when_ffmpeg_runs() -> None:
        with anyio.fail_after(30):
            while len(ffmpeg_children()) < runs:  # noqa: ASYNC110 - /proc has no event to wait on
                await anyio.sleep(0.01)
        raise RuntimeError("the sibling failed")

    async def both() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(copies):
                group.start_soon(work)
            group.start_soon(fail_when_ffmpeg_runs)

    with pytest.raises(BaseExceptionGroup):
        await both()


def stalling_ffmpeg(directory: Path) -> Path:
    """An ``ffmpeg`` that runs the real one the first time and stalls every later time: the
    thumbnailer's first picture is made alone, the rest at once, and those stay running."""
    real = require_binary("ffmpeg")
    script = directory / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{directory}/ran" ]; then sleep 60; exit 1; fi\n'
        f'touch "{directory}/ran"\n'
        f'exec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    return script


@pytest.fixture(autouse=True)
def _ffmpeg() -> None:
    require_binary("ffmpeg")


async def test_a_cancelled_run_leaves_no_process() -> None:
    failures = Failures(unavailable=RuntimeError, timed_out=TimeoutError, doing="running")

    async def run() -> object:
        return await run_binary(
            "ffmpeg",
            [*ENDLESS, "-f", "null", "-"],
            limits=DecodeLimits(),
            limit=60,
            what="endless",
            failures=failures,
        )

    await cancelled_while_running(run, copies=6, runs=6)
    assert ffmpeg_children() == []


async def test_cancelled_thumbnails_leave_no_process(tmp_path: Path, h264_aac_mp4: Path) -> None:
    # Runs at once: the cancelled runs are the thumbnailer's own tasks, not the caller.
    clip = tmp_path / "clip.mp4"
    shutil.copy(h264_aac_mp4, clip)
    media = await InProcessPyAVProber(timeout=30, limits=DecodeLimits()).probe(clip)
    binary = stalling_ffmpeg(tmp_path)
    thumbnailer = FfmpegThumbnailer(str(binary), 60, limits=DecodeLimits(), concurrency=6)

    async def thumbnails() -> object:
        return await thumbnailer.thumbnails(clip, media, ThumbnailSpec(count=7))

    await cancelled_while_running(thumbnails, runs=6)
    assert ffmpeg_children() == []
