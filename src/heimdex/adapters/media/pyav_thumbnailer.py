"""The ``Thumbnailer`` port on PyAV, decoding in a pool of worker processes.

The calling process only plans (``thumbnail_plan``) and waits; the file is opened, decoded,
filtered and encoded by :func:`render` in a :class:`DecodePool` worker, so a decoder crash on
a hostile file costs one worker, never the API or the job worker.

Per file, in the worker: the demuxer the prober found is forced (no content sniffing) through
the probers' allow-lists. First every target's keyframe is located — a seek and one packet
each, nothing decoded. A keyframe close enough to its target (see ``thumbnail_plan``) is
decoded alone: the packet, then a drain (``decode(None)``) so the B-frame reorder delay does
not hold the frame back, then ``flush_buffers()``. Otherwise the decoder runs forward from the
keyframe to the target, and on to the next target when it lies in the same GOP — a long-GOP
file is decoded once, front to back, never again from its keyframe for each target. Frames go
through one filter graph (scale, HDR tone mapping, rotation) and an in-process mjpeg or libwebp
encoder; a dull frame is replaced by the next keyframe that is not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.filter

from heimdex.adapters.media.decode_pool import DecodePool
from heimdex.adapters.media.description import regular_file_size
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.pooled_decoder import PooledDecoder
from heimdex.adapters.media.pyav import OPEN_OPTIONS
from heimdex.adapters.media.thumbnail_plan import (
    EPSILON,
    JPEG_QSCALE,
    SNAP_SECONDS,
    WEBP_QUALITY,
    ThumbnailPlan,
    filter_steps,
    luma_stats,
    plan_thumbnails,
)
from heimdex.adapters.offload import run_blocking
from heimdex.domain.errors import (
    InvalidMedia,
    ThumbnailerUnavailable,
    ThumbnailTimeout,
)
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Thumbnail, ThumbnailSpec

# Reading a stalled file: FFmpeg's own I/O timeout, well inside the call's.
_IO_TIMEOUT = 20.0
# Looking for a keyframe after a seek, and for replacements of a dull frame: packets read at
# most. Decoding forward: frames decoded at most per thumbnail (2 minutes at 60 fps), in case
# timestamps never reach the target.
_PACKET_BUDGET = 20_000
_FRAME_BUDGET = 7_200
# Seconds to step back when a seek finds no keyframe (``None``: from the start).
_SEEK_BACK = (0.0, 10.0, 60.0, None)
# Seconds before a target from which forward decoding stops skipping non-reference frames:
# more than any reorder delay, so the frame at the target is never one of those skipped.
_SKIP_LEAD = 1.0
_ENCODERS = {"jpg": "mjpeg", "webp": "libwebp"}
_ENCODER_TIME_BASE = Fraction(1, 1)
_FILTERS = ("scale", "format", "lutrgb", "colorchannelmixer", "setparams", "transpose")


class PyAVThumbnailer(PooledDecoder):
    """Thumbnails with PyAV in ``workers`` reused processes, ``timeout`` seconds per file.

    ``snap``: a keyframe at most this many seconds before a target (or half the spacing of the
    targets, when more) is used as it is; further away the decoder runs forward to the target.
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
        snap: float = SNAP_SECONDS,
        limits: DecodeLimits | None = None,
    ) -> None:
        """``limits`` for the pool this thumbnailer starts; a ``pool`` passed in has its own."""
        super().__init__(
            pool,
            workers=workers,
            preload=[__name__],
            limits=limits,
            unavailable=ThumbnailerUnavailable,
        )
        self._timeout = timeout
        self._snap = snap

    async def thumbnails(
        self, path: Path, media: MediaInfo, spec: ThumbnailSpec
    ) -> Sequence[Thumbnail]:
        plan = plan_thumbnails(path.name, media, spec, snap=self._snap)
        if plan is None:
            return []
        location = await run_blocking(local_file, path, self._pool.limits)
        try:
            # The time runs from when a worker takes the file, not while it waits for one.
            return await self._run_on(
                path.name,
                render,
                location,
                path.name,
                plan,
                self._pool.limits.max_pixels,
                call_seconds=self._timeout,
            )
        except TimeoutError:
            raise ThumbnailTimeout(
                f"{path.name}: making thumbnails took longer than {self._timeout:g} s"
            ) from None

    async def check(self) -> None:
        missing = await self._pool.run(capabilities_missing, call_seconds=self._timeout)
        if missing:
            raise ThumbnailerUnavailable("PyAV's FFmpeg lacks " + ", ".join(missing))


def local_file(path: Path, limits: DecodeLimits | None = None) -> str:
    """The absolute path of ``path``, a regular file: a FIFO, a device or a directory never
    reaches FFmpeg (``InvalidMedia``), nor a file with more metadata than ``limits`` allow
    (``MetadataTooLarge``: FFmpeg would parse it, quadratically, before any frame)."""
    regular_file_size(path)
    if limits is not None:
        limits.check_metadata(path)
    return os.path.abspath(path)


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
class _Shot:
    """One encoded picture and the timestamp of the frame it shows."""

    pts: int
    data: bytes
    dull: bool


class _Renderer:
    def __init__(
        self, container: Any, name: str, plan: ThumbnailPlan, limits: DecodeLimits
    ) -> None:
        streams = container.streams
        if plan.stream_index >= len(streams) or streams[plan.stream_index].type != "video":
            raise InvalidMedia(f"{name}: the video stream is not where the prober saw it")
        self._container = container
        self._name = name
        self._plan = plan
        self._stream = streams[plan.stream_index]
        self._decoder = self._stream.codec_context
        if self._decoder is None or self._stream.time_base is None:
            raise InvalidMedia(f"{name}: the video stream cannot be decoded")
        # The frame size the file declares now, whatever the prober saw.
        limits.check_frame(name, self._decoder.width, self._decoder.height)
        self._time_base: Fraction = self._stream.time_base
        start = container.start_time
        self._origin = Fraction(start, 1_000_000) if start is not None else Fraction(0)
        self._images = _Images(name, plan, self._time_base)
        self._keyframes: dict[int, _Shot | None] = {}  # decoded alone, by pts
        # Decoding forward: the GOP (its keyframe's pts) the decoder is in, the packets still
        # to come, and the last frame it gave.
        self._gop: int | None = None
        self._frames: Iterator[Any] = iter(())
        self._last: Any = None
        self._last_pts: int | None = None
        self._target = 0  # what the forward decoding is heading for

    def thumbnails(self) -> list[Thumbnail]:
        plan = self._plan
        targets = [self._pts(t) for t in plan.times]
        keys = [self._keyframe_at(target) for target in targets]
        snap, reach = self._span(plan.snap), self._span(plan.max_forward)
        near = [target - key <= snap for target, (key, _) in zip(targets, keys, strict=True)]
        # Frame threads speed a long forward decode up, and only slow a lone keyframe down.
        self._decoder.thread_type = "SLICE" if all(near) else "AUTO"
        thumbnails = []
        for index, (target, (key, packet), is_near) in enumerate(
            zip(targets, keys, near, strict=True)
        ):
            shot = self._keyframe(key, packet) if is_near else None
            if shot is None:
                shot = self._forward(key, min(target, key + reach))
            if shot.dull:
                shot = self._replacement(shot) or shot
            thumbnails.append(
                Thumbnail(
                    index=index,
                    time=self._seconds(shot.pts),
                    width=plan.width,
                    height=plan.height,
                    data=shot.data,
                )
            )
        return thumbnails

    # -- time ----------------------------------------------------------------------------------
    def _pts(self, seconds: float) -> int:
        return round((Fraction(seconds) + self._origin) / self._time_base)

    def _span(self, seconds: float) -> int:
        return int((Fraction(seconds) + Fraction(EPSILON)) / self._time_base)

    def _seconds(self, pts: int) -> float:
        return round(max(float(pts * self._time_base - self._origin), 0.0), 3)

    # -- packets -------------------------------------------------------------------------------
    def _seek(self, pts: int) -> None:
        """To the keyframe at or before ``pts`` — or the first one, when ``pts`` is earlier
        than any (some demuxers refuse a backward seek before their first entry)."""
        self._gop = None  # seeking flushes the decoder: nothing to continue from
        try:
            self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            self._container.seek(pts, stream=self._stream, backward=False, any_frame=False)

    def _packets(self) -> Iterator[Any]:
        """The stream's packets from the current position, with their pts (dts when a format
        gives none); stops at the end or after the packet budget."""
        for count, packet in enumerate(self._container.demux(self._stream)):
            if packet.size == 0 or count >= _PACKET_BUDGET:
                return
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is not None:
                yield packet

    def _keyframe_at(self, target: int) -> tuple[int, Any]:
        """The keyframe the decoder starts from for ``target``: its pts and its packet.

        Demuxers without an index (FLV, MPEG-TS) can seek past the last keyframe, straight to
        the end; then look again from further back, and at last from the very start.
        """
        for back in _SEEK_BACK:
            self._seek(target - self._span(back) if back is not None else self._first_pts())
            packet = next((p for p in self._packets() if p.is_keyframe), None)
            if packet is not None:
                return _pts_of(packet), packet
        raise InvalidMedia(f"{self._name}: no keyframe in the video stream")

    def _first_pts(self) -> int:
        start = self._stream.start_time
        return start if start is not None else self._pts(0.0)

    # -- decoding ------------------------------------------------------------------------------
    def _keyframe(self, key: int, packet: Any) -> _Shot | None:
        """The keyframe decoded on its own (cached: neighbouring targets often share one)."""
        if key not in self._keyframes:
            self._gop = None  # the drain below ends any forward decoding
            decoder = self._decoder
            decoder.flush_buffers()
            decoder.skip_frame = "DEFAULT"  # a forward decode left unfinished may have set it
            try:
                frames = decoder.decode(packet) + decoder.decode(None)
            except av.error.FFmpegError:
                frames = []
            decoder.flush_buffers()  # after a drain the decoder takes packets again only so
            frame = next((f for f in frames if f.pts == key), frames[0] if frames else None)
            self._keyframes[key] = self._images.shot(frame, key) if frame is not None else None
        return self._keyframes[key]

    def _forward(self, key: int, target: int) -> _Shot:
        """The first frame at or after ``target``, decoding on from the keyframe ``key`` — or
        from where the decoder already is, when that is in the same GOP and not past it."""
        if self._gop != key or self._last_pts is None or self._last_pts >= target:
            self._seek(key)
            self._gop = key
            self._frames = self._decoded()
            self._last, self._last_pts = None, None
        self._target = target
        for count, frame in enumerate(self._frames, start=1):
            pts = frame.pts if frame.pts is not None else target  # no pts: take it as it comes
            self._last, self._last_pts = frame, pts
            if pts >= target or count >= _FRAME_BUDGET:
                return self._images.shot(frame, pts)
        # The stream ended before the target: the last frame there is.
        if self._last is not None and self._last_pts is not None:
            return self._images.shot(self._last, self._last_pts)
        self._gop = None
        shot = self._keyframe(key, self._keyframe_packet(key))
        if shot is None:
            raise InvalidMedia(f"{self._name}: no frame of the video stream could be decoded")
        return shot

    def _keyframe_packet(self, key: int) -> Any:
        self._seek(key)
        return next((p for p in self._packets() if p.is_keyframe), None)

    def _decoded(self) -> Iterator[Any]:
        """Frames decoded forward from the current position. Packets well before the target
        skip their non-reference frames: no other frame is built from them, so the picture
        at the target is the same, for a fraction of the work on a long GOP."""
        decoder = self._decoder
        lead = self._span(_SKIP_LEAD)
        for packet in self._packets():
            decoder.skip_frame = "NONREF" if _pts_of(packet) < self._target - lead else "DEFAULT"
            try:
                frames = decoder.decode(packet)
            except av.error.InvalidDataError:
                continue  # a damaged packet: the next keyframe repairs the picture
            yield from frames
        decoder.skip_frame = "DEFAULT"
        yield from decoder.decode(None)  # the end: drain what the reorder delay holds

    def _replacement(self, dull: _Shot) -> _Shot | None:
        """The first keyframe after the dull frame that is not dull, within the plan's budget."""
        self._seek(dull.pts)
        tried = 0
        for packet in self._packets():
            pts = _pts_of(packet)
            if not packet.is_keyframe or pts <= dull.pts:
                continue
            shot = self._keyframe(pts, packet)
            if shot is not None and not shot.dull:
                return shot
            tried += 1
            if tried >= self._plan.max_replacements:
                break
        return None


class _Images:
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

    def shot(self, frame: Any, pts: int) -> _Shot:
        picture = self._filtered(frame)
        plane = picture.planes[0]
        stats = luma_stats(plane, picture.width, picture.height, plane.line_size, self._limited)
        # Encoders refuse timestamps that do not increase (PyAV rescales to the encoder's base).
        picture.pts, picture.time_base = self._encoded, _ENCODER_TIME_BASE
        self._encoded += 1
        data = b"".join(bytes(packet) for packet in self._encoder.encode(picture))
        if not data:
            raise InvalidMedia(f"{self._name}: the thumbnail encoder produced nothing")
        return _Shot(pts=pts, data=data, dull=stats.dull)

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
    encoder: Any = av.CodecContext.create(_ENCODERS[plan.format], "w")
    encoder.width = plan.width
    encoder.height = plan.height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = _ENCODER_TIME_BASE
    if plan.format == "jpg":
        encoder.color_range = 2  # full range, as JPEG (JFIF) defines it
        encoder.qmin = encoder.qmax = JPEG_QSCALE  # a fixed quality, not a bit rate
    else:
        encoder.color_range = 1
        encoder.options = {"quality": str(WEBP_QUALITY)}
    return encoder


def _pts_of(packet: Any) -> int:
    pts: int = packet.pts if packet.pts is not None else packet.dts
    return pts
