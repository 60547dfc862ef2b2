"""The ``PictureMaker`` port on PyAV: storyboards and posters, decoded in a decode pool worker.

The calling process only plans (``pictures_plan``) and waits, as the PyAV thumbnailer does
(it usually shares that thumbnailer's pool). In the worker a :class:`FramePicker` finds the
frames, the thumbnailer's :class:`Images` filters them (scale, tone mapping, rotation) and
encodes, and the tiles are pasted row by row into one yuv420p sprite sheet. There is no
ffmpeg-subprocess twin: with ``HEIMDEX_THUMBNAILER=ffmpeg`` the storyboard and the poster
are still made here, in a pool of their own (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import av.error

from heimdex.adapters.media.decode_pool import DecodePool
from heimdex.adapters.media.fingerprint import fingerprint_picture
from heimdex.adapters.media.frame_picker import FramePicker, Picked
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.pictures_plan import (
    FORWARD_FRAMES,
    PicturesPlan,
    StoryboardPlan,
    detail_score,
    forward_budget,
    plan_pictures,
)
from heimdex.adapters.media.pooled_renderer import PooledRenderer
from heimdex.adapters.media.pyav import OPEN_OPTIONS
from heimdex.adapters.media.pyav_thumbnailer import (
    Images,
    capabilities_missing,
    image_encoder,
)
from heimdex.adapters.media.thumbnail_plan import EPSILON, luma_stats
from heimdex.domain.errors import InvalidMedia, ThumbnailerUnavailable, ThumbnailTimeout
from heimdex.domain.frames import FrameFingerprint
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import (
    Pictures,
    Poster,
    Sprite,
    Storyboard,
    StoryboardSpec,
    StoryboardTile,
)

_IO_TIMEOUT = 20.0


class PyAVPictureMaker(PooledRenderer):
    """Storyboards and posters with PyAV in a :class:`DecodePool` (``pool``, shared, or one of
    its own of ``workers`` processes), ``timeout`` seconds per file."""

    name = "pyav"

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 60.0,
        *,
        pool: DecodePool | None = None,
        limits: DecodeLimits | None = None,
    ) -> None:
        super().__init__(__name__, workers, timeout, pool=pool, limits=limits)

    async def pictures(
        self,
        path: Path,
        media: MediaInfo,
        storyboard: StoryboardSpec | None,
        poster_time: float | None,
    ) -> Pictures:
        plan = plan_pictures(path.name, media, storyboard, poster_time)
        if plan is None:
            return Pictures()
        return await self._render(path, "the storyboard and poster", render_pictures, plan)

    async def check(self) -> None:
        missing = await self._pool.run(capabilities_missing, call_seconds=self._timeout)
        if missing:
            raise ThumbnailerUnavailable("PyAV's FFmpeg lacks " + ", ".join(missing))


# -- in the worker process ----------------------------------------------------------------------
def render_pictures(path: str, name: str, plan: PicturesPlan, max_pixels: int = 0) -> Pictures:
    """The storyboard and poster of ``plan`` from the file at ``path``."""
    limits = DecodeLimits(max_pixels=max_pixels)
    try:
        with av.open(
            "file:" + path,
            mode="r",
            format=plan.poster.demuxer,
            options=limits.decoder_options(),
            container_options=OPEN_OPTIONS,
            timeout=_IO_TIMEOUT,
            metadata_errors="replace",
        ) as container:
            return _PictureRenderer(container, name, plan, limits).pictures()
    except MemoryError:
        raise
    except av.error.ExitError:
        raise ThumbnailTimeout(f"{name}: reading the file timed out") from None
    except av.error.FFmpegError as exc:
        raise InvalidMedia(f"{name}: {exc.strerror or exc}") from None
    except (ValueError, EOFError, UnicodeError) as exc:
        raise InvalidMedia(f"{name}: {exc}") from None


class _PictureRenderer:
    def __init__(self, container: Any, name: str, plan: PicturesPlan, limits: DecodeLimits) -> None:
        index = plan.poster.stream_index
        streams = container.streams
        if index >= len(streams) or streams[index].type != "video":
            raise InvalidMedia(f"{name}: the video stream is not where the prober saw it")
        stream = streams[index]
        limits.check_frame(name, stream.codec_context.width, stream.codec_context.height)
        self._picker = FramePicker(container, stream, name)
        self._name = name
        self._plan = plan
        # Each tile's rank as a poster candidate: (not dull, detail), and its frame's pts.
        self._candidates: list[tuple[tuple[bool, float], int]] = []
        # The fingerprints of the tiles that are not dull, from the pictures already filtered.
        self._frames: list[FrameFingerprint] = []

    def pictures(self) -> Pictures:
        board = self._plan.storyboard
        storyboard = self._storyboard(board) if board is not None else None
        return Pictures(storyboard=storyboard, poster=self._poster(), frames=self._frames)

    # -- the storyboard ----------------------------------------------------------------------
    def _storyboard(self, board: StoryboardPlan) -> Storyboard:
        picker, plan = self._picker, board.picture
        images = Images(self._name, plan, picker.time_base)
        sheet = _Sheet(plan.width, plan.height, board.columns, board.rows, plan.format)
        # Keyframes standing for more than one tile: their tile picture, and its pts.
        by_keyframe: dict[int, tuple[Any, int]] = {}
        decoder = picker_decoder_size(self._picker)
        budget = forward_budget(*decoder)
        started = picker.decoded
        tiles: list[StoryboardTile] = []
        previous: StoryboardTile | None = None
        located = [picker.keyframe_before(slot) for slot in plan.slots]
        near = [
            slot.target - picker.seconds(key.pts) <= board.slack + EPSILON
            for slot, key in zip(plan.slots, located, strict=True)
        ]
        picker.locate([], alone=all(near))  # threads for lone keyframes, or for decoding on
        for position, (slot, key, close) in enumerate(zip(plan.slots, located, near, strict=True)):
            tile: tuple[Any, int] | None = None
            if close:
                tile = by_keyframe.get(key.pts)
                picked = None if tile is not None else picker.keyframe(key)
            else:
                left = budget - (picker.decoded - started)
                picked = None
                if left > 0:
                    picked = picker.pick(slot, key, budget=min(FORWARD_FRAMES, left))
                    reached = picker.last
                    if (
                        picked is None
                        and reached is not None
                        and key.pts < reached.pts < picker.pts(slot.end)
                    ):
                        picked = reached  # the budget stopped short: the frame it reached
                if picked is None:
                    tile = by_keyframe.get(key.pts)
                    picked = None if tile is not None else picker.keyframe(key)
            if picked is not None:
                tile = images.look(picked).picture, picked.pts
                if picked.pts == key.pts:
                    by_keyframe[key.pts] = tile
                rank = _rank(tile[0], plan.format != "jpg")
                self._candidates.append((rank, picked.pts))
                if rank[0]:  # not dull
                    self._frames.append(
                        FrameFingerprint(
                            time=picker.seconds(picked.pts),
                            fingerprint=fingerprint_picture(tile[0]),
                        )
                    )
            x, y = (
                (position % board.columns) * plan.width,
                (position // board.columns) * plan.height,
            )
            if tile is not None:
                sheet.paste(tile[0], x, y)
                time = picker.seconds(tile[1])
            elif previous is not None:  # nothing decodable: the tile before stands in
                x, y, time = previous.x, previous.y, previous.time
            else:
                time = slot.target  # a black tile
            previous = StoryboardTile(
                start=slot.start,
                end=slot.end,
                time=time,
                sprite=0,
                x=x,
                y=y,
                w=plan.width,
                h=plan.height,
            )
            tiles.append(previous)
        return Storyboard(
            interval=board.interval,
            tile_width=plan.width,
            tile_height=plan.height,
            format=plan.format,
            tiles=tiles,
            sprites=[sheet.encoded(self._name)],
        )

    # -- the poster --------------------------------------------------------------------------
    def _poster(self) -> Poster | None:
        picker, plan = self._picker, self._plan
        if plan.poster_time is not None:
            picked = picker.at(plan.poster_time)
            time = plan.poster_time
        elif self._candidates:
            # The best tile; the earliest on a tie (max keeps the first of equals).
            _, pts = max(self._candidates, key=lambda candidate: candidate[0])
            picked = picker.at_pts(pts)
            time = picker.seconds(picked.pts) if picked is not None else 0.0
        else:
            picked = self._most_detailed()
            time = picker.seconds(picked.pts) if picked is not None else 0.0
        if picked is None:
            return None
        images = Images(self._name, plan.poster, picker.time_base)
        return Poster(
            time=time,
            width=plan.poster.width,
            height=plan.poster.height,
            data=images.encode(images.look(picked).picture),
        )

    def _most_detailed(self) -> Picked | None:
        """The automatic rule (``pictures_plan``): not dull first, then the most detail, then
        the earliest."""
        picker, score = self._picker, self._plan.score
        images = Images(self._name, score, picker.time_base)
        best: tuple[bool, float] | None = None
        chosen: Picked | None = None
        for slot, key in zip(score.slots, picker.locate(score.slots), strict=True):
            picked = picker.pick(slot, key)
            if picked is None:
                continue
            rank = _rank(images.look(picked).picture, score.format != "jpg")
            if best is None or rank > best:
                best, chosen = rank, picked
        return chosen


def _rank(picture: Any, limited: bool) -> tuple[bool, float]:
    """A poster candidate's rank: not dull first, then detail (``pictures_plan``)."""
    plane = picture.planes[0]
    stats = luma_stats(plane, picture.width, picture.height, plane.line_size, limited)
    return not stats.dull, detail_score(plane, picture.width, picture.height, plane.line_size)


def picker_decoder_size(picker: FramePicker) -> tuple[int, int]:
    """The coded frame size the picker decodes."""
    context = picker.codec_context
    return int(context.width or 1), int(context.height or 1)


class _Sheet:
    """A sprite sheet being filled: yuv420p planes, black until a tile is pasted."""

    def __init__(self, width: int, height: int, columns: int, rows: int, image_format: str):
        self._frame = av.VideoFrame(width * columns, height * rows, "yuv420p")
        self._format = image_format
        black = 0 if image_format == "jpg" else 16  # full-range JPEG, limited-range WebP
        self._planes = [
            bytearray([value]) * plane.buffer_size
            for plane, value in zip(self._frame.planes, (black, 128, 128), strict=True)
        ]

    def paste(self, picture: Any, x: int, y: int) -> None:
        for index, (source, target) in enumerate(
            zip(picture.planes, self._frame.planes, strict=True)
        ):
            shift = 0 if index == 0 else 1  # chroma planes are half the size each way
            data = memoryview(bytes(source))
            width, rows = source.width, source.height
            left, top = x >> shift, y >> shift
            buffer = self._planes[index]
            for row in range(rows):
                start = (top + row) * target.line_size + left
                buffer[start : start + width] = data[
                    row * source.line_size : row * source.line_size + width
                ]

    def encoded(self, name: str) -> Sprite:
        frame = self._frame
        for plane, buffer in zip(frame.planes, self._planes, strict=True):
            plane.update(bytes(buffer))
        encoder = image_encoder(self._format, frame.width, frame.height)
        frame.pts = 0
        data = b"".join(bytes(packet) for packet in encoder.encode(frame))
        data += b"".join(bytes(packet) for packet in encoder.encode(None))
        if not data:
            raise InvalidMedia(f"{name}: the sprite encoder produced nothing")
        return Sprite(index=0, width=frame.width, height=frame.height, data=data)
