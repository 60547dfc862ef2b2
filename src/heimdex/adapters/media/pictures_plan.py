"""What a storyboard and a poster are made of, decided in plain Python (no I/O, no media
library), beside ``thumbnail_plan`` whose slots, filter chain and dull test they reuse.

Storyboard. A tile every ``max(1 s, duration / 100)`` seconds (so at most 100), ``width``
pixels wide (160 by default), upright and tone-mapped like a thumbnail, packed in order, ten
to a row, on one sprite sheet. Tile i stands for ``[i·interval, (i+1)·interval)`` and shows a
frame from near its middle: the keyframe at or before the middle when that keyframe is at most
``max(interval, KEYFRAME_SLACK)`` before it (a keyframe decodes alone, once for every tile it
stands for: dense keyframes make a storyboard cheap); otherwise the decoder runs forward from
that keyframe (on from the tile before, within one GOP) to the first frame at or after the
middle, at most ``FORWARD_FRAMES`` frames a tile and ``FORWARD_PIXELS`` decoded pixels for the
whole storyboard — sparse keyframes cost a bounded amount. A tile whose budget ran out shows the
frame it reached; once the storyboard's budget is spent, its keyframe.

Poster (automatic). The candidates are the storyboard's tiles (a frame every
``max(1 s, duration / 100)``), or, with no storyboard, the frames the thumbnail rule finds for
``POSTER_CANDIDATES`` equal slots. The poster is the candidate that is not dull
(``thumbnail_plan``'s test: not near-black, not flat) with the most detail — the mean absolute
difference between neighbouring luma samples, horizontally and vertically, on the candidate's
small picture (160 px tiles, ``SCORE_WIDTH`` thumbnails); the earliest on a tie; the most
detailed dull one when every candidate is dull. That frame is decoded again and rendered at the
video's display width, at most ``POSTER_MAX_WIDTH``. A poster chosen by a user is the frame
shown at the time asked for, rendered the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise

from heimdex.adapters.media.thumbnail_plan import (
    LUMA_STEP,
    Slot,
    ThumbnailPlan,
    plan_thumbnails,
    video_stream,
)
from heimdex.domain.errors import InvalidInput
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import StoryboardSpec, ThumbnailSpec

MAX_TILES = 100
MIN_INTERVAL = 1.0
SHEET_COLUMNS = 10
MIN_TILE_WIDTH = 16
MAX_TILE_WIDTH = 640
# A keyframe this many seconds (or one interval, when longer) before a tile's middle stands for
# the tile; past that, forward decoding, at most FORWARD_FRAMES frames a tile.
KEYFRAME_SLACK = 2.0
FORWARD_FRAMES = 60
# And all tiles together decode at most this many pixels forward (300 frames of 1080p, about a
# second of one CPU); past it, a tile shows its keyframe.
FORWARD_PIXELS = 300 * 1920 * 1080

POSTER_CANDIDATES = 10
POSTER_MAX_WIDTH = 1280
SCORE_WIDTH = 320


def storyboard_interval(duration: float) -> float:
    """Seconds between tiles: one a second, or a hundred over the duration when longer."""
    return round(max(MIN_INTERVAL, duration / MAX_TILES), 6)


def tile_slots(duration: float) -> list[Slot]:
    """One slot a tile: ``[i·interval, (i+1)·interval)`` (the last one ends at the duration),
    targeting its middle."""
    interval = storyboard_interval(duration)
    count = max(1, min(MAX_TILES, math.ceil(duration / interval - 1e-9)))
    out = []
    for i in range(count):
        start = round(i * interval, 6)
        end = round(min((i + 1) * interval, duration), 6)
        out.append(Slot(start=start, target=round((start + end) / 2, 6), end=end))
    return out


@dataclass(frozen=True, slots=True)
class StoryboardPlan:
    """The tiles' picture (a thumbnail plan, one slot per tile), the interval and the sheet's
    layout."""

    picture: ThumbnailPlan
    interval: float
    columns: int
    rows: int

    @property
    def slack(self) -> float:
        return max(self.interval, KEYFRAME_SLACK)


@dataclass(frozen=True, slots=True)
class PicturesPlan:
    """Everything a picture maker needs besides the file; picklable."""

    storyboard: StoryboardPlan | None
    # The poster: the picture at display size, the candidates' scoring picture, and the time
    # asked for (``None``: the automatic rule over the scoring plan's slots).
    poster: ThumbnailPlan
    score: ThumbnailPlan
    poster_time: float | None


def forward_budget(width: int, height: int) -> int:
    """Frames of ``width`` x ``height`` all of a storyboard's tiles may decode forward."""
    return FORWARD_PIXELS // max(width * height, 1)


def check_storyboard(spec: StoryboardSpec) -> None:
    if spec.format not in ("jpg", "webp"):
        raise InvalidInput("storyboard format must be jpg or webp")
    if not MIN_TILE_WIDTH <= spec.width <= MAX_TILE_WIDTH:
        raise InvalidInput(
            f"storyboard width must be between {MIN_TILE_WIDTH} and {MAX_TILE_WIDTH}"
        )


def plan_pictures(
    name: str, media: MediaInfo, storyboard: StoryboardSpec | None, poster_time: float | None
) -> PicturesPlan | None:
    """The plan for a storyboard (when asked for) and a poster of the file ``name``; ``None``
    when it has no video. Raises as :func:`plan_thumbnails` does."""
    # No video: nothing to make; no frame size: InvalidMedia, as for thumbnails.
    score = plan_thumbnails(name, media, ThumbnailSpec(count=POSTER_CANDIDATES, width=SCORE_WIDTH))
    stream = video_stream(media)
    if score is None or stream is None or not stream.width or not stream.height:
        return None
    duration = stream.duration or media.duration
    upright_width = stream.height if (stream.rotation or 0) in (90, 270) else stream.width
    poster_width = max(MIN_TILE_WIDTH, min(POSTER_MAX_WIDTH, upright_width) // 2 * 2)
    poster = plan_thumbnails(name, media, ThumbnailSpec(count=1, width=poster_width))
    if poster is None:
        return None
    board: StoryboardPlan | None = None
    if storyboard is not None:
        check_storyboard(storyboard)
        tiles = tile_slots(duration) if duration and duration > 0 else [score.slots[0]]
        picture = plan_thumbnails(
            name,
            media,
            ThumbnailSpec(count=len(tiles), width=storyboard.width, format=storyboard.format),
        )
        if picture is not None:
            columns = min(SHEET_COLUMNS, len(tiles))
            board = StoryboardPlan(
                picture=replace(picture, slots=tuple(tiles)),
                interval=storyboard_interval(duration) if duration else MIN_INTERVAL,
                columns=columns,
                rows=math.ceil(len(tiles) / columns),
            )
    return PicturesPlan(storyboard=board, poster=poster, score=score, poster_time=poster_time)


def detail_score(
    plane: bytes | bytearray | memoryview, width: int, height: int, stride: int
) -> float:
    """Mean absolute difference between neighbouring luma samples (every ``LUMA_STEP``-th
    pixel of every ``LUMA_STEP``-th row, right and down): edges and texture score high, a
    flat or blurred picture low."""
    view = memoryview(plane).cast("B")
    rows = [
        view[row * stride : row * stride + width : LUMA_STEP].tobytes()
        for row in range(0, height, LUMA_STEP)
    ]
    total = count = 0
    for index, row in enumerate(rows):
        total += sum(abs(a - b) for a, b in pairwise(row))
        count += max(len(row) - 1, 0)
        if index + 1 < len(rows):
            below = rows[index + 1]
            total += sum(abs(a - b) for a, b in zip(row, below, strict=False))
            count += min(len(row), len(below))
    return total / count if count else 0.0
