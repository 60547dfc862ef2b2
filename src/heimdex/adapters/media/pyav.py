"""The ``Prober`` port on PyAV, in reused worker processes: no fork or exec per file."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterable, Iterator
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import av
import av.error
import av.stream
import av.video.format

from heimdex.adapters.media.allowlist import PYAV_PROTOCOLS, format_whitelist
from heimdex.adapters.media.description import (
    RATE_SAMPLE_PACKETS,
    ChapterFacts,
    StreamFacts,
    describe,
    rate_needs_packets,
)
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.local_file import local_file
from heimdex.adapters.media.pooled_decoder import PooledDecoder
from heimdex.domain.errors import (
    InvalidMedia,
    ProberUnavailable,
    ProbeTimeout,
)
from heimdex.domain.media import MediaInfo

if TYPE_CHECKING:
    from heimdex.adapters.media.decode_pool import DecodePool


def _has_demuxer(name: str) -> bool:
    try:
        av.format.ContainerFormat(name, "r")
    except ValueError:
        return False
    return True


# Computed once at import against PyAV's own FFmpeg, which may lack a demuxer ffprobe has.
OPEN_OPTIONS = {
    "format_whitelist": format_whitelist(_has_demuxer),
    "protocol_whitelist": PYAV_PROTOCOLS,
    "enable_drefs": "0",
}

# PyAV reports colour properties and field order as FFmpeg's enum values; ffprobe (and the
# media description) use FFmpeg's names for them (libavutil/pixdesc.c). 0/2 are "unknown".
_COLOR_RANGES = {1: "tv", 2: "pc"}
_COLOR_PRIMARIES = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
_COLOR_TRANSFERS = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
_COLOR_SPACES = {
    0: "gbr",
    1: "bt709",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
    11: "smpte2085",
    12: "chroma-derived-nc",
    13: "chroma-derived-c",
    14: "ictcp",
    15: "ipt-c2",
    16: "ycgco-re",
    17: "ycgco-ro",
}
_FIELD_ORDERS = {1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}

# A probe's worker is killed this long after the probe's own timeout, which FFmpeg's I/O
# callback and the keyframe search honour themselves.
_KILL_GRACE = 2.0
# Looking for a frame to read the display matrix from: give up after this many packets.
_ROTATION_PACKET_BUDGET = 500


class _DeadlinePassed(Exception):
    """Looking for keyframes took longer than the probe's timeout."""


class PyAVProber(PooledDecoder):
    """Probes with PyAV (its bundled FFmpeg), through the same allow-lists as ffprobe, in a
    :class:`DecodePool` of reused worker processes.

    Opening a file runs FFmpeg's stream analysis, which decodes frames: in the API's own process
    a decoder crash on a hostile upload (corrupt HEVC, SIGSEGV) would take the API down, a
    decoder stuck in a loop would hold a thread for ever, and no rlimit could bind it without
    binding the whole API. In a pool worker the crash fails that probe (``decoder_crashed``),
    the timeout kills the worker, and the decode limits (memory, CPU, file size, priority)
    apply — for about 0.2 ms a probe, the round trip to a worker that is already running.

    PyAV 18 has no getter for a stream's display matrix (the rotation). Only the MOV/MP4
    demuxer makes one, from the track and movie header matrices, so for those files this
    adapter reads the two matrices itself and combines them exactly as FFmpeg does — a few
    small reads, where decoding a frame to see its matrix costs milliseconds (≈40 ms for a 4K
    HEVC keyframe). When the header is laid out in a way that reader does not follow, it
    decodes each video stream's first keyframe instead: the decoder puts the matrix on frames.

    Pass ``pool`` to share one; otherwise the prober starts its own (``workers`` processes,
    started on first use, a probe waiting at most ``worker_wait_seconds`` for one to be free:
    ``decoders_busy`` past it) and :meth:`close` stops it. Before FFmpeg opens a file, its
    metadata is counted against the limits' budget (``metadata_too_large``).
    """

    name = "pyav"

    def __init__(
        self,
        timeout: float = 30.0,
        *,
        limits: DecodeLimits | None = None,
        workers: int = 2,
        pool: DecodePool | None = None,
        worker_wait_seconds: float | None = None,
    ) -> None:
        self._timeout = timeout
        self._limits = limits if limits is not None else DecodeLimits()
        super().__init__(
            pool,
            workers=workers,
            preload=[__name__],
            limits=self._limits,
            unavailable=ProberUnavailable,
            wait_seconds=worker_wait_seconds,
        )

    async def probe(self, path: Path) -> MediaInfo:
        try:
            # FFmpeg's own I/O timeout ends most stalls inside the worker; this one ends a
            # decoder that spins without reading, by killing its worker.
            return await self._run_on(
                path.name,
                probe_file,
                path,
                self._timeout,
                self._limits,
                call_seconds=self._timeout + _KILL_GRACE,
            )
        except TimeoutError:
            raise ProbeTimeout(
                f"{path.name}: probing took longer than {self._timeout:g} s"
            ) from None

    async def check(self) -> None:
        problem = await self._pool.run(capability_missing, call_seconds=self._timeout)
        if problem is not None:
            raise ProberUnavailable(problem)


class InProcessPyAVProber:
    """The ``Prober`` port on PyAV in the calling process, for ``heimdex probe``: starting a
    :class:`DecodePool` costs seconds, ffprobe answers in a fraction of one.

    The files are the caller's own and the caller waits for the answer, so what the pool guards
    the server against (a hostile upload's decoder crash or endless loop) would end only this
    command. ``probe`` blocks its thread; call it from several threads to probe in parallel
    (FFmpeg's demuxing runs without the GIL).
    """

    name = "pyav"

    def __init__(self, timeout: float = 30.0, *, limits: DecodeLimits | None = None) -> None:
        self._timeout = timeout
        self._limits = limits if limits is not None else DecodeLimits()

    def probe_now(self, path: Path) -> MediaInfo:
        """:meth:`probe` without an event loop."""
        return probe_file(path, self._timeout, self._limits)

    async def probe(self, path: Path) -> MediaInfo:
        return self.probe_now(path)

    async def check(self) -> None:
        problem = capability_missing()
        if problem is not None:
            raise ProberUnavailable(problem)


# -- in the worker process ----------------------------------------------------------------------
def capability_missing() -> str | None:
    """What this FFmpeg lacks to probe anything, or ``None``."""
    if not OPEN_OPTIONS["format_whitelist"]:
        return "PyAV's FFmpeg has none of the allowed demuxers"
    if not _has_demuxer("mov"):
        return "PyAV's FFmpeg cannot read MP4"
    return None


def probe_file(path: Path, timeout: float, limits: DecodeLimits) -> MediaInfo:
    """The description of the file at ``path``; ``InvalidMedia`` (or a subclass) when it is not
    readable media or breaks ``limits``' ``max_pixels``/``max_streams``."""
    local = local_file(path, limits)  # before FFmpeg spends its quadratic CPU on the tags
    size = local.size
    deadline = time.monotonic() + timeout
    try:
        with av.open(
            local.url,
            mode="r",
            options=limits.decoder_options(),  # codec options, for every decoder
            container_options=OPEN_OPTIONS,
            timeout=timeout,
            metadata_errors="replace",
        ) as container:
            media = _describe(container, path, size, deadline)
    except MemoryError:  # FFmpeg's ENOMEM too: the decode pool names the limit
        raise
    except (av.error.ExitError, _DeadlinePassed):  # open, read or decoding ran out of time
        raise ProbeTimeout(f"{path.name}: probing took longer than {timeout:g} s") from None
    except av.error.FFmpegError as exc:
        raise InvalidMedia(f"{path.name}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeError, EOFError) as exc:
        raise InvalidMedia(f"{path.name}: {exc}") from None
    limits.check_media(path.name, media)
    return media


def _describe(container: Any, path: Path, size: int, deadline: float) -> MediaInfo:
    streams = list(container.streams)
    rotations = _display_rotations(container, streams, path, size, deadline)
    # Facts first: reading packets moves what some parsers report (an MP3's bit rate).
    facts = [_facts(stream, rotations) for stream in streams]
    times = None
    if any(rate_needs_packets(container.format.name, f) for f in facts):
        times = _packet_times(container, deadline)
    return describe(
        name=path.name,
        format_name=container.format.name,
        duration=container.duration / av.time_base if container.duration is not None else None,
        bit_rate=container.bit_rate or None,
        size_bytes=size,
        tags=dict(container.metadata),
        streams=facts,
        packet_times=times,
        chapters=[_chapter(chapter) for chapter in container.chapters()],
    )


def _packet_times(container: Any, deadline: float) -> dict[int, list[int]]:
    """The presentation times of the video streams' first packets (of the first
    ``RATE_SAMPLE_PACKETS`` of the file, as ffprobe reads them): the frame rate's evidence."""
    times: dict[int, list[int]] = {}
    for seen, packet in enumerate(container.demux()):
        if seen >= RATE_SAMPLE_PACKETS or time.monotonic() > deadline:
            break
        if packet.pts is not None and packet.stream.type == "video":
            times.setdefault(packet.stream.index, []).append(packet.pts)
    return times


def _facts(stream: Any, rotations: dict[int, float | None]) -> StreamFacts:
    context = stream.codec_context  # None when PyAV's FFmpeg has no decoder for the codec
    common: dict[str, Any] = {
        "index": stream.index,
        "media_type": stream.type,
        "codec": _codec_name(stream, context),
        "attached_pic": _is_cover_art(stream),
        "profile": stream.profile if context is not None else None,
        "bit_rate": context.bit_rate if context is not None else None,
        "start_time": _seconds(stream.start_time, stream.time_base),
        "duration": _seconds(stream.duration, stream.time_base),
        "tags": dict(stream.metadata),
    }
    if context is None:
        return StreamFacts(**common)
    if stream.type == "audio":
        return StreamFacts(
            **common,
            channels=context.channels,
            channel_layout=context.layout.name,
            sample_rate=context.sample_rate,
        )
    if stream.type != "video":
        return StreamFacts(**common)
    return StreamFacts(
        **common,
        width=context.width,
        height=context.height,
        sample_aspect_ratio=stream.sample_aspect_ratio,
        avg_frame_rate=stream.average_rate,
        base_frame_rate=stream.base_rate,
        time_base=stream.time_base,
        frame_count=stream.frames or None,
        pix_fmt=context.pix_fmt,
        pix_fmt_depth=_pix_fmt_depth(context.pix_fmt),
        color_range=_COLOR_RANGES.get(context.color_range),
        color_space=_COLOR_SPACES.get(context.colorspace),
        color_transfer=_COLOR_TRANSFERS.get(context.color_trc),
        color_primaries=_COLOR_PRIMARIES.get(context.color_primaries),
        field_order=_field_order(context.field_order),
        display_rotation=rotations.get(stream.index),
    )


def _display_rotations(
    container: Any, streams: list[Any], path: Path, size: int, deadline: float
) -> dict[int, float | None]:
    """The display matrix angle (counter-clockwise degrees, 0 without a matrix) by stream.

    Of the allowed demuxers, FFmpeg 5.1's sets a display matrix for MOV/MP4 only, so for every
    other format the answer is 0, as ffprobe's. (Newer FFmpeg also turns a Matroska
    projection's roll into one; the Debian ffprobe cannot, so it is left out to keep the two
    probers equal — phones write MP4/MOV.)
    """
    video = [s.index for s in streams if s.type == "video" and not _is_cover_art(s)]
    if not video:
        return {}
    if "mov" not in container.format.name.split(","):
        return dict.fromkeys(video, 0.0)
    tracks = mov_track_rotations(path, size)
    # One stream per trak, in order; cover art comes from the iTunes "covr" tag instead.
    from_tracks = [s.index for s in streams if not _is_cover_art(s)]
    if tracks is not None and len(tracks) == len(from_tracks):
        by_stream = dict(zip(from_tracks, tracks, strict=True))
        return {index: by_stream[index] for index in video}
    return _decoded_rotations(container, streams, deadline)


def _is_cover_art(stream: Any) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _decoded_rotations(
    container: Any, streams: list[Any], deadline: float
) -> dict[int, float | None]:
    """The fallback: decode the first keyframe of each video stream and read its matrix.

    The pixels are thrown away, so one thread and no loop filter. Streams whose keyframe does
    not decode stay unknown.
    """
    wanted = {
        s.index: s
        for s in streams
        if s.type == "video" and s.codec_context is not None and not _is_cover_art(s)
    }
    found: dict[int, float | None] = {}
    if not wanted:
        return found
    for stream in wanted.values():
        context = stream.codec_context
        context.thread_count = 1
        context.options = {"skip_loop_filter": "all"}
    for seen, packet in enumerate(container.demux(*wanted.values())):
        index = packet.stream.index
        if index not in found and packet.is_keyframe and packet.size:
            frame = _first_frame(packet)
            if frame is not None:
                found[index] = frame.rotation
        if len(found) == len(wanted) or seen >= _ROTATION_PACKET_BUDGET:
            break
        if time.monotonic() > deadline:
            raise _DeadlinePassed
    return found


# -- MOV/MP4 display matrices, read the way libavformat/mov.c reads them -----------------------
_IDENTITY = (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
# Where the 3x3 matrix starts in a box's payload (after version and flags), by box version.
_MVHD_MATRIX = {0: 36, 1: 48}
_TKHD_MATRIX = {0: 40, 1: 52}
_MAX_BOXES = 10_000


class _Unreadable(Exception):
    """The header is not laid out the plain way; let the decoder answer instead."""


def mov_track_rotations(path: Path, size: int) -> list[float | None] | None:
    """Each track's display matrix angle, in track order: counter-clockwise degrees, 0 when the
    matrix is the identity, ``None`` when it is degenerate. ``None`` overall when the file's
    header is not one this reader follows (no top-level ``moov``, compressed ``cmov``…).

    Mirrors ``mov_read_tkhd``: the track header's matrix times the movie header's, in FFmpeg's
    fixed-point arithmetic, then ``av_display_rotation_get``.
    """
    try:
        with open(path, "rb") as file:
            moov = next((box for box in _boxes(file, 0, size) if box[0] == b"moov"), None)
            if moov is None:
                return None
            movie: tuple[int, ...] | None = None
            angles: list[float | None] = []
            for kind, start, end in _boxes(file, moov[1], moov[2]):
                if kind == b"mvhd":
                    movie = _matrix(file, start, end, _MVHD_MATRIX)
                elif kind == b"trak":
                    if movie is None:  # FFmpeg would combine with a matrix not read yet
                        return None
                    tkhd = next((b for b in _boxes(file, start, end) if b[0] == b"tkhd"), None)
                    if tkhd is None:
                        return None
                    track = _matrix(file, tkhd[1], tkhd[2], _TKHD_MATRIX)
                    angles.append(_angle(_combine(track, movie)))
            return angles
    except (OSError, struct.error, _Unreadable):
        return None


def _boxes(file: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, end)`` of each box between ``start`` and ``end``."""
    position = start
    for _ in range(_MAX_BOXES):
        if end - position < 8:
            return
        file.seek(position)
        header = file.read(16)
        box_size, kind = struct.unpack(">I4s", header[:8])
        header_size = 8
        if box_size == 1:  # a 64-bit size follows
            (box_size,) = struct.unpack(">Q", header[8:16])
            header_size = 16
        elif box_size == 0:  # runs to the end of its parent
            box_size = end - position
        if box_size < header_size or position + box_size > end:
            raise _Unreadable
        yield kind, position + header_size, position + box_size
        position += box_size
    raise _Unreadable


def _matrix(file: BinaryIO, start: int, end: int, offsets: dict[int, int]) -> tuple[int, ...]:
    file.seek(start)
    version = file.read(1)
    offset = offsets.get(version[0]) if version else None
    if offset is None or start + offset + 36 > end:
        raise _Unreadable
    file.seek(start + offset)
    return struct.unpack(">9i", file.read(36))


def _combine(track: tuple[int, ...], movie: tuple[int, ...]) -> tuple[int, ...]:
    """``track * movie`` in 16.16/2.30 fixed point, wrapping to 32 bits as FFmpeg's C does."""
    shifts = (16, 16, 30)
    result = []
    for i in range(3):
        for j in range(3):
            total = 0
            for e in range(3):
                total = _int32(total + ((track[i * 3 + e] * movie[e * 3 + j]) >> shifts[e]))
            result.append(total)
    return tuple(result)


def _int32(value: int) -> int:
    return (value + (1 << 31)) % (1 << 32) - (1 << 31)


def _angle(matrix: tuple[int, ...]) -> float | None:
    """``av_display_rotation_get``: counter-clockwise degrees; 0 for the identity."""
    if matrix == _IDENTITY:
        return 0.0  # FFmpeg keeps no matrix then
    scale_x = math.hypot(matrix[0], matrix[3])
    scale_y = math.hypot(matrix[1], matrix[4])
    if scale_x == 0 or scale_y == 0:
        return None
    return -math.degrees(math.atan2(matrix[1] / scale_y, matrix[0] / scale_x))


def _first_frame(packet: Any) -> Any | None:
    """Decode one keyframe, draining the decoder so reordering delay does not hold it back."""
    context = packet.stream.codec_context
    try:
        frames = context.decode(packet) or context.decode(None)
    except av.error.FFmpegError:
        frames = []
    if not frames:
        context.flush_buffers()  # after draining, the decoder takes packets again only so
        return None
    return frames[0]


def _codec_name(stream: Any, context: Any) -> str | None:
    """FFmpeg's codec name (``mp3``), not the decoder's (``mp3float``), as ffprobe prints."""
    if context is not None:
        name: str = context.codec.canonical_name
        return name
    if stream.type == "data":
        data_name: str | None = stream.name  # the codec descriptor's name, e.g. bin_data
        return data_name
    return None


def _chapter(chapter: dict[str, Any]) -> ChapterFacts:
    time_base: Fraction = chapter["time_base"]
    metadata: dict[str, str] = chapter.get("metadata") or {}
    return ChapterFacts(
        start=float(chapter["start"] * time_base),
        end=float(chapter["end"] * time_base),
        title=metadata.get("title"),
    )


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _field_order(value: int | str | None) -> str | None:
    if isinstance(value, str):
        return value
    return _FIELD_ORDERS.get(value) if value is not None else None


@lru_cache(maxsize=64)
def _pix_fmt_depth(pix_fmt: str | None) -> int | None:
    if not pix_fmt:
        return None
    try:
        components: Iterable[Any] = av.video.format.VideoFormat(pix_fmt).components
    except ValueError:
        return None
    return max((c.bits for c in components), default=0) or None
