"""The ``Thumbnailer`` port on PyAV, decoding in a pool of worker processes.

The calling process only plans (``thumbnail_plan``) and waits; the file is opened, decoded,
filtered and encoded by :func:`render` in a :class:`DecodePool` worker, so a decoder crash on
a hostile file costs one worker, never the API or the job worker.

Per file, in the worker: the demuxer the prober found is forced (no content sniffing) through
the probers' allow-lists. A :class:`FramePicker` finds each slot's frame (see
``thumbnail_plan`` for the rule, ``frame_picker`` for the decoding); frames go through one
filter graph (scale, HDR tone mapping, rotation) and the luma test, and only the frames kept
are encoded, by an in-process mjpeg or libwebp encoder. A dull frame is replaced by a better
one of its slot when one is found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.filter

from heimdex.adapters.media.decode_pool import DecodePool
from heimdex.adapters.media.fingerprint import fingerprint_picture
from heimdex.adapters.media.frame_picker import FramePicker, Picked
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.pooled_renderer import PooledRenderer
from heimdex.adapters.media.pyav import OPEN_OPTIONS
from heimdex.adapters.media.thumbnail_plan import (
    JPEG_QSCALE,
    WEBP_QUALITY,
    Slot,
    ThumbnailPlan,
    filter_steps,
    luma_stats,
    plan_thumbnails,
    replacement_slots,
)
from heimdex.domain.errors import (
    InvalidMedia,
    ThumbnailerUnavailable,
    ThumbnailTimeout,
)
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Thumbnail, ThumbnailSpec

# Reading a stalled file: FFmpeg's own I/O timeout, well inside the call's.
_IO_TIMEOUT = 20.0
_ENCODERS = {"jpg": "mjpeg", "webp": "libwebp"}
_ENCODER_TIME_BASE = Fraction(1, 1)
_FILTERS = ("scale", "format", "lutrgb", "colorchannelmixer", "setparams", "transpose")


class PyAVThumbnailer(PooledRenderer):
    """Thumbnails with PyAV in ``workers`` reused processes, ``timeout`` seconds per file.

    Pass ``pool`` to share one :class:`DecodePool`; otherwise the thumbnailer owns one and
    :meth:`close` stops it.
    """

    name = "pyav"

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 60.0,
        *,
        pool: DecodePool | None = None,
        limits: DecodeLimits | None = None,
    ) -> None:
        """``limits`` for the pool this thumbnailer starts; a ``pool`` passed in has its own."""
        super().__init__(__name__, workers, timeout, pool=pool, limits=limits)

    async def thumbnails(
        self, path: Path, media: MediaInfo, spec: ThumbnailSpec
    ) -> Sequence[Thumbnail]:
        plan = plan_thumbnails(path.name, media, spec)
        if plan is None:
            return []
        return await self._render(path, "thumbnails", render, plan)

    async def check(self) -> None:
        missing = await self._pool.run(capabilities_missing, call_seconds=self._timeout)
        if missing:
            raise ThumbnailerUnavailable("PyAV's FFmpeg lacks " + ", ".join(missing))


# -- in the worker process ----------------------------------------------------------------------
def capabilities_missing() -> list[str]:
    """The encoders, filters and demuxers the thumbnails need that this FFmpeg lacks."""
    missing = [
        f"the {name} encoder" for name in _ENCODERS.values() if name not in av.codecs_available
    ]
    missing += [
        f"the {name} filter" for name in _FILTERS if name not in av.filter.filters_available
    ]
    if not OPEN_OPTIONS["format_whitelist"]:
        missing.append("every allowed demuxer")
    return missing


def render(path: str, name: str, plan: ThumbnailPlan, max_pixels: int = 0) -> list[Thumbnail]:
    """The thumbnails of ``plan`` from the file at ``path`` (``name`` is for messages); no
    frame over ``max_pixels`` (0: FFmpeg's own bound) is decoded."""
    limits = DecodeLimits(max_pixels=max_pixels)
    try:
        with av.open(
            "file:" + path,
            mode="r",
            format=plan.demuxer,
            options=limits.decoder_options(),  # codec options: every decoder it opens
            container_options=OPEN_OPTIONS,
            timeout=_IO_TIMEOUT,
            metadata_errors="replace",
        ) as container:
            return _Renderer(container, name, plan, limits).thumbnails()
    except MemoryError:  # FFmpeg's ENOMEM too: the decode pool names the limit
        raise
    except av.error.ExitError:  # FFmpeg's I/O timeout: a read that stalled
        raise ThumbnailTimeout(f"{name}: reading the file timed out") from None
    except av.error.FFmpegError as exc:
        raise InvalidMedia(f"{name}: {exc.strerror or exc}") from None
    except (ValueError, EOFError, UnicodeError) as exc:
        raise InvalidMedia(f"{name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Look:
    """A picked frame, filtered to the thumbnail's picture, and whether it is dull."""

    pts: int
    picture: Any
    dull: bool


class _Renderer:
    def __init__(
        self, container: Any, name: str, plan: ThumbnailPlan, limits: DecodeLimits
    ) -> None:
        streams = container.streams
        if plan.stream_index >= len(streams) or streams[plan.stream_index].type != "video":
            raise InvalidMedia(f"{name}: the video stream is not where the prober saw it")
        stream = streams[plan.stream_index]
        self._picker = FramePicker(container, stream, name)
        # The frame size the file declares now, whatever the prober saw.
        limits.check_frame(name, stream.codec_context.width, stream.codec_context.height)
        self._name = name
        self._plan = plan
        self._images = Images(name, plan, self._picker.time_base)

    def thumbnails(self) -> list[Thumbnail]:
        picker, plan = self._picker, self._plan
        located = picker.locate(plan.slots)
        thumbnails: list[Thumbnail] = []
        for slot, keyframe in zip(plan.slots, located, strict=True):
            picked = picker.pick(slot, keyframe)
            if picked is None:
                continue  # no frame in this slot: fewer frames than slots
            look = self._images.look(picked)
            if look.dull:
                look = self._replacement(slot, look) or look
            thumbnails.append(
                Thumbnail(
                    index=len(thumbnails),
                    time=picker.seconds(look.pts),
                    width=plan.width,
                    height=plan.height,
                    data=self._images.encode(look.picture),
                    fingerprint=None if look.dull else fingerprint_picture(look.picture),
                )
            )
        if not thumbnails:
            raise InvalidMedia(f"{self._name}: no frame of the video stream could be decoded")
        return thumbnails

    def _replacement(self, slot: Slot, dull: Look) -> Look | None:
        """A frame of the same slot that is not dull, among ``DULL_TRIES`` others."""
        picker = self._picker
        tick = float(picker.time_base)
        for where in replacement_slots(slot, picker.seconds(dull.pts), tick):
            picked = picker.pick(where)
            if picked is None or picked.pts == dull.pts:
                continue
            look = self._images.look(picked)
            if not look.dull:
                return look
        return None


class Images:
    """Frames to encoded thumbnails: one filter graph (rebuilt if the frame size or format
    changes mid-stream) and one encoder per file."""

    def __init__(self, name: str, plan: ThumbnailPlan, time_base: Fraction) -> None:
        self._name = name
        self._plan = plan
        self._time_base = time_base
        self._steps = filter_steps(plan, "yuv420p")
        self._graph: Any = None
        self._graph_input: tuple[int, int, str] | None = None
        self._encoder = _encoder(plan)
        self._encoded = 0
        self._limited = plan.format != "jpg"

    def look(self, picked: Picked) -> Look:
        picture = self._filtered(picked.frame)
        plane = picture.planes[0]
        stats = luma_stats(plane, picture.width, picture.height, plane.line_size, self._limited)
        return Look(pts=picked.pts, picture=picture, dull=stats.dull)

    def encode(self, picture: Any) -> bytes:
        # Encoders refuse timestamps that do not increase (PyAV rescales to the encoder's base).
        picture.pts, picture.time_base = self._encoded, _ENCODER_TIME_BASE
        self._encoded += 1
        data = b"".join(bytes(packet) for packet in self._encoder.encode(picture))
        if not data:
            raise InvalidMedia(f"{self._name}: the thumbnail encoder produced nothing")
        return data

    def _filtered(self, frame: Any) -> Any:
        shape = (frame.width, frame.height, frame.format.name)
        if shape != self._graph_input:
            self._graph = self._build(frame)
            self._graph_input = shape
        self._graph.push(frame)
        return self._graph.pull()

    def _build(self, frame: Any) -> Any:
        graph = av.filter.Graph()
        last = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=self._time_base
        )
        for name, args in self._steps:
            node = graph.add(name, args)
            last.link_to(node)
            last = node
        sink = graph.add("buffersink")
        last.link_to(sink)
        graph.configure()
        return graph


def _encoder(plan: ThumbnailPlan) -> Any:
    return image_encoder(plan.format, plan.width, plan.height)


def image_encoder(image_format: str, width: int, height: int) -> Any:
    """An mjpeg (``jpg``) or libwebp encoder of ``width`` x ``height`` yuv420p pictures, at
    the quality every thumbnail uses."""
    encoder: Any = av.CodecContext.create(_ENCODERS[image_format], "w")
    encoder.width = width
    encoder.height = height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = _ENCODER_TIME_BASE
    if image_format == "jpg":
        encoder.color_range = 2  # full range, as JPEG (JFIF) defines it
        encoder.qmin = encoder.qmax = JPEG_QSCALE  # a fixed quality, not a bit rate
    else:
        encoder.color_range = 1
        encoder.options = {"quality": str(WEBP_QUALITY)}
    return encoder
