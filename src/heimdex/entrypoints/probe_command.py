"""``heimdex probe``: describe media files, in this process.

The decode pool is the server's guard against hostile uploads; here the files are the caller's
and the caller waits, so one file probes at once in this process (what ffprobe costs, not the
seconds a pool takes to start) and several probe in parallel threads under a progress display.
Only what probing needs is imported.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heimdex.domain.errors import HeimdexError
    from heimdex.domain.media import MediaInfo, StreamInfo
    from heimdex.domain.ports import Prober
    from heimdex.settings import Settings

EXIT_FAILURE = 1


class Failure:
    """Why one file has no description: a line for standard error."""

    def __init__(self, path: Path, message: str, code: str | None = None) -> None:
        self.path, self.message, self.code = path, message, code

    def line(self) -> str:
        code = f"{self.code}: " if self.code else ""
        return f"heimdex: {self.path}: {code}{self.message}"


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be probed before a decoder sees it, in the user's words; or ``None``."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory; probe takes files (e.g. DIR/*.mp4)"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a device, FIFO or socket)"
    return None


def without_name(path: Path, exc: HeimdexError) -> str:
    """The adapters' messages start with the file's name; the CLI prints the path already."""
    return exc.message.removeprefix(f"{path.name}: ")


def probe_command(settings: Settings, files: Sequence[Path], *, as_json: bool, jobs: int) -> int:
    """Probe ``files``; print the descriptions (or JSON) and a line per failure. 1 if any failed."""
    from heimdex.bootstrap_media import build_prober

    prober = build_prober(settings, in_process=True)
    if len(files) == 1:
        outcomes = [_probe_one(prober, files[0])]
    else:
        outcomes = _probe_many(prober, files, jobs)
    return _report(files, outcomes, as_json=as_json)


def _probe_one(prober: Prober, path: Path) -> MediaInfo | Failure:
    from heimdex.domain.errors import HeimdexError

    problem = file_problem(path)
    if problem is not None:
        return Failure(path, problem)
    probe_now: Callable[[Path], MediaInfo] | None = getattr(prober, "probe_now", None)
    try:
        if probe_now is not None:
            return probe_now(path)
        import asyncio

        return asyncio.run(prober.probe(path))  # ffprobe: a subprocess already
    except HeimdexError as exc:
        return Failure(path, without_name(path, exc), exc.code)


def _probe_many(prober: Prober, files: Sequence[Path], jobs: int) -> list[MediaInfo | Failure]:
    from concurrent.futures import ThreadPoolExecutor

    from heimdex.entrypoints.cli_progress import FileProgress, stderr_is_terminal

    def one(path: Path) -> MediaInfo | Failure:
        progress.started(str(path))
        try:
            return _probe_one(prober, path)
        finally:
            progress.finished(str(path))

    with (
        FileProgress(len(files), enabled=stderr_is_terminal()) as progress,
        ThreadPoolExecutor(max_workers=max(1, jobs)) as pool,
    ):
        return list(pool.map(one, files))


def _report(
    files: Sequence[Path], outcomes: Sequence[MediaInfo | Failure], *, as_json: bool
) -> int:
    import msgspec

    failures = [o for o in outcomes if isinstance(o, Failure)]
    for failure in failures:
        print(failure.line(), file=sys.stderr)
    successes = [(p, o) for p, o in zip(files, outcomes, strict=True) if not isinstance(o, Failure)]
    if as_json:
        if len(files) == 1 and successes:
            print(msgspec.json.encode(successes[0][1]).decode())
        elif len(files) > 1:
            listing = [{"file": str(p), "media": o} for p, o in successes]
            print(msgspec.json.encode(listing).decode())
    else:
        for path, media in successes:
            print(format_media(path, media))
    return EXIT_FAILURE if failures else 0


def format_media(path: Path, media: MediaInfo) -> str:
    """A readable summary of one file, a line per stream."""
    duration = f"{media.duration:.3f} s" if media.duration is not None else "duration unknown"
    rate = f"{media.bit_rate / 1000:.0f} kb/s" if media.bit_rate else "bit rate unknown"
    lines = [f"{path}", f"  {media.format_name}  {duration}  {rate}  {media.size_bytes:,} bytes"]
    lines += [f"  #{s.index} {s.kind:<9} {_describe_stream(s)}" for s in media.streams]
    lines += [
        f"  chapter {c.index}: {c.start:.3f}-{c.end:.3f} s {c.title or ''}".rstrip()
        for c in media.chapters
    ]
    return "\n".join(lines)


def _describe_stream(s: StreamInfo) -> str:
    parts = [s.codec or "unknown codec"]
    if s.profile:
        parts[0] += f" ({s.profile})"
    if s.width and s.height:
        parts.append(f"{s.width}x{s.height}")
        if s.rotation:
            parts.append(f"rotation {s.rotation} -> {s.display_width}x{s.display_height}")
    if s.frame_rate:
        parts.append(f"{s.frame_rate:g} fps")
    if s.pix_fmt:
        parts.append(s.pix_fmt)
    if s.hdr:
        parts.append("HDR")
    if s.channels:
        parts.append(f"{s.channels} ch" + (f" {s.channel_layout}" if s.channel_layout else ""))
    if s.sample_rate:
        parts.append(f"{s.sample_rate} Hz")
    if s.language:
        parts.append(f"[{s.language}]")
    return "  ".join(parts)
