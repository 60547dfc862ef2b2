"""Resource limits for everything that decodes an upload: the decode pool's worker processes
and every ffprobe/ffmpeg subprocess.

A hostile file can ask a decoder for a frame of 16000x16000 (≈ 1.3 GB resident while ffprobe
looks at it), for minutes of CPU, or — through some muxer or filter a bug lets it reach — for
a file on disk. So every decoding process runs with:

- ``RLIMIT_AS`` (address space): allocations past it fail (``ENOMEM``, Python's
  ``MemoryError``) → ``decode_memory_exceeded``;
- ``RLIMIT_CPU``: past it the kernel sends ``SIGXCPU``, which ends the process →
  ``decode_cpu_exceeded``. A decode worker is reused, so its budget is renewed before each
  call (the soft limit is moved to the CPU time used so far plus the budget);
- ``RLIMIT_FSIZE``: the processes write only to pipes; a file written past it fails
  (``SIGXFSZ``, or ``EFBIG`` in Python, which ignores the signal) → ``decode_file_size_exceeded``;
- a lower scheduling priority (``nice``), so decoding yields the CPU to the API;
- FFmpeg's ``max_pixels`` on every decoder, and the same bound checked against the frame size a
  file declares before anything is decoded → ``media_too_large``;
- a metadata budget (entries and bytes of tags and chapters), checked on the container's
  structure before FFmpeg parses it (its parsing is quadratic in the entries) →
  ``metadata_too_large`` (:mod:`heimdex.adapters.media.metadata_budget`).

How a subprocess gets its limits. ``preexec_fn`` runs Python between ``fork`` and ``exec`` in
a process that holds threads (anyio's workers, the event loop's): a lock some other thread held
at the fork — the allocator's, the import lock — is never released in the child, and the
child can hang; CPython documents it as unsafe with threads. Python 3.11's ``subprocess`` has
no rlimit parameters and ``os.posix_spawn`` no rlimit attributes; setting the limits on the
parent around the spawn would bind the API's own threads; ``prlimit(2)`` on the child after it
started races with what it does first. So the limits are set by the child's first program:
``nice -n N prlimit --as=… --cpu=… --fsize=… -- ffprobe …`` — util-linux's ``prlimit`` and
coreutils' ``nice`` (both part of every Debian system, ≈ 1 ms each) set them and ``exec`` the
binary, whose pid, process group and exit status are then the ones we waited for. Where they
are missing, a few lines of Python (``python -I -S -c``) do the same, at ≈ 20 ms a run. The
PyAV prober and thumbnailer decode in decode-pool workers, which set the limits on themselves.
"""

from __future__ import annotations

import errno
import math
import os
import resource
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import msgspec

from heimdex.adapters.media.metadata_budget import MetadataBudget, check_count, check_metadata
from heimdex.domain.errors import (
    DecodeCpuExceeded,
    DecodeFileSizeExceeded,
    DecodeLimitExceeded,
    DecodeMemoryExceeded,
    MediaTooLarge,
    TooManyStreams,
)
from heimdex.domain.media import MediaInfo

# The defaults: generous for real media (8K frames, minutes of HEVC), fatal for bombs.
DEFAULT_MEMORY_BYTES = 4 << 30
DEFAULT_CPU_SECONDS = 120
DEFAULT_FILE_SIZE_BYTES = 16 << 20
DEFAULT_NICENESS = 10
DEFAULT_MAX_PIXELS = 8192 * 8192
# A Blu-ray remux has a few dozen (audio and subtitle languages); FFmpeg's own cap is 1000.
DEFAULT_MAX_STREAMS = 256
# Real files carry tens of tags (a Blu-ray remux: a few per stream, a hundred chapters); FFmpeg
# parses 4,000 in ≈ 0.07 s of CPU and 40,000 in ≈ 6 s. Cover art sits in MP4/ID3 metadata too.
DEFAULT_MAX_METADATA_ENTRIES = 4096
DEFAULT_MAX_METADATA_BYTES = 16 << 20

# What FFmpeg says when a frame is over ``max_pixels``, and when an allocation failed.
_MAX_PIXELS_SAID = "exceeds specified max pixel count"
_ENOMEM_SAID = os.strerror(errno.ENOMEM)  # "Cannot allocate memory"

# Sets the limits, restores the signals Python ignores (an ignored signal stays ignored across
# exec), then becomes the binary. argv: memory cpu fsize niceness binary args…
_SHIM = """\
import os, resource, signal, sys
memory, cpu, fsize, niceness = (int(v) for v in sys.argv[1:5])
for kind, soft, hard in ((resource.RLIMIT_AS, memory, memory),
                         (resource.RLIMIT_CPU, cpu, cpu + 1),
                         (resource.RLIMIT_FSIZE, fsize, fsize)):
    if soft > 0:
        ceiling = resource.getrlimit(kind)[1]
        if ceiling != resource.RLIM_INFINITY:
            hard = min(hard, ceiling)
        resource.setrlimit(kind, (min(soft, hard), hard))
for number in (signal.SIGPIPE, signal.SIGXFSZ):
    signal.signal(number, signal.SIG_DFL)
if niceness:
    os.nice(niceness)
os.execv(sys.argv[5], sys.argv[5:])
"""


class DecodeLimits(msgspec.Struct, frozen=True):
    """The limits of one decoding process; ``0`` switches a limit off."""

    memory_bytes: int = DEFAULT_MEMORY_BYTES
    cpu_seconds: int = DEFAULT_CPU_SECONDS
    file_size_bytes: int = DEFAULT_FILE_SIZE_BYTES
    niceness: int = DEFAULT_NICENESS
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_streams: int = DEFAULT_MAX_STREAMS
    max_metadata_entries: int = DEFAULT_MAX_METADATA_ENTRIES
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES

    @property
    def metadata_budget(self) -> MetadataBudget:
        return MetadataBudget(entries=self.max_metadata_entries, bytes=self.max_metadata_bytes)

    def check_metadata(self, path: Path) -> None:
        """``MetadataTooLarge`` when the file's container holds more metadata than allowed:
        called before FFmpeg opens it, which would spend the CPU."""
        check_metadata(path, self.metadata_budget)

    # -- frame size ------------------------------------------------------------------------------
    def check_frame(self, name: str, width: int | None, height: int | None) -> None:
        """``MediaTooLarge`` when a declared frame is over ``max_pixels``."""
        if self.max_pixels and width and height and width * height > self.max_pixels:
            raise MediaTooLarge(
                f"{name}: a {width}x{height} frame is {width * height} pixels, more than the "
                f"{self.max_pixels} allowed"
            )

    def check_media(self, name: str, media: MediaInfo) -> None:
        """``TooManyStreams``, ``MediaTooLarge`` or ``MetadataTooLarge`` when a probed file has
        too many streams, a stream declares too large a frame or the file too many tags."""
        if self.max_streams and len(media.streams) > self.max_streams:
            raise TooManyStreams(
                f"{name}: {len(media.streams)} streams, more than the {self.max_streams} allowed"
            )
        for stream in media.streams:
            self.check_frame(name, stream.width, stream.height)
        # What the pre-scan does not read (other formats) is still refused, if not spared.
        entries = len(media.tags) + len(media.chapters) + sum(len(s.tags) for s in media.streams)
        check_count(name, entries, 0, self.metadata_budget)

    def decoder_options(self) -> dict[str, str]:
        """FFmpeg codec options (PyAV's ``options``): refuse larger frames while decoding."""
        return {"max_pixels": str(self.max_pixels)} if self.max_pixels else {}

    def decoder_arguments(self) -> list[str]:
        """The same for the ffprobe/ffmpeg command line (before ``-i``)."""
        return ["-max_pixels", str(self.max_pixels)] if self.max_pixels else []

    # -- this process (a decode worker) ----------------------------------------------------------
    def apply_here(self) -> None:
        """Memory, file size and priority of the calling process, once, at its start."""
        _lower(resource.RLIMIT_AS, self.memory_bytes)
        _lower(resource.RLIMIT_FSIZE, self.file_size_bytes)
        if self.niceness:
            os.nice(self.niceness)

    def renew_cpu_budget(self) -> None:
        """Allow ``cpu_seconds`` more CPU time from now (a reused worker, before each call)."""
        if self.cpu_seconds:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            used = math.ceil(usage.ru_utime + usage.ru_stime)
            _lower(resource.RLIMIT_CPU, used + self.cpu_seconds)

    # -- subprocesses ----------------------------------------------------------------------------
    def argv(self, binary: str, args: Sequence[str], *, shim: bool = False) -> list[str]:
        """The argv that runs ``binary args`` (``binary`` resolved) under these limits: through
        ``nice`` and ``prlimit``, or the Python shim where they are missing (or ``shim``)."""
        memory = _allowed(resource.RLIMIT_AS, self.memory_bytes)
        cpu = _allowed(resource.RLIMIT_CPU, self.cpu_seconds)
        fsize = _allowed(resource.RLIMIT_FSIZE, self.file_size_bytes)
        if not (memory or cpu or fsize or self.niceness):
            return [binary, *args]
        tools = None if shim else _tools()
        if tools is None:
            values = (memory, cpu, fsize, self.niceness)
            return [sys.executable, "-I", "-S", "-c", _SHIM, *map(str, values), binary, *args]
        nice, prlimit = tools
        command = [nice, "-n", str(self.niceness)] if self.niceness else []
        command.append(prlimit)
        if memory:
            command.append(f"--as={memory}")
        if cpu:
            # SIGXCPU (which ends ffmpeg) at the soft limit; SIGKILL a second later.
            command.append(f"--cpu={cpu}:{_allowed(resource.RLIMIT_CPU, cpu + 1)}")
        if fsize:
            command.append(f"--fsize={fsize}")
        return [*command, "--", binary, *args]

    # -- what a limit hit looks like -------------------------------------------------------------
    def hit_by_subprocess(
        self, name: str, returncode: int, stderr: str
    ) -> DecodeLimitExceeded | MediaTooLarge | None:
        """The error for a subprocess that ended on a limit, else ``None``."""
        import signal  # its enums cost a start-up that only subprocess runs need

        if returncode == -signal.SIGXCPU:
            return self.cpu_exceeded(name)
        if returncode == -signal.SIGXFSZ:
            return self.file_size_exceeded(name)
        if returncode != 0 and self.max_pixels and _MAX_PIXELS_SAID in stderr:
            return MediaTooLarge(
                f"{name}: a frame is larger than the {self.max_pixels} pixels allowed"
            )
        if returncode != 0 and self.memory_bytes and _ENOMEM_SAID in stderr:
            return self.memory_exceeded(name)
        return None

    def memory_exceeded(self, name: str = "") -> DecodeMemoryExceeded:
        return DecodeMemoryExceeded(
            _named(
                name, f"decoding needed more than the {self.memory_bytes} bytes of memory allowed"
            )
        )

    def cpu_exceeded(self, name: str = "") -> DecodeCpuExceeded:
        return DecodeCpuExceeded(
            _named(name, f"decoding needed more than the {self.cpu_seconds} s of CPU time allowed")
        )

    def file_size_exceeded(self, name: str = "") -> DecodeFileSizeExceeded:
        return DecodeFileSizeExceeded(
            _named(name, f"the decoder wrote a file past the {self.file_size_bytes} bytes allowed")
        )


def _named(name: str, text: str) -> str:
    return f"{name}: {text}" if name else text


def _allowed(kind: int, value: int) -> int:
    """``value`` (0: none) within the hard limit this process already has — an unprivileged
    process cannot raise it, and its children inherit it."""
    if value <= 0:
        return 0
    hard = resource.getrlimit(kind)[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def _lower(kind: int, value: int) -> None:
    """Set the soft limit to ``value`` (within the hard one), leaving the hard limit as it is
    so a reused worker can move its CPU budget on."""
    allowed = _allowed(kind, value)
    if allowed:
        resource.setrlimit(kind, (allowed, resource.getrlimit(kind)[1]))


@lru_cache(maxsize=1)
def _tools() -> tuple[str, str] | None:
    import shutil  # with bz2 and lzma: only a subprocess's limits need it, not `heimdex probe`

    nice, prlimit = shutil.which("nice"), shutil.which("prlimit")
    return (nice, prlimit) if nice and prlimit else None
