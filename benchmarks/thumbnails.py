"""Time to 10 thumbnails: PyAVThumbnailer and FfmpegThumbnailer beside a bare PyAV loop.

Run with ``uv run python benchmarks/thumbnails.py [--count N]``. The files — the README
walkthrough's clip (640x360, 4 s, one keyframe) and 1080p30 H.264 of 10 s, 60 s and 600 s with a
keyframe every 2 s, and 60 s with one every 30 s — are made once with ffmpeg and cached under
``.cache/bench-media/`` (the 60 s and 600 s 2 s-GOP files loop a 22 s one by stream copy, so
even the 600 s file takes seconds to make).

The reference, timed in the same run on the same files: a bare PyAV loop that makes the same
kind of thumbnails — ten distinct frames, one per slot — the plain way: for each slot's target,
seek to the keyframe before it, decode forward to it, scale to 320 px, encode a JPEG; on the
calling thread, nothing else.

"distinct" counts different pictures among the ten, beside every time. The loop's length is
chosen so that no two slots of the 60 s or 600 s file show the same picture of it.

The thumbnailers decode at the reference's priority (``--niceness 0``); in production their
processes run at nice 10 (``HEIMDEX_DECODE_*``), which on a busy machine costs them their share.

Targets: the PyAV thumbnailer within 1.5x of the bare loop on every file, and on the 2 s-GOP
files its 600 s time within 1.2x of its 60 s time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from heimdex.adapters.media.ffmpeg_thumbnailer import FfmpegThumbnailer
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.pyav import OPEN_OPTIONS, PyAVProber
from heimdex.adapters.media.pyav_thumbnailer import PyAVThumbnailer
from heimdex.adapters.media.thumbnail_plan import target_times
from heimdex.adapters.offload import run_blocking
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Thumbnail, ThumbnailSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache" / "bench-media"
BASE_SECONDS = 22
RATE = 30
COUNT = 10
PYAV_TARGET = 1.5
LENGTH_TARGET = 1.2


@dataclass(frozen=True)
class BenchFile:
    path: Path
    seconds: float
    gop_seconds: int | None  # None: one keyframe


def make_media(directory: Path) -> list[BenchFile]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("benchmarks/thumbnails.py needs ffmpeg on PATH")
    directory.mkdir(parents=True, exist_ok=True)
    readme = directory / "readme_clip.mp4"
    if not readme.exists():  # exactly as the README's walkthrough makes it
        _ffmpeg(
            ffmpeg,
            readme,
            *("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"),
            *("-f", "lavfi", "-i", "sine=sample_rate=48000"),
            *("-t", "4", "-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p"),
            *("-c:a", "aac", "-ac", "2"),
        )
    files = [BenchFile(readme, 4.0, None)]

    def encode(target: Path, seconds: float, gop_seconds: int) -> None:
        frames = str(gop_seconds * RATE)
        source = f"testsrc2=size=1920x1080:rate={RATE}:duration={seconds}"
        _ffmpeg(
            ffmpeg,
            target,
            *("-f", "lavfi", "-i", source, "-c:v", "libx264", "-preset", "ultrafast"),
            *("-b:v", "5M", "-pix_fmt", "yuv420p", "-g", frames, "-keyint_min", frames),
            *("-sc_threshold", "0", "-movflags", "+faststart"),
        )

    base = directory / f"thumb_1080p30_{BASE_SECONDS}s_gop2_base.mp4"
    if not base.exists():
        encode(base, BASE_SECONDS, 2)
    for seconds in (10, 60, 600):
        path = directory / f"thumb_1080p30_{seconds}s_gop2.mp4"
        if not path.exists() and seconds == 10:
            encode(path, seconds, 2)
        elif not path.exists():
            # A 22 s loop: the targets (3, 9 … s; 30, 90 … s) all fall on different pictures.
            loops = ("-stream_loop", "-1", "-i", str(base), "-t", str(seconds))
            _ffmpeg(ffmpeg, path, *loops, "-c", "copy", "-movflags", "+faststart")
        files.append(BenchFile(path, seconds, 2))
    long_gop = directory / "thumb_1080p30_60s_gop30.mp4"
    if not long_gop.exists():
        encode(long_gop, 60, 30)
    files.append(BenchFile(long_gop, 60, 30))
    return files


def _ffmpeg(ffmpeg: str, target: Path, *args: str) -> None:
    partial = target.with_suffix(".partial.mp4")
    command = [ffmpeg, "-nostdin", "-v", "error", "-y", *args, str(partial)]
    subprocess.run(command, check=True, timeout=900)
    partial.rename(target)


# -- the reference -------------------------------------------------------------------------------
def bare_loop(path: Path, seconds: float) -> list[bytes]:
    """For each slot's target: seek to the keyframe before it, decode forward to the first
    frame at or after it, scale to 320 px, encode a JPEG."""
    pictures = []
    with av.open(str(path), container_options=OPEN_OPTIONS) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        height = round(320 * stream.codec_context.height / stream.codec_context.width / 2) * 2
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = 320, height
        encoder.pix_fmt = "yuvj420p"
        encoder.time_base = Fraction(1, 1)
        for index, target in enumerate(target_times(seconds, COUNT)):
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
            frame = None
            for frame in container.decode(stream):
                if frame.time is not None and frame.time >= target - 1e-6:
                    break
            assert frame is not None
            small = frame.reformat(width=320, height=height, format="yuvj420p")
            small.pts, small.time_base = index, Fraction(1, 1)
            pictures.append(b"".join(bytes(p) for p in encoder.encode(small)))
    return pictures


def _timed_bare(path: Path, seconds: float) -> tuple[float, int]:
    started = time.perf_counter()
    pictures = bare_loop(path, seconds)
    return time.perf_counter() - started, len(set(pictures))


# -- measuring -----------------------------------------------------------------------------------
@dataclass
class Result:
    seconds: dict[str, float]
    distinct: dict[str, int]
    times: dict[str, list[float]]


async def measure(
    file: BenchFile, media: MediaInfo, rounds: int, pyav: PyAVThumbnailer, ffmpeg: FfmpegThumbnailer
) -> Result:
    """Median seconds to 10 thumbnails. The three take turns, each round starting with the next
    one, so machine noise falls on each alike."""
    spec = ThumbnailSpec(count=COUNT)
    distinct: dict[str, int] = {}
    made: dict[str, list[float]] = {}

    async def time_bare() -> float:
        # In a worker thread, timed inside it: the reference pays no thread hop.
        elapsed, distinct["bare"] = await run_blocking(_timed_bare, file.path, file.seconds)
        return elapsed

    def adapter(
        name: str, thumbnailer: PyAVThumbnailer | FfmpegThumbnailer
    ) -> Callable[[], Awaitable[float]]:
        async def timed() -> float:
            started = time.perf_counter()
            thumbnails = await thumbnailer.thumbnails(file.path, media, spec)
            elapsed = time.perf_counter() - started
            distinct[name] = _distinct(thumbnails)
            made[name] = [t.time for t in thumbnails]
            return elapsed

        return timed

    runs: dict[str, Callable[[], Awaitable[float]]] = {
        "bare": time_bare,
        "pyav": adapter("pyav", pyav),
        "ffmpeg": adapter("ffmpeg", ffmpeg),
    }
    for run in runs.values():  # warm the page cache and the decode workers
        await run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(await runs[name]())
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return Result(medians, distinct, made)


def _distinct(thumbnails: Sequence[Thumbnail]) -> int:
    return len({t.data for t in thumbnails})


async def run_all(files: list[BenchFile], rounds: int, niceness: int) -> dict[Path, Result]:
    # The decoders' processes at the reference's priority unless asked: at the production
    # default (nice 10) they yield to every other process of a busy machine, the bare loop not.
    limits = DecodeLimits(niceness=niceness)
    pyav = PyAVThumbnailer(workers=2, limits=limits)
    ffmpeg = FfmpegThumbnailer(limits=limits)
    try:
        await pyav.check()  # starts a decode worker
        results = {}
        async with PyAVProber(workers=1) as prober:
            for file in files:
                media = await prober.probe(file.path)
                results[file.path] = await measure(file, media, rounds, pyav, ffmpeg)
        return results
    finally:
        await pyav.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=5, help="rounds per file")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="where the files live")
    parser.add_argument(
        "--niceness", type=int, default=0, help="the thumbnailers' decoding priority (prod: 10)"
    )
    args = parser.parse_args()

    files = make_media(args.cache)
    results = asyncio.run(run_all(files, args.count, args.niceness))
    print(f"PyAV {av.__version__}; {COUNT} thumbnails at 320 px, median of {args.count} rounds;")
    print("ms (distinct pictures) for the bare loop, the PyAV and the ffmpeg thumbnailers")
    header = f"{'file':<30}{'bare':>12}{'pyav':>12}{'ffmpeg':>12}{'pyav/bare':>11}"
    print(header + f"{'ffmpeg/bare':>13}")
    ok = True
    for file in files:
        result = results[file.path]
        ms = {name: value * 1e3 for name, value in result.seconds.items()}
        d = result.distinct
        ratio = ms["pyav"] / ms["bare"]
        ok = ok and ratio <= PYAV_TARGET
        cells = "".join(f"{f'{ms[n]:.1f} ({d[n]})':>12}" for n in ("bare", "pyav", "ffmpeg"))
        print(f"{file.path.name:<30}{cells}{ratio:>11.2f}{ms['ffmpeg'] / ms['bare']:>13.1f}")
    for file in files:
        print(f"  {file.path.name} pyav times: {results[file.path].times['pyav']}")
    by_length = {f.seconds: results[f.path].seconds["pyav"] for f in files if f.gop_seconds == 2}
    length_ratio = by_length[600] / by_length[60]
    ok = ok and length_ratio <= LENGTH_TARGET
    print(f"pyav 600 s / 60 s (2 s GOP): {length_ratio:.2f}")
    verdict = "met" if ok else "NOT met"
    targets = f"pyav/bare <= {PYAV_TARGET} on every file, 600 s/60 s <= {LENGTH_TARGET}"
    print(f"targets {targets}: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
