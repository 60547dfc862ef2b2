"""The ``Prober`` port on the ffprobe binary: one subprocess per file, JSON out."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import msgspec

from heimdex.adapters.media.allowlist import FFPROBE_PROTOCOLS, format_whitelist
from heimdex.adapters.media.description import (
    RATE_SAMPLE_PACKETS,
    ChapterFacts,
    StreamFacts,
    describe,
    rate_needs_packets,
)
from heimdex.adapters.media.ffmpeg_process import Failures, run_binary
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.local_file import local_file
from heimdex.adapters.offload import run_blocking
from heimdex.domain.errors import InvalidMedia, ProberUnavailable, ProbeTimeout
from heimdex.domain.media import MediaInfo

_STDERR_LIMIT = 500
_ADDRESS = re.compile(r" @ 0x[0-9a-f]+\]")  # "[hls @ 0x55c6313cb1c0]" names a demuxer instance
_CHECK_TIMEOUT = 10.0
_FAILURES = Failures(unavailable=ProberUnavailable, timed_out=ProbeTimeout, doing="probing")


# -- ffprobe's JSON, as far as we read it ------------------------------------------------------
class _SideData(msgspec.Struct):
    side_data_type: str = ""
    rotation: float | None = None


class _Stream(msgspec.Struct):
    index: int
    codec_type: str = "data"
    codec_name: str | None = None
    profile: str | None = None
    bit_rate: str | None = None
    start_time: str | None = None
    duration: str | None = None
    width: int | None = None
    height: int | None = None
    sample_aspect_ratio: str | None = None
    avg_frame_rate: str | None = None
    r_frame_rate: str | None = None
    time_base: str | None = None
    nb_frames: str | None = None
    pix_fmt: str | None = None
    bits_per_raw_sample: str | None = None
    color_range: str | None = None
    color_space: str | None = None
    color_transfer: str | None = None
    color_primaries: str | None = None
    field_order: str | None = None
    channels: int | None = None
    channel_layout: str | None = None
    sample_rate: str | None = None
    disposition: dict[str, int] = msgspec.field(default_factory=dict)
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    side_data_list: list[_SideData] = msgspec.field(default_factory=list)


class _Chapter(msgspec.Struct):
    start_time: str
    end_time: str
    tags: dict[str, str] = msgspec.field(default_factory=dict)


class _Format(msgspec.Struct):
    format_name: str
    duration: str | None = None
    bit_rate: str | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)


class _Packet(msgspec.Struct):
    stream_index: int
    pts: int | None = None


class _Output(msgspec.Struct):
    format: _Format | None = None
    streams: list[_Stream] = msgspec.field(default_factory=list)
    chapters: list[_Chapter] = msgspec.field(default_factory=list)


class _Packets(msgspec.Struct):
    packets: list[_Packet] = msgspec.field(default_factory=list)


class _Component(msgspec.Struct):
    bit_depth: int = 0


class _PixelFormat(msgspec.Struct):
    name: str
    components: list[_Component] = msgspec.field(default_factory=list)


class _PixelFormats(msgspec.Struct):
    pixel_formats: list[_PixelFormat] = msgspec.field(default_factory=list)


class FfprobeProber:
    """Probes with the ``ffprobe`` binary, each run in its own process group.

    Only local regular files are opened, through the demuxer allow-list; a run longer than
    ``timeout`` seconds is killed with its whole process group and reported as ``ProbeTimeout``.
    Each run is under ``limits`` (memory, CPU, file size, priority, ``max_pixels``).
    """

    name = "ffprobe"

    def __init__(
        self, binary: str = "ffprobe", timeout: float = 30.0, *, limits: DecodeLimits | None = None
    ) -> None:
        self._binary = binary
        self._timeout = timeout
        self._limits = limits if limits is not None else DecodeLimits()
        self._pixel_depths: dict[str, int] | None = None

    async def probe(self, path: Path) -> MediaInfo:
        # ``MetadataTooLarge`` before ffprobe would spend its quadratic CPU on too many tags.
        local = await run_blocking(local_file, path, self._limits)
        size, url = local.size, local.url
        returncode, stdout, stderr = await self._run(
            *self._opening(),
            "-show_format",
            "-show_streams",
            "-show_chapters",
            "-print_format",
            "json",
            url,
            limit=self._timeout,
            what=path.name,
        )
        if returncode != 0:
            said = stderr.decode(errors="replace")
            hit = self._limits.hit_by_subprocess(path.name, returncode, said)
            if hit is not None:
                raise hit
            raise InvalidMedia(f"{path.name}: {_error_text(stderr, url)}")
        try:
            output = msgspec.json.decode(stdout.decode(errors="replace"), type=_Output)
        except msgspec.ValidationError as exc:
            raise InvalidMedia(f"{path.name}: ffprobe's description is unreadable ({exc})") from exc
        if output.format is None:
            raise InvalidMedia(f"{path.name}: ffprobe found no container")
        depths = await self._depths()
        fmt = output.format
        facts = [_facts(s, depths) for s in output.streams]
        times = None
        if any(rate_needs_packets(fmt.format_name, f) for f in facts):
            times = await self._packet_times(url)
        media = describe(
            name=path.name,
            format_name=fmt.format_name,
            duration=_float(fmt.duration),
            bit_rate=_int(fmt.bit_rate),
            size_bytes=size,
            tags=fmt.tags,
            streams=facts,
            packet_times=times,
            chapters=[
                ChapterFacts(
                    start=_float(c.start_time) or 0.0,
                    end=_float(c.end_time) or 0.0,
                    title=c.tags.get("title"),
                )
                for c in output.chapters
            ],
        )
        self._limits.check_media(path.name, media)
        return media

    async def _packet_times(self, url: str) -> dict[int, list[int]]:
        """The presentation times of the streams' packets among the file's first: the frame
        rate's evidence. A run of its own: reading packets moves what some parsers report (an
        MP3's bit rate), so the description is read without."""
        returncode, stdout, _ = await self._run(
            *self._opening(),
            "-read_intervals",
            f"%+#{RATE_SAMPLE_PACKETS}",
            "-show_entries",
            "packet=stream_index,pts",
            "-print_format",
            "json",
            url,
            limit=self._timeout,
            what=url,
        )
        times: dict[int, list[int]] = {}
        if returncode != 0:
            return times  # the description stands without: the declared rates decide
        try:
            packets = msgspec.json.decode(stdout, type=_Packets).packets
        except msgspec.ValidationError:
            return times
        for packet in packets:
            if packet.pts is not None:
                times.setdefault(packet.stream_index, []).append(packet.pts)
        return times

    async def check(self) -> None:
        returncode, stdout, stderr = await self._run(
            "-version", limit=_CHECK_TIMEOUT, what="ffprobe -version"
        )
        if returncode != 0 or not stdout.startswith(b"ffprobe version"):
            detail = stderr.decode(errors="replace").strip()[:_STDERR_LIMIT]
            raise ProberUnavailable(f"{self._binary} -version failed: {detail or returncode}")

    async def _depths(self) -> dict[str, int]:
        """Bits per sample of every pixel format this ffprobe knows, asked once."""
        if self._pixel_depths is None:
            returncode, stdout, _ = await self._run(
                "-v",
                "error",
                "-show_pixel_formats",
                "-print_format",
                "json",
                limit=_CHECK_TIMEOUT,
                what="ffprobe -show_pixel_formats",
            )
            if returncode != 0:
                return {}  # bit depths fall back to the codec's sample depth; ask again next time
            formats = msgspec.json.decode(stdout, type=_PixelFormats).pixel_formats
            self._pixel_depths = {
                f.name: max((c.bit_depth for c in f.components), default=0) for f in formats
            }
        return self._pixel_depths

    def _opening(self) -> tuple[str, ...]:
        """How every run that reads the file opens it: the allow-lists, no MOV data references,
        the decode limits."""
        return (
            *("-v", "error", "-hide_banner", "-protocol_whitelist", FFPROBE_PROTOCOLS),
            *("-format_whitelist", format_whitelist(), "-enable_drefs", "0"),
            *self._limits.decoder_arguments(),
        )

    async def _run(self, *args: str, limit: float, what: str) -> tuple[int, bytes, bytes]:
        return await run_binary(
            self._binary, args, limits=self._limits, limit=limit, what=what, failures=_FAILURES
        )


def _facts(stream: _Stream, depths: dict[str, int]) -> StreamFacts:
    rotation: float = 0.0  # ffprobe lists the display matrix when the container has one
    for side_data in stream.side_data_list:
        if side_data.side_data_type == "Display Matrix" and side_data.rotation is not None:
            rotation = side_data.rotation
    return StreamFacts(
        index=stream.index,
        media_type=stream.codec_type,
        codec=stream.codec_name,
        attached_pic=stream.disposition.get("attached_pic") == 1,
        profile=stream.profile,
        bit_rate=_int(stream.bit_rate),
        start_time=_float(stream.start_time),
        duration=_float(stream.duration),
        tags=stream.tags,
        width=stream.width,
        height=stream.height,
        sample_aspect_ratio=_ratio(stream.sample_aspect_ratio, ":"),
        avg_frame_rate=_ratio(stream.avg_frame_rate, "/"),
        base_frame_rate=_ratio(stream.r_frame_rate, "/"),
        time_base=_ratio(stream.time_base, "/"),
        frame_count=_int(stream.nb_frames),
        pix_fmt=stream.pix_fmt,
        pix_fmt_depth=depths.get(stream.pix_fmt or "") or None,
        bits_per_raw_sample=_int(stream.bits_per_raw_sample),
        color_range=stream.color_range,
        color_space=stream.color_space,
        color_transfer=stream.color_transfer,
        color_primaries=stream.color_primaries,
        field_order=stream.field_order,
        display_rotation=rotation if stream.codec_type == "video" else None,
        channels=stream.channels,
        channel_layout=stream.channel_layout,
        sample_rate=_int(stream.sample_rate),
    )


def _error_text(stderr: bytes, url: str) -> str:
    """ffprobe's complaint, trimmed, without the server's path, addresses or the long list."""
    text = stderr.decode(errors="replace").replace(format_whitelist(), "<allowed formats>")
    lines = []
    for line in text.splitlines():
        line = _ADDRESS.sub("]", line.replace(url + ": ", "").replace(url, "the file")).strip()
        if line:
            lines.append(line)
    text = " / ".join(lines[-3:]) if lines else "ffprobe could not read the file"
    return text[-_STDERR_LIMIT:]


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _ratio(value: str | None, separator: str) -> Fraction | None:
    """``30000/1001`` or ``16:9`` as a fraction; FFmpeg's ``0/0`` (unknown) as ``None``."""
    if not value:
        return None
    numerator, _, denominator = value.partition(separator)
    try:
        num, den = int(numerator), int(denominator)
    except ValueError:
        return None
    if num <= 0 or den <= 0:
        return None
    return Fraction(num, den)
