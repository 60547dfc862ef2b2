"""The ``Thumbnailer`` port on the ffmpeg binary: one short process per picture.

One process per thumbnail, a few at a time, rather than one per file: a process holding N
inputs holds N decoders (≈ 485 MB at 1080p for ten), and a single-input pass that selects
frames decodes the whole file. Measured on 1080p H.264 with 2 cores: ten runs one after the
other 0.94 s, one run with ten inputs 0.84 s, ten runs two at a time (this adapter) 0.55 s;
each run is ≈ 0.1 s, mostly ffmpeg's own start-up.

Each run opens only the local file (``file:`` URL, ``file,pipe`` protocols), forces the demuxer
the prober found (from the allow-list, MOV data references off), seeks on the input (``-ss``
before ``-i``) and writes one picture to stdout. It follows the same rule as the PyAV
thumbnailer (``thumbnail_plan``), one slot at a time and usually one run per slot:
``-noaccurate_seek`` starts decoding at the keyframe at or before the slot's target (it needs
``-fps_mode passthrough``: ffmpeg 5.1's image2 muxer otherwise keeps its constant frame rate)
and a ``select`` keeps that keyframe when it lies in the slot, else the first frame at or after
the target; only when that frame is past the slot does a second, accurate run take the first
frame from the slot's start. A trailing ``showinfo`` reports the frame's timestamp and its luma
mean and deviation, the dull-frame test's input; a dull frame's replacements are the frames at
the targets of :func:`replacement_slots`, one accurate run each. ffmpeg's auto-rotation is
off: the shared filter chain turns the picture exactly as the PyAV thumbnailer does.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from heimdex.adapters.media.allowlist import FFPROBE_PROTOCOLS, format_whitelist
from heimdex.adapters.media.ffmpeg_process import Failures, run_binary
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.local_file import local_file
from heimdex.adapters.media.thumbnail_plan import (
    JPEG_QSCALE,
    WEBP_QUALITY,
    LumaStats,
    Slot,
    ThumbnailPlan,
    filter_steps,
    filtergraph,
    full_range,
    plan_thumbnails,
    replacement_slots,
)
from heimdex.adapters.offload import run_blocking
from heimdex.domain.errors import (
    DecoderCrashed,
    InvalidMedia,
    ThumbnailerUnavailable,
    ThumbnailTimeout,
)
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Thumbnail, ThumbnailSpec

T = TypeVar("T")

_STDERR_LIMIT = 500
_CHECK_TIMEOUT = 10.0
_FAILURES = Failures(unavailable=ThumbnailerUnavailable, timed_out=ThumbnailTimeout, doing="ffmpeg")
_ENCODERS = {
    "jpg": ("-c:v", "mjpeg", "-q:v", str(JPEG_QSCALE)),
    "webp": ("-c:v", "libwebp", "-quality", str(WEBP_QUALITY)),
}
_PIXEL_FORMATS = {"jpg": "yuvj420p", "webp": "yuv420p"}  # ffmpeg 5.1's mjpeg wants yuvj*
# showinfo's lines: its time base once, then per frame the pts and the planes' statistics.
# Anchored at a line's start, where the file's metadata (printed indented) cannot forge one.
_SHOWINFO = r"^\[Parsed_showinfo_\d+ @ [^\]]+\] (?:\[info\] )?"
_TIME_BASE = re.compile(_SHOWINFO + r"config in time_base: (\d+)/(\d+)", re.MULTILINE)
_FRAME = re.compile(
    _SHOWINFO + r"n:\s*0 pts:\s*(-?\d+) .*?mean:\[(\d+)[^\]]*\] stdev:\[([\d.]+)", re.MULTILINE
)
# The input's header line: "  Duration: 00:00:04.09, start: 0.000000, bitrate: …".
_START = re.compile(r"^(?:\[info\] )?\s+Duration: .*?, start: (-?\d+(?:\.\d+)?)", re.MULTILINE)
# Keyframes a hair before a slot's start pass the select; the slot's own test then decides.
_SELECT_SLACK = 0.0005
_ADDRESS = re.compile(r" @ 0x[0-9a-f]+\]")
_PROBLEM = re.compile(r"^\[(?:[^\]]*\] \[)?(?:error|fatal|panic)\] ?(.*)$")


@dataclass(frozen=True, slots=True)
class _Shot:
    time: float
    data: bytes
    luma: LumaStats
    tick: Fraction  # the stream's time base: the smallest step between two frames' times


class FfmpegThumbnailer:
    """Thumbnails with the ``ffmpeg`` binary, ``concurrency`` processes at a time per file.

    A run longer than ``timeout`` seconds is killed with its whole process group
    (``ThumbnailTimeout``); one that dies by a signal is ``DecoderCrashed``; ffmpeg's own
    complaint is in every other error. Each run is under ``limits`` (memory, CPU, file size,
    priority, ``max_pixels``).
    """

    name = "ffmpeg"

    def __init__(
        self,
        binary: str = "ffmpeg",
        timeout: float = 60.0,
        *,
        concurrency: int = 2,
        limits: DecodeLimits | None = None,
    ) -> None:
        self._binary = binary
        self._limits = limits if limits is not None else DecodeLimits()
        self._timeout = timeout
        self._concurrency = max(1, concurrency)

    async def thumbnails(
        self, path: Path, media: MediaInfo, spec: ThumbnailSpec
    ) -> Sequence[Thumbnail]:
        """The plan's slots, each picture from its own ffmpeg runs, ``concurrency`` at a time
        after the first."""
        plan = plan_thumbnails(path.name, media, spec)
        if plan is None:
            return []
        self._limits.check_media(path.name, media)
        # A FIFO or a directory never reaches ffmpeg, nor too many tags (parsed once per run).
        local = await run_blocking(local_file, path, self._limits)
        run = _Run(self, local.url, path.name, plan)
        # The first alone: a broken file fails once, not once per thumbnail.
        first = await run.shot(plan.slots[0])
        rest = await _all_or_nothing([run.shot(slot) for slot in plan.slots[1:]], self._concurrency)
        # A slot without a frame gives none: fewer frames than slots.
        shots = [shot for shot in (first, *rest) if shot is not None]
        if not shots:
            raise InvalidMedia(f"{path.name}: no frame of the video stream could be decoded")
        return [
            Thumbnail(
                index=index,
                time=round(shot.time, 3),  # milliseconds: ffmpeg rounds its seek offset so
                width=plan.width,
                height=plan.height,
                data=shot.data,
            )
            for index, shot in enumerate(shots)
        ]

    async def check(self) -> None:
        returncode, stdout, stderr = await self._run(
            ("-hide_banner", "-encoders"), limit=_CHECK_TIMEOUT, what="ffmpeg -encoders"
        )
        if returncode != 0:
            detail = stderr.decode(errors="replace").strip()[-_STDERR_LIMIT:]
            raise ThumbnailerUnavailable(f"{self._binary} -encoders failed: {detail or returncode}")
        listing = stdout.decode(errors="replace")
        missing = [
            encoder for encoder in ("mjpeg", "libwebp") if not re.search(rf"\s{encoder}\s", listing)
        ]
        if missing:
            raise ThumbnailerUnavailable(f"{self._binary} lacks the {', '.join(missing)} encoder")

    async def _run(
        self, args: Sequence[str], *, limit: float, what: str
    ) -> tuple[int, bytes, bytes]:
        return await run_binary(
            self._binary, args, limits=self._limits, limit=limit, what=what, failures=_FAILURES
        )


class _Run:
    """The thumbnails of one file: the plan's decisions, each picture from one ffmpeg run."""

    def __init__(self, owner: FfmpegThumbnailer, url: str, name: str, plan: ThumbnailPlan) -> None:
        self._owner = owner
        self._url = url
        self._name = name
        self._plan = plan
        steps = filter_steps(plan, _PIXEL_FORMATS[plan.format])
        self._filters = filtergraph([*steps, ("showinfo", None)])

    async def shot(self, slot: Slot) -> _Shot | None:
        """The slot's picture: its frame, or a better one of the same slot when that is dull."""
        shot = await self._in_slot(slot)
        if shot is not None and shot.luma.dull:
            for where in replacement_slots(slot, shot.time, float(shot.tick)):
                # One accurate run each: the frame at the part's target (the PyAV thumbnailer
                # may take the part's keyframe instead; both are of the slot, and not dull).
                other = await self._shot(where.target, accurate=True)
                if other is None or not where.holds(other.time, float(other.tick)):
                    continue
                if not other.luma.dull:
                    return other
        return shot

    async def _in_slot(self, slot: Slot) -> _Shot | None:
        """A frame presented inside ``slot``, by the plan's rule; ``None`` when none is.

        One run in the common case: from the keyframe at or before the target
        (``-noaccurate_seek``), a ``select`` takes that keyframe when it lies in the slot, else
        the first frame at or after the target. Times there count from the target.
        """
        start = slot.start - slot.target - _SELECT_SLACK
        choose = f"select='gte(t,0)+eq(key,1)*gte(t,{start:.6f})'"
        shot = await self._shot(slot.target, accurate=False, select=choose)
        if shot is not None and slot.holds(shot.time, float(shot.tick)):
            return shot
        # Past the slot (a gap, the end) or nothing (FLV's guessed seek can land past every
        # frame): the first frame from the slot's start, if inside.
        first = await self._shot(slot.start, accurate=True)
        if first is not None and slot.holds(first.time, float(first.tick)):
            return first
        return None

    async def _shot(
        self, seconds: float, *, accurate: bool, select: str | None = None
    ) -> _Shot | None:
        plan = self._plan
        position = f"{max(seconds, 0.0):.6f}"
        args = ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info"]
        args += ["-protocol_whitelist", FFPROBE_PROTOCOLS, "-format_whitelist", format_whitelist()]
        args += ["-f", plan.demuxer]
        if plan.demuxer == "mov":  # a demuxer option: other demuxers refuse it as unknown
            args += ["-enable_drefs", "0"]
        args += ["-noautorotate", *self._owner._limits.decoder_arguments()]
        if not accurate:
            args += ["-noaccurate_seek"]
        if seconds > 0:  # from the start, no seek: FLV's guessed seek to 0 can find nothing
            args += ["-ss", position]
        args += ["-i", self._url, "-map", f"0:{plan.stream_index}"]
        # Choose before scaling: only the frame kept is filtered.
        chain = f"{select},{self._filters}" if select is not None else self._filters
        args += ["-vf", chain, "-frames:v", "1", "-fps_mode", "passthrough"]
        args += [*_ENCODERS[plan.format], "-f", "image2pipe", "pipe:1"]
        returncode, stdout, stderr = await self._owner._run(
            args, limit=self._owner._timeout, what=self._name
        )
        log = stderr.decode(errors="replace")
        hit = self._owner._limits.hit_by_subprocess(self._name, returncode, log)
        if hit is not None:
            raise hit
        if returncode < 0:
            name = _signal_name(-returncode)
            raise DecoderCrashed(f"{self._name}: ffmpeg was killed by {name}{self._said(log)}")
        if returncode != 0:
            raise InvalidMedia(f"{self._name}: {self._complaint(log)}")
        if not stdout:
            return None  # no frame at or after that position
        frame = _FRAME.search(log)
        time_base = _TIME_BASE.search(log)
        if frame is None or time_base is None or int(time_base[2]) == 0:
            raise InvalidMedia(f"{self._name}: ffmpeg did not describe the frame it wrote")
        tick = Fraction(int(time_base[1]), int(time_base[2]))
        start = _START.search(log)
        time = _frame_time(int(frame[1]), tick, position, start[1] if start else "0")
        mean, stddev = float(frame[2]), float(frame[3])
        luma = full_range(mean, stddev) if plan.format != "jpg" else LumaStats(mean, stddev)
        return _Shot(time=time, data=stdout, luma=luma, tick=tick)

    def _complaint(self, log: str) -> str:
        return " / ".join(self._problems(log)) or "ffmpeg could not read the file"

    def _said(self, log: str) -> str:
        problems = self._problems(log)
        return f" ({' / '.join(problems)})" if problems else ""

    def _problems(self, log: str) -> list[str]:
        """ffmpeg's last error lines, without the server's path, addresses or long lists."""
        lines = []
        for line in log.splitlines():
            problem = _PROBLEM.match(line.strip())
            if problem:
                text = problem[1].replace(format_whitelist(), "<allowed formats>")
                text = text.replace(self._url + ": ", "").replace(self._url, "the file")
                text = _ADDRESS.sub("]", text).strip()
                if text:
                    lines.append(text[-_STDERR_LIMIT:])
        return lines[-3:]


def _frame_time(relative: int, tick: Fraction, position: str, start: str) -> float:
    """Seconds from the file's start of a frame ffmpeg stamped ``relative`` ticks after the
    seek: it shifts every timestamp by the seek position plus the file's start time, in
    microseconds rounded to the nearest tick (ffmpeg 5.1's ``ts_offset``), so undo exactly
    that."""
    offset = (Fraction(position) + Fraction(start)) / tick
    ticks = relative + int(offset + Fraction(1, 2))  # av_rescale_q: to nearest, halves up
    return max(float(ticks * tick - Fraction(start)), 0.0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


async def _all_or_nothing(calls: Sequence[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    """Every result in order, ``limit`` at a time; on the first failure the rest are cancelled
    (their processes killed) and that failure is raised — not an exception group."""
    semaphore = asyncio.Semaphore(limit)

    async def bounded(call: Coroutine[Any, Any, T]) -> T:
        try:
            async with semaphore:
                return await call
        finally:
            call.close()  # one cancelled before its turn never ran: no "never awaited" warning

    tasks = [asyncio.ensure_future(bounded(call)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
