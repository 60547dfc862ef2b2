"""What a thumbnail run does, decided once in plain Python and shared by both thumbnailers.

The PyAV and ffmpeg adapters take every decision here — which stream, which slots, the output
size, the filter chain (scale, tone mapping, rotation), when a frame is too dull to keep and
where to look for a better one — so they can only differ where their FFmpeg builds do (PyAV's
bundled 8.1, Debian's 5.1). No I/O and no media library: the luma test works on the bytes of a
decoded plane.

Slots. N thumbnails split the duration into N equal :class:`Slot` s; thumbnail i is a frame
whose presentation time lies in slot i, so N thumbnails are N different frames. Finding one
(the rule both adapters follow): the keyframe at or before the slot's target (its middle) when
that keyframe lies inside the slot — one frame decoded; otherwise decode forward from it to
the first frame at or after the target. When that frame is past the slot (a gap in a
variable-rate file, the stream's end), an earlier frame of the slot: the last one before the
target (PyAV, which has it decoded) or the first from the slot's start (ffmpeg, which runs
again). A slot no frame lies in (a video with fewer frames than slots, or one that ends well
before its file) gives no thumbnail: the result is shorter, and the sidecar says why. A dull
frame is replaced by a better one from the same slot — tried at :func:`replacement_slots`,
at most ``DULL_TRIES`` more frames — or kept when none is better. A storyboard tile or a
poster is a frame of a slot too (``frame_picker`` finds it with PyAV).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from operator import mul
from typing import Literal

from heimdex.adapters.media.allowlist import MEDIA_DEMUXERS
from heimdex.domain.errors import InvalidInput, InvalidMedia
from heimdex.domain.media import MediaInfo, StreamInfo, display_size, is_hdr_transfer
from heimdex.domain.model import ThumbnailSpec

ImageFormat = Literal["jpg", "webp"]
FORMATS: tuple[ImageFormat, ...] = ("jpg", "webp")
MAX_COUNT = 100
MIN_WIDTH = 16
MAX_WIDTH = 3840
# A frame ten thousand times taller than wide is an attack, not a video: cap the height.
MAX_ASPECT = 4

# A dull frame: how many other frames of its slot are tried for a better one (see
# replacement_slots: the middle of the part after it, then of the part before it).
DULL_TRIES = 2
# Times compare with this slack: float seconds from two libraries' timestamps.
EPSILON = 1e-3
# Float noise in a slot's boundaries, far below any time base's tick.
_TINY = 1e-9

# Encoder settings both adapters use: mjpeg's qscale (2 best … 31 worst; 3 is ≈ libjpeg's
# quality 90) and libwebp's quality (0 … 100).
JPEG_QSCALE = 3
WEBP_QUALITY = 80

# The dull test, on the thumbnail's full-range luma (0…255). Near-black: mean under ~9 % (a
# black frame with encoder noise or a fade's last frames). Flat: almost no variation (a
# one-colour card, a white flash); a clear sky or a night scene varies far more than this.
BLACK_MEAN = 24.0
FLAT_STDDEV = 6.0
# The luma test samples every 4th pixel of every 4th row: 3 600 samples at 320x180, plenty for
# a mean and a deviation, and fast in plain Python.
LUMA_STEP = 4


@dataclass(frozen=True, slots=True)
class Slot:
    """A stretch of the video a picture must come from: a frame shown from a time ``t`` with
    ``start <= t < end`` (seconds from the container's start), the one at ``target`` if it can.
    ``end`` is infinite when the duration is unknown."""

    start: float
    target: float
    end: float

    def holds(self, seconds: float, tick: float = 0.0) -> bool:
        """Whether a frame at ``seconds`` lies in the slot; the boundaries are rounded to the
        stream's ``tick`` (its time base), as a frame's time is."""
        return self.start - tick / 2 - _TINY <= seconds < self.end - tick / 2 - _TINY


def slots(duration: float | None, count: int) -> list[Slot]:
    """``count`` equal slots over ``duration``, each targeting its middle; one slot over the
    whole video, from the start, when the duration is unknown."""
    if count <= 0:
        return []
    if not duration or duration <= 0:
        return [Slot(start=0.0, target=0.0, end=math.inf)]
    width = duration / count
    return [
        Slot(
            start=round(i * width, 6),
            target=round((i + 0.5) * width, 6),
            # The last slot ends at the duration: no frame starts there or later.
            end=round((i + 1) * width, 6) if i < count - 1 else math.inf,
        )
        for i in range(count)
    ]


def replacement_slots(slot: Slot, dull: float, tick: float) -> list[Slot]:
    """Where to look for a better frame than the dull one at ``dull`` in ``slot``: the part of
    the slot after it, then the part before it, each targeting its middle — other frames of the
    same slot, at most ``DULL_TRIES``."""
    end = slot.end if math.isfinite(slot.end) else max(dull + 2 * (dull - slot.start), dull + 1)
    after = Slot(start=dull + tick, target=(dull + tick + end) / 2, end=slot.end)
    before = Slot(start=slot.start, target=(slot.start + dull) / 2, end=dull)
    tries = [after] + ([before] if dull - slot.start > tick / 2 else [])
    return tries[:DULL_TRIES]


@dataclass(frozen=True, slots=True)
class ThumbnailPlan:
    """Everything a thumbnailer needs besides the file; picklable, so it can cross processes.

    ``slots`` are in seconds from the container's start (as ffmpeg's ``-ss`` counts them).
    ``scaled_width``/``scaled_height`` is the size before the rotation; ``width``/``height``
    after it. ``transfer`` names the HDR transfer to tone-map from, or is ``None``.
    """

    stream_index: int
    demuxer: str
    slots: tuple[Slot, ...]
    width: int
    height: int
    scaled_width: int
    scaled_height: int
    rotation: int
    transfer: str | None
    format: ImageFormat

    @property
    def times(self) -> tuple[float, ...]:
        """Each slot's target."""
        return tuple(slot.target for slot in self.slots)


def plan_thumbnails(name: str, media: MediaInfo, spec: ThumbnailSpec) -> ThumbnailPlan | None:
    """The plan for ``spec`` thumbnails of the file ``name``; ``None`` when it has no video.

    ``InvalidInput`` for a spec no thumbnailer can honour, ``InvalidMedia`` for a description
    no thumbnailer may open (a container outside the allow-list, a video without a size).
    """
    image_format = check_spec(spec)
    stream = video_stream(media)
    if stream is None or spec.count == 0:
        return None
    demuxer = allowed_demuxer(name, media.format_name)
    if not stream.width or not stream.height:
        raise InvalidMedia(f"{name}: the video stream has no known frame size")
    rotation = stream.rotation or 0
    width, height = output_size(stream, spec.width)
    scaled_width, scaled_height = display_size(width, height, rotation)  # undo the turn
    duration = stream.duration or media.duration
    transfer = stream.color.transfer if stream.color is not None else None
    return ThumbnailPlan(
        stream_index=stream.index,
        demuxer=demuxer,
        slots=tuple(slots(duration, spec.count)),
        width=width,
        height=height,
        scaled_width=scaled_width,
        scaled_height=scaled_height,
        rotation=rotation,
        transfer=transfer if is_hdr_transfer(transfer) else None,
        format=image_format,
    )


def check_spec(spec: ThumbnailSpec) -> ImageFormat:
    """The spec's image format, once its count and width are known to be sane."""
    if spec.format not in FORMATS:
        raise InvalidInput(f"thumbnail format must be one of {', '.join(FORMATS)}")
    if not 0 <= spec.count <= MAX_COUNT:
        raise InvalidInput(f"thumbnail count must be between 0 and {MAX_COUNT}")
    if not MIN_WIDTH <= spec.width <= MAX_WIDTH:
        raise InvalidInput(f"thumbnail width must be between {MIN_WIDTH} and {MAX_WIDTH}")
    return "jpg" if spec.format == "jpg" else "webp"


def video_stream(media: MediaInfo) -> StreamInfo | None:
    """The first real video stream: never cover art (an MP3's album picture is no video)."""
    return next((s for s in media.streams if s.kind == "video"), None)


def allowed_demuxer(name: str, format_name: str) -> str:
    """The demuxer both adapters force when they open the file: the one the prober found.

    Forcing it means no content sniffing at all on the second open, and it must be one of the
    allow-listed demuxers (a playlist or file list never is).
    """
    demuxer = format_name.split(",")[0]
    if demuxer not in MEDIA_DEMUXERS:
        raise InvalidMedia(f"{name}: the {demuxer or 'unknown'} format is not allowed")
    return demuxer


def target_times(duration: float | None, count: int) -> list[float]:
    """The targets of :func:`slots`: the middle of each of ``count`` equal slots."""
    return [slot.target for slot in slots(duration, count)]


def output_size(stream: StreamInfo, width: int) -> tuple[int, int]:
    """The thumbnail's size after the display rotation: ``width`` wide, the height keeping the
    display aspect ratio (sample aspect ratio included) and even (a 1080p portrait clip at 320
    wide is 320x568)."""
    if not stream.width or not stream.height:
        raise ValueError("a video stream without a frame size has no thumbnail size")
    aspect = _aspect(stream.display_aspect_ratio) or Fraction(stream.width, stream.height)
    if (stream.rotation or 0) in (90, 270):
        aspect = 1 / aspect
    height = int(width / aspect / 2 + Fraction(1, 2)) * 2
    return width, max(2, min(height, width * MAX_ASPECT))


def _aspect(ratio: str | None) -> Fraction | None:
    if not ratio:
        return None
    numerator, _, denominator = ratio.partition(":")
    try:
        value = Fraction(int(numerator), int(denominator))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


# -- the filter chain ---------------------------------------------------------------------------
FilterStep = tuple[str, str | None]

# HDR to SDR without zscale (PyAV's FFmpeg has none; Debian's swscale has no tone mapping): on
# the already-small picture, in 16-bit RGB, (1) per channel, signal → display light in units
# of the BT.2408 HDR reference white (203 cd/m², which becomes SDR 100 %), with a soft knee
# that rolls highlights off towards 1.0 instead of clipping them; (2) BT.2020 → BT.709
# primaries, a 3x3 matrix in linear light; (3) light → BT.1886 (gamma 2.4) signal. Per-channel
# mapping desaturates the brightest highlights a little, which a thumbnail can afford.
REFERENCE_WHITE = 203.0
KNEE = 0.75
# SMPTE ST 2084 (PQ) constants.
PQ_M1 = 2610 / 16384
PQ_M2 = 2523 / 4096 * 128
PQ_C1 = 3424 / 4096
PQ_C2 = 2413 / 4096 * 32
PQ_C3 = 2392 / 4096 * 32
# ARIB STD-B67 (HLG) constants, and the BT.2100 OOTF of a 1000 cd/m² display (gamma 1.2),
# applied per channel.
HLG_A = 0.17883277
HLG_B = 0.28466892
HLG_C = 0.55991073
HLG_PEAK = 1000.0
HLG_GAMMA = 1.2
# Linear BT.2020 RGB → linear BT.709 RGB (ITU-R BT.2087).
BT2020_TO_BT709 = (
    (1.6605, -0.5876, -0.0728),
    (-0.1246, 1.1329, -0.0083),
    (-0.0182, -0.1006, 1.1187),
)


def _n(value: float) -> str:
    return f"{value:.10g}"


def _knee(variable: str) -> str:
    """``x`` below the knee, then ``knee + (1 - knee)·(1 - e^(-(x - knee)/(1 - knee)))``:
    continuous with slope 1 at the knee, approaching 1.0 for any brightness."""
    room = 1 - KNEE
    return (
        f"if(lte({variable},{_n(KNEE)}),{variable},"
        f"{_n(KNEE)}+{_n(room)}*(1-exp(({_n(KNEE)}-{variable})/{_n(room)})))"
    )


# lutrgb expressions over ``val`` (0…maxval): st()/ld() keep each step evaluated once.
_PQ_TO_LIGHT = (
    f"st(0,pow(val/maxval,{_n(1 / PQ_M2)}));"
    f"st(1,{_n(10000 / REFERENCE_WHITE)}"
    f"*pow(max(ld(0)-{_n(PQ_C1)},0)/({_n(PQ_C2)}-{_n(PQ_C3)}*ld(0)),{_n(1 / PQ_M1)}));"
    f"maxval*{_knee('ld(1)')}"
)
_HLG_TO_LIGHT = (
    "st(0,val/maxval);"
    f"st(1,if(lte(ld(0),0.5),ld(0)*ld(0)/3,(exp((ld(0)-{_n(HLG_C)})/{_n(HLG_A)})+{_n(HLG_B)})/12));"
    f"st(1,{_n(HLG_PEAK / REFERENCE_WHITE)}*pow(ld(1),{_n(HLG_GAMMA)}));"
    f"maxval*{_knee('ld(1)')}"
)
_LIGHT_TO_BT1886 = f"maxval*pow(val/maxval,{_n(1 / 2.4)})"
TONE_CURVES = {"smpte2084": _PQ_TO_LIGHT, "arib-std-b67": _HLG_TO_LIGHT}

_ROTATIONS: dict[int, list[FilterStep]] = {
    0: [],
    90: [("transpose", "clock")],
    180: [("hflip", None), ("vflip", None)],
    270: [("transpose", "cclock")],
}


def filter_steps(plan: ThumbnailPlan, pixel_format: str) -> list[FilterStep]:
    """The filter chain from a decoded frame to the thumbnail, as ``(filter, arguments)``.

    Scale first (everything after works on the small picture), tone-map HDR, convert to
    ``pixel_format`` with the BT.601 matrix every JPEG and WebP decoder assumes (full range for
    JPEG, limited for WebP), then turn the picture upright — frames are stored unrotated and
    neither adapter lets its library rotate, so both turn them the same way.
    """
    size = f"w={plan.scaled_width}:h={plan.scaled_height}:flags=bicubic"
    matrix = f"out_color_matrix=bt601:out_range={'pc' if plan.format == 'jpg' else 'tv'}"
    steps: list[FilterStep] = []
    curve = TONE_CURVES.get(plan.transfer or "")
    if curve is not None:
        mixer = ":".join(
            f"{out}{into}={_n(BT2020_TO_BT709[row][col])}"
            for row, out in enumerate("rgb")
            for col, into in enumerate("rgb")
        )
        steps += [
            ("scale", size),
            ("format", "rgb48le"),
            ("lutrgb", _per_channel(curve)),
            ("colorchannelmixer", mixer),
            ("lutrgb", _per_channel(_LIGHT_TO_BT1886)),
            # Now BT.709 SDR: say so, or a newer swscale would map the colours a second time.
            ("setparams", "color_primaries=bt709:color_trc=bt709"),
            ("scale", matrix),
        ]
    else:
        steps.append(("scale", f"{size}:{matrix}"))
    steps.append(("format", pixel_format))
    steps += _ROTATIONS[plan.rotation]
    steps.append(("setsar", "1"))
    return steps


def _per_channel(expression: str) -> str:
    # Quoted: the expressions hold commas, which separate filters in a filtergraph string.
    return ":".join(f"{channel}='{expression}'" for channel in "rgb")


def filtergraph(steps: Sequence[FilterStep]) -> str:
    """The chain as one ``-vf`` string."""
    return ",".join(name if args is None else f"{name}={args}" for name, args in steps)


# -- the dull-frame test ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LumaStats:
    mean: float
    stddev: float

    @property
    def dull(self) -> bool:
        """Near-black or flat: not worth showing when another frame of its slot is not."""
        return self.mean < BLACK_MEAN or self.stddev < FLAT_STDDEV


def luma_stats(
    plane: bytes | bytearray | memoryview, width: int, height: int, stride: int, limited: bool
) -> LumaStats:
    """Mean and standard deviation of a luma plane, on a sparse grid of samples, in full-range
    units (a ``limited`` plane's 16…235 stretched to 0…255)."""
    view = memoryview(plane).cast("B")
    samples = bytearray()
    for row in range(0, height, LUMA_STEP):
        start = row * stride
        samples += view[start : start + width : LUMA_STEP].tobytes()
    if not samples:
        return LumaStats(mean=0.0, stddev=0.0)
    count = len(samples)
    mean = sum(samples) / count
    variance = max(sum(map(mul, samples, samples)) / count - mean * mean, 0.0)
    return full_range(mean, variance**0.5) if limited else LumaStats(mean, variance**0.5)


def full_range(mean: float, stddev: float) -> LumaStats:
    """Limited-range (16…235) luma statistics in full-range units."""
    scale = 255 / 219
    return LumaStats(mean=(mean - 16) * scale, stddev=stddev * scale)
