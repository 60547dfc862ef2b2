"""The media description: one shape for the probe endpoint, CLI, legacy /metadata and sidecar.

Field names are a public contract (DESIGN.md §6). Unknown values are ``None``, never guessed.
Times are seconds, sizes are bytes.
"""

from __future__ import annotations

from typing import Literal

import msgspec

StreamKind = Literal["video", "audio", "subtitle", "cover_art", "data"]


class Color(msgspec.Struct, frozen=True, kw_only=True):
    """Colour properties of a video stream, in FFmpeg's names (``tv``, ``bt709``, ``smpte2084``)."""

    range: str | None = None
    space: str | None = None
    transfer: str | None = None
    primaries: str | None = None


class StreamInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    """One stream of a container. Fields that do not apply to the stream's kind are ``None``.

    ``width``/``height`` are the stored frame size; ``rotation`` is the clockwise turn (0, 90, 180,
    270) a player applies to show it upright, and ``display_width``/``display_height`` the size
    after that turn.
    """

    index: int
    kind: StreamKind
    codec: str | None
    profile: str | None = None
    bit_rate: int | None = None
    duration: float | None = None
    language: str | None = None
    title: str | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    # video (and cover art)
    width: int | None = None
    height: int | None = None
    rotation: int | None = None
    display_width: int | None = None
    display_height: int | None = None
    display_aspect_ratio: str | None = None
    frame_rate: float | None = None
    pix_fmt: str | None = None
    bit_depth: int | None = None
    color: Color | None = None
    hdr: bool | None = None
    field_order: str | None = None
    # audio
    channels: int | None = None
    channel_layout: str | None = None
    sample_rate: int | None = None


class Chapter(msgspec.Struct, frozen=True, kw_only=True):
    """A chapter mark: start and end in seconds, and its title when the file names one."""

    index: int
    start: float
    end: float
    title: str | None = None


class MediaInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a prober learned of one file."""

    format_name: str
    duration: float | None
    bit_rate: int | None
    size_bytes: int
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    streams: list[StreamInfo] = msgspec.field(default_factory=list)
    chapters: list[Chapter] = msgspec.field(default_factory=list)

    @property
    def video_streams(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.kind == "video"]

    @property
    def audio_streams(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.kind == "audio"]


HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})


def is_hdr_transfer(transfer: str | None) -> bool:
    """PQ and HLG are the HDR transfer characteristics (DESIGN.md §6)."""
    return transfer in HDR_TRANSFERS


def normalise_rotation(degrees: float) -> int:
    """Snap any angle to the clockwise quarter turn a player applies (0, 90, 180, 270)."""
    return round(degrees / 90.0) % 4 * 90


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """The frame size after the display rotation: a quarter turn swaps width and height."""
    return (height, width) if rotation in (90, 270) else (width, height)
