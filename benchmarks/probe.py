"""Probe latency: FfprobeProber and PyAVProber against a bare PyAV loop, on 1080p H.264 files.

Run with ``uv run python benchmarks/probe.py [--count N]``. The files (10 s, 60 s and 600 s of
1080p H.264 + AAC) are made once with ffmpeg and cached under ``.cache/bench-media/``.

The bare loop is what PyAV gives for free: ``av.open`` with the same allow-lists, then reading
the same container, stream and chapter fields, in a thread. Targets: PyAVProber within 1.3x of it
(the adapter's own cost — the round trip to its worker process, mapping, the keyframe decode for
rotation — is small), and ffprobe at least 8x slower than PyAVProber (a fork and exec per file).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import av

from heimdex.adapters.media.ffprobe import FfprobeProber
from heimdex.adapters.media.pyav import OPEN_OPTIONS, PyAVProber
from heimdex.adapters.offload import run_blocking

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache" / "bench-media"
BASE_SECONDS = 10
DURATIONS = (10, 60, 600)
PYAV_TARGET = 1.3
FFPROBE_TARGET = 8.0


def make_media(directory: Path) -> list[Path]:
    """1080p H.264 + AAC files of each duration; longer ones loop the 10 s one by stream copy,
    so even the 600 s file takes seconds to make (its index is as big as a real one's)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("benchmarks/probe.py needs ffmpeg on PATH")
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / f"h264_1080p_{BASE_SECONDS}s.mp4"
    if not base.exists():
        _ffmpeg(
            ffmpeg,
            base,
            *("-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=25:duration={BASE_SECONDS}"),
            *("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={BASE_SECONDS}"),
            *("-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast"),
            *("-b:v", "2M", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"),
            *("-movflags", "+faststart"),
        )
    files = []
    for seconds in DURATIONS:
        path = directory / f"h264_1080p_{seconds}s.mp4"
        if not path.exists():
            loops = seconds // BASE_SECONDS - 1
            copy = ("-stream_loop", str(loops), "-i", str(base), "-c", "copy")
            _ffmpeg(ffmpeg, path, *copy, "-movflags", "+faststart")
        files.append(path)
    return files


def _ffmpeg(ffmpeg: str, target: Path, *args: str) -> None:
    partial = target.with_suffix(".partial.mp4")
    command = [ffmpeg, "-nostdin", "-v", "error", "-y", *args, str(partial)]
    subprocess.run(command, check=True, timeout=600)
    partial.rename(target)


def bare(path: Path) -> list[Any]:
    """``av.open`` and the fields the probers read, nothing else."""
    with av.open(str(path), container_options=OPEN_OPTIONS, metadata_errors="replace") as c:
        fields: list[Any] = [c.format.name, c.duration, c.bit_rate, dict(c.metadata)]
        streams: list[Any] = list(c.streams)  # video and audio fields, untyped by the loop
        for s in streams:
            cc = s.codec_context
            fields += [s.index, s.type, cc.codec.canonical_name, s.profile, cc.bit_rate]
            fields += [s.start_time, s.duration, s.time_base, dict(s.metadata), s.disposition]
            if s.type == "video":
                fields += [cc.width, cc.height, cc.pix_fmt, cc.color_range, cc.colorspace]
                fields += [cc.color_trc, cc.color_primaries, cc.field_order]
                fields += [s.sample_aspect_ratio, s.average_rate, s.base_rate]
            elif s.type == "audio":
                fields += [cc.channels, cc.layout.name, cc.sample_rate]
        fields.append(c.chapters())
        return fields


def _timed_bare(path: Path) -> float:
    started = time.perf_counter()
    bare(path)
    return time.perf_counter() - started


async def measure(path: Path, count: int) -> dict[str, float]:
    """Median seconds per probe. The three take turns, each round starting with the next one, so
    machine noise — and the wake of an ffprobe process — falls on each alike."""
    ffprobe = FfprobeProber()
    async with PyAVProber(workers=1) as pyav:
        return await _measure(path, count, ffprobe, pyav)


async def _measure(
    path: Path, count: int, ffprobe: FfprobeProber, pyav: PyAVProber
) -> dict[str, float]:

    async def time_bare() -> float:
        # In a worker thread like the adapter's work (glibc gives threads their own heaps, and
        # FFmpeg's big buffers behave differently there), timed inside it: no thread hop.
        return await run_blocking(_timed_bare, path)

    async def time_pyav() -> float:
        started = time.perf_counter()
        await pyav.probe(path)
        return time.perf_counter() - started

    async def time_ffprobe() -> float:
        started = time.perf_counter()
        await ffprobe.probe(path)
        return time.perf_counter() - started

    runs: dict[str, Callable[[], Awaitable[float]]] = {
        "bare": time_bare,
        "pyav": time_pyav,
        "ffprobe": time_ffprobe,
    }
    for run in runs.values():  # warm caches (page cache, ffprobe's pixel-format table)
        await run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(count):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(await runs[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=30, help="probes per prober and file")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="where the files live")
    args = parser.parse_args()

    files = make_media(args.cache)
    libavformat = ".".join(str(part) for part in av.library_versions["libavformat"])
    print(f"PyAV {av.__version__} (libavformat {libavformat}), {args.count} probes each, median ms")
    header = f"{'file':<22}{'MB':>7}{'bare':>9}{'pyav':>9}{'ffprobe':>9}"
    print(header + f"{'pyav/bare':>11}{'ffprobe/pyav':>14}")
    ok = True
    for path in files:
        result = asyncio.run(measure(path, args.count))
        pyav_ratio = result["pyav"] / result["bare"]
        ffprobe_ratio = result["ffprobe"] / result["pyav"]
        ok = ok and pyav_ratio <= PYAV_TARGET and ffprobe_ratio >= FFPROBE_TARGET
        print(
            f"{path.name:<22}{path.stat().st_size / 1e6:>7.1f}"
            f"{result['bare'] * 1e3:>9.2f}{result['pyav'] * 1e3:>9.2f}"
            f"{result['ffprobe'] * 1e3:>9.2f}{pyav_ratio:>11.2f}{ffprobe_ratio:>14.1f}"
        )
    verdict = "met" if ok else "NOT met"
    print(f"targets pyav/bare <= {PYAV_TARGET} and ffprobe/pyav >= {FFPROBE_TARGET}: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
