"""The probers' composition, apart from :mod:`heimdex.bootstrap` so that ``heimdex probe``
imports the media adapters it needs and nothing else (no database, queue, storage or web stack).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from heimdex.adapters.media.limits import DecodeLimits

if TYPE_CHECKING:
    from heimdex.domain.ports import Prober
    from heimdex.settings import Settings


def decode_limits(settings: Settings) -> DecodeLimits:
    """What every decoding process runs under: the decode pool and ffprobe/ffmpeg runs."""
    return DecodeLimits(
        memory_bytes=settings.decode.memory_limit_bytes,
        cpu_seconds=settings.decode.cpu_limit_seconds,
        file_size_bytes=settings.decode.file_size_limit_bytes,
        niceness=settings.decode.niceness,
        max_pixels=settings.decode.max_pixels,
        max_streams=settings.decode.max_streams,
        max_metadata_entries=settings.decode.max_metadata_entries,
        max_metadata_bytes=settings.decode.max_metadata_bytes,
    )


def build_prober(settings: Settings, *, in_process: bool = False) -> Prober:
    """The configured prober (``HEIMDEX_PROBER``). ``in_process``: PyAV probes in the calling
    process instead of a decode pool (the command line's, never the server's)."""
    if settings.probe.backend == "ffprobe":
        from heimdex.adapters.media.ffprobe import FfprobeProber

        return FfprobeProber(
            binary=settings.probe.ffprobe_path,
            timeout=settings.probe.timeout_seconds,
            limits=decode_limits(settings),
        )
    if in_process:
        from heimdex.adapters.media.pyav import InProcessPyAVProber

        return InProcessPyAVProber(
            timeout=settings.probe.timeout_seconds, limits=decode_limits(settings)
        )
    from heimdex.adapters.media.pyav import PyAVProber

    return PyAVProber(
        timeout=settings.probe.timeout_seconds,
        limits=decode_limits(settings),
        workers=settings.probe.workers,
        worker_wait_seconds=settings.probe.worker_wait_seconds,
    )
