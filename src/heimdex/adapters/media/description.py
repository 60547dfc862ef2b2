"""Turns what a media library reports into the media description, one way for every prober.

Each adapter reads its library (ffprobe's JSON, PyAV's objects) into :class:`StreamFacts` and
:class:`ChapterFacts` using FFmpeg's own names; :func:`describe` does everything else — stream
kinds, rotation, display size, HDR, rounding, the container duration — so two probers can only
differ where their libraries do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction

import msgspec

from heimdex.domain.errors import InvalidMedia
from heimdex.domain.media import (
    Chapter,
    Color,
    MediaInfo,
    StreamInfo,
    StreamKind,
    display_size,
    is_hdr_transfer,
    normalise_rotation,
)

# FFmpeg keeps times in microseconds (AV_TIME_BASE); ffprobe prints six decimals.
_TIME_DECIMALS = 6
# A "frame rate" equal to one over the stream's time base and above this is the time base
# (Matroska's and FLV's 1 ms: 1000 fps), not a rate any camera records or player shows.
_MAX_TICK_RATE = 240
# The frame rate from packets (see frame_rate()): how many packet times a prober reads, how many
# it needs, the reorder delay it ignores, how close a declared rate must come to the measured
# one, and the rates a measurement is put on when close.
RATE_SAMPLE_PACKETS = 200
_MIN_RATE_PACKETS = 8
_REORDER_SLACK = 3
_RATE_AGREEMENT = Fraction(5, 100)
_STANDARD_SNAP = Fraction(3, 1000)
_GUESSED_RATE_FORMATS = {"matroska", "webm", "flv"}
_STANDARD_RATES = tuple(
    Fraction(n, d)
    for n, d in (
        (24000, 1001),
        (24, 1),
        (25, 1),
        (30000, 1001),
        (30, 1),
        (48, 1),
        (50, 1),
        (60000, 1001),
        (60, 1),
        (90, 1),
        (100, 1),
        (120000, 1001),
        (120, 1),
        (240, 1),
    )
)


class StreamFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One stream as a library reports it, in FFmpeg's names and units; ``None`` when unknown.

    ``display_rotation`` is the display matrix's angle as FFmpeg reports it: counter-clockwise
    degrees (an upright phone's portrait clip says -90).
    """

    index: int
    media_type: str  # FFmpeg's: video, audio, subtitle, data, attachment
    codec: str | None
    attached_pic: bool = False
    profile: str | None = None
    bit_rate: int | None = None
    start_time: float | None = None
    duration: float | None = None
    tags: Mapping[str, str] = msgspec.field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    sample_aspect_ratio: Fraction | None = None
    avg_frame_rate: Fraction | None = None
    base_frame_rate: Fraction | None = None
    time_base: Fraction | None = None
    frame_count: int | None = None  # what the container's index says, when it says
    packet_rate: Fraction | None = None  # measured on the first packets: see packet_rate()
    pix_fmt: str | None = None
    pix_fmt_depth: int | None = None  # the pixel format's deepest component, in bits
    bits_per_raw_sample: int | None = None
    color_range: str | None = None
    color_space: str | None = None
    color_transfer: str | None = None
    color_primaries: str | None = None
    field_order: str | None = None
    display_rotation: float | None = None
    channels: int | None = None
    channel_layout: str | None = None
    sample_rate: int | None = None


class ChapterFacts(msgspec.Struct, frozen=True):
    start: float
    end: float
    title: str | None


def describe(
    *,
    name: str,
    format_name: str,
    duration: float | None,
    bit_rate: int | None,
    size_bytes: int,
    tags: Mapping[str, str],
    streams: Sequence[StreamFacts],
    chapters: Sequence[ChapterFacts],
    packet_times: Mapping[int, Sequence[int]] | None = None,
) -> MediaInfo:
    """The media description of one file; ``InvalidMedia`` when it has no audio or video.

    ``packet_times``: the presentation times of a video stream's first packets, by stream
    index, when the declared rates were worth checking (``rate_needs_packets``); its frame rate
    then follows them (``packet_rate``)."""
    times = packet_times or {}
    streams = [
        msgspec.structs.replace(f, packet_rate=packet_rate(times[f.index], f.time_base))
        if f.index in times and f.media_type == "video"
        else f
        for f in streams
    ]
    described = [_stream(facts) for facts in streams]
    if not any(s.kind in ("video", "audio") for s in described):
        raise InvalidMedia(f"{name}: no audio or video stream")
    for stream in described:
        # FFmpeg leaves the size unknown when the stream declares none it accepts, e.g. an
        # H.264 sequence header saying 100000x100000: such a stream cannot be shown.
        if stream.kind == "video" and not (stream.width and stream.height):
            raise InvalidMedia(f"{name}: video stream {stream.index} has no valid frame size")
    duration = _seconds(duration)
    if _is_mov(format_name):
        # Debian's FFmpeg 5.1 takes an MP4's duration from the movie header (mvhd); PyAV's 8.1
        # measures the tracks, first start to last end — what is really there, and what both
        # can see. So both use the tracks, and the bit rate follows from that duration as
        # FFmpeg computes it for MP4: file size over duration.
        duration = _seconds(_tracks_duration(streams)) or duration
        if duration:
            bit_rate = int(size_bytes * 8 / duration)
    return MediaInfo(
        format_name=format_name,
        duration=duration,
        bit_rate=bit_rate or None,
        size_bytes=size_bytes,
        tags=dict(tags),
        streams=described,
        chapters=[
            Chapter(
                index=i,
                start=_seconds(c.start) or 0.0,
                end=_seconds(c.end) or 0.0,
                title=c.title or None,
            )
            for i, c in enumerate(chapters)
        ],
    )


def bit_depth(pix_fmt_depth: int | None, bits_per_raw_sample: int | None = None) -> int | None:
    """Bits per sample: the decoded pixel format's depth (``yuv420p10le`` is 10), which both
    libraries know, else the codec's raw sample depth."""
    return pix_fmt_depth or bits_per_raw_sample or None


def kind_of(media_type: str, attached_pic: bool) -> StreamKind:
    """Cover art is a picture attached to the file (an MP3's album art), never video."""
    if media_type == "video":
        return "cover_art" if attached_pic else "video"
    if media_type == "audio":
        return "audio"
    if media_type == "subtitle":
        return "subtitle"
    return "data"  # data tracks, attachments (fonts), anything FFmpeg cannot type


def known(value: str | None) -> str | None:
    """FFmpeg's spellings of "unknown" (and an empty string) as ``None``."""
    if value is None or value in ("", "unknown", "unspecified", "reserved"):
        return None
    return value


def _stream(facts: StreamFacts) -> StreamInfo:
    kind = kind_of(facts.media_type, facts.attached_pic)
    tags = _stream_tags(facts.tags)
    common = StreamInfo(
        index=facts.index,
        kind=kind,
        codec=known(facts.codec),
        profile=known(facts.profile),
        # Data tracks and attachments: PyAV cannot see their bit rate, so neither prober says.
        bit_rate=(facts.bit_rate or None) if kind != "data" else None,
        duration=_seconds(facts.duration),
        language=tags.get("language") or None,
        title=tags.get("title") or None,
        tags=tags,
    )
    if kind == "audio":
        return msgspec.structs.replace(
            common,
            channels=facts.channels or None,
            channel_layout=_channel_layout(facts.channel_layout),
            sample_rate=facts.sample_rate or None,
        )
    if kind not in ("video", "cover_art"):
        return common
    color = Color(
        range=known(facts.color_range),
        space=known(facts.color_space),
        transfer=known(facts.color_transfer),
        primaries=known(facts.color_primaries),
    )
    pix_fmt = known(facts.pix_fmt)
    picture = msgspec.structs.replace(
        common,
        width=facts.width or None,
        height=facts.height or None,
        display_aspect_ratio=_display_aspect_ratio(
            facts.width, facts.height, facts.sample_aspect_ratio
        ),
        pix_fmt=pix_fmt,
        bit_depth=bit_depth(facts.pix_fmt_depth if pix_fmt else None, facts.bits_per_raw_sample),
        color=color,
        hdr=is_hdr_transfer(color.transfer),
        field_order=known(facts.field_order),
    )
    if kind == "cover_art":
        # A still picture: no frame rate (FFmpeg reports its timebase) and no display turn.
        return picture
    rotation = _rotation(facts.display_rotation, tags.get("rotate"))
    display: tuple[int | None, int | None] = (None, None)
    if rotation is not None and facts.width and facts.height:
        display = display_size(facts.width, facts.height, rotation)
    rate = frame_rate(facts)
    return msgspec.structs.replace(
        picture,
        rotation=rotation,
        display_width=display[0],
        display_height=display[1],
        frame_rate=float(rate) if rate else None,
    )


def frame_rate(facts: StreamFacts) -> Fraction | None:
    """The rate a player shows, never the stream's time base.

    FFmpeg's average rate, else its base rate (``r_frame_rate``) — unless one equals the time
    base's tick (Matroska's and FLV's 1 ms: "1000 fps") — and either only when the packets
    agree (within 5 %): ``r_frame_rate`` is a guess, 60 for the 30 fps Matroska samples whose
    H.264 counts fields. Otherwise the packets' own rate, on a standard rate when that is
    within 0.3 %; without packets, frames over duration.
    """
    candidates = [
        rate
        for rate in (facts.avg_frame_rate, facts.base_frame_rate)
        if rate and not _is_tick_rate(rate, facts.time_base)
    ]
    measured = facts.packet_rate
    if measured:
        agreeing = [rate for rate in candidates if abs(rate / measured - 1) <= _RATE_AGREEMENT]
        return agreeing[0] if agreeing else _standard_rate(measured)
    if candidates:
        return candidates[0]
    if facts.frame_count and facts.duration and facts.duration > 0:
        return Fraction(facts.frame_count) / Fraction(facts.duration)
    return None


def rate_needs_packets(format_name: str, facts: StreamFacts) -> bool:
    """Whether a video stream's declared rates are guesses worth checking against its packets
    (a second look at the file, so only then): in Matroska, WebM and FLV, whose millisecond
    timestamps FFmpeg guesses a rate from, and wherever the two declared rates are a tick or
    disagree. MP4's rates come from its sample table and stand as declared."""
    if facts.media_type != "video" or facts.attached_pic:
        return False
    if set(format_name.split(",")) & _GUESSED_RATE_FORMATS:
        return True
    declared = [rate for rate in (facts.avg_frame_rate, facts.base_frame_rate) if rate]
    if any(_is_tick_rate(rate, facts.time_base) for rate in declared):
        return True
    return len(declared) == 2 and abs(declared[0] / declared[1] - 1) > _RATE_AGREEMENT


def packet_rate(times: Sequence[int], time_base: Fraction | None) -> Fraction | None:
    """Frames per second of a stream from the presentation times (in ``time_base`` units) of
    its first packets, in decode order; ``None`` from too few.

    The last few times are dropped: with B-frames, frames shown before them may come later.
    """
    if time_base is None or time_base <= 0:
        return None
    ordered = sorted(set(times))[:-_REORDER_SLACK]
    if len(ordered) < _MIN_RATE_PACKETS:
        return None
    span = (ordered[-1] - ordered[0]) * time_base
    return Fraction(len(ordered) - 1) / span if span > 0 else None


def _standard_rate(measured: Fraction) -> Fraction:
    nearest = min(_STANDARD_RATES, key=lambda rate: abs(rate / measured - 1))
    if abs(nearest / measured - 1) <= _STANDARD_SNAP:
        return nearest
    return measured.limit_denominator(1001)


def _is_tick_rate(rate: Fraction, time_base: Fraction | None) -> bool:
    return time_base is not None and rate * time_base == 1 and rate > _MAX_TICK_RATE


def _rotation(display_rotation: float | None, rotate_tag: str | None) -> int | None:
    """Clockwise quarter turns a player applies: the display matrix, else the legacy tag.

    The matrix angle is counter-clockwise (FFmpeg's convention); the old ``rotate`` tag was
    already clockwise.
    """
    if display_rotation and math.isfinite(display_rotation):
        return normalise_rotation(-display_rotation)
    if rotate_tag:
        try:
            return normalise_rotation(float(rotate_tag))
        except ValueError:
            pass
    return None if display_rotation is None else 0


def _display_aspect_ratio(
    width: int | None, height: int | None, sample_aspect_ratio: Fraction | None
) -> str | None:
    if not width or not height or not sample_aspect_ratio:
        return None
    dar = Fraction(width * sample_aspect_ratio.numerator, height * sample_aspect_ratio.denominator)
    return f"{dar.numerator}:{dar.denominator}"


# FFmpeg writes the empty QuickTime vendor code as a tag in 5.x and leaves it out in later
# versions; it says nothing either way.
_EMPTY_TAGS = {"vendor_id": "[0][0][0][0]"}


def _stream_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if _EMPTY_TAGS.get(k) != v}


_UNORDERED_LAYOUT = re.compile(r"\d+ channels?")


def _channel_layout(layout: str | None) -> str | None:
    """``stereo``, ``5.1(side)``…; FFmpeg's "2 channels" just means no layout is known."""
    layout = known(layout)
    if layout is None or _UNORDERED_LAYOUT.fullmatch(layout):
        return None
    return layout


def _is_mov(format_name: str) -> bool:
    return "mov" in format_name.split(",")


def _tracks_duration(streams: Sequence[StreamFacts]) -> float | None:
    """From the earliest start to the latest end of the audio and video tracks."""
    spans = [
        (s.start_time, s.duration)
        for s in streams
        if s.media_type in ("video", "audio") and not s.attached_pic
        if s.start_time is not None and s.duration is not None
    ]
    if not spans:
        return None
    start = min(begin for begin, _ in spans)
    end = max(begin + length for begin, length in spans)
    return max(end - start, max(length for _, length in spans))


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, _TIME_DECIMALS)
