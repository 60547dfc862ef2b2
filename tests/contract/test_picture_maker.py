"""The PictureMaker port on its PyAV adapter: real media, decoded in a real decode pool —
the automatic poster prefers detail, a long GOP keeps forward decoding bounded, a rotated
shared file gives upright pictures, and media without video gives nothing."""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from heimdex.adapters.media import pyav_pictures
from heimdex.adapters.media.pictures_plan import FORWARD_FRAMES, POSTER_MAX_WIDTH, plan_pictures
from heimdex.adapters.media.pyav_pictures import PyAVPictureMaker
from heimdex.domain.model import StoryboardSpec
from tests.fixtures.media import SHARED_MEDIA_DIR, MediaFactory, shared_media_names
from tests.fixtures.probers import shared_pyav_prober

pytestmark = pytest.mark.ffmpeg


@pytest.fixture
async def maker() -> AsyncIterator[PyAVPictureMaker]:
    async with PyAVPictureMaker(workers=1, timeout=60) as made:
        yield made


def _size(image: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(image), mode="r") as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


@pytest.mark.parametrize("storyboard", [None, StoryboardSpec()], ids=["thumbnail_slots", "tiles"])
async def test_the_automatic_poster_prefers_detail_to_smooth_shading(
    maker: PyAVPictureMaker, media_factory: MediaFactory, storyboard: StoryboardSpec | None
) -> None:
    # 3 s of a smooth moving gradient (bright and varied: not dull, little detail), then 3 s
    # of the busy test pattern.
    path = media_factory(
        "poster_detail.mp4",
        *("-f", "lavfi", "-i", "gradients=size=320x180:rate=25:duration=3:speed=0.05"),
        *("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=3"),
        *("-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25"),
    )
    media = await shared_pyav_prober().probe(path)
    made = await maker.pictures(path, media, storyboard, None)
    assert (made.storyboard is None) is (storyboard is None)
    assert made.poster is not None
    assert made.poster.time >= 3.0


async def test_a_long_gop_storyboard_decodes_forward_within_its_budget(
    maker: PyAVPictureMaker, media_factory: MediaFactory
) -> None:
    # One keyframe in 8 s at 25 fps: tiles past 2 s decode forward, at most FORWARD_FRAMES each.
    path = media_factory(
        "storyboard_long_gop.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=8"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        *("-g", "250", "-keyint_min", "250", "-sc_threshold", "0"),
    )
    media = await shared_pyav_prober().probe(path)
    made = await maker.pictures(path, media, StoryboardSpec(width=64), None)
    assert made.storyboard is not None
    tiles = made.storyboard.tiles
    assert len(tiles) == 8
    assert [t.start for t in tiles] == [float(i) for i in range(8)]
    for tile in tiles:
        # The frame is inside the tile's range unless the budget ran out before it.
        assert tile.time < tile.end
        assert tile.time >= tile.start + 0.5 - max(2.0, FORWARD_FRAMES / 25) - 1e-3
    # Tiles 0 and 1 stand on the keyframe (at most 2 s before their middles); the rest are
    # the first frames at or after their middles.
    assert [t.time for t in tiles] == [0.0, 0.0, *(i + 0.52 for i in range(2, 8))]
    sprite = made.storyboard.sprites[0]
    assert _size(sprite.data) == (sprite.width, sprite.height) == (64 * 8, 36)


async def test_a_rotated_shared_file_gets_upright_pictures(maker: PyAVPictureMaker) -> None:
    path = SHARED_MEDIA_DIR / "mp4_internal_emulator_transformer_output_270_rotated.mp4"
    if not path.exists():
        pytest.skip("the shared media are not here")
    media = await shared_pyav_prober().probe(path)
    stream = media.video_streams[0]
    assert stream.rotation in (90, 270)
    assert stream.width
    assert stream.height
    made = await maker.pictures(path, media, StoryboardSpec(), None)
    assert made.storyboard is not None
    assert made.poster is not None
    board = made.storyboard
    assert board.tile_width == 160
    assert board.tile_height > board.tile_width
    poster = made.poster
    assert poster.width == min(stream.height, POSTER_MAX_WIDTH) // 2 * 2
    assert poster.height > poster.width
    assert _size(poster.data) == (poster.width, poster.height)
    at = await maker.pictures(path, media, None, 0.0)
    assert at.poster is not None
    assert at.poster.time == 0.0


async def test_audio_gets_no_pictures(maker: PyAVPictureMaker, audio_m4a: Path) -> None:
    media = await shared_pyav_prober().probe(audio_m4a)
    made = await maker.pictures(audio_m4a, media, StoryboardSpec(), None)
    assert made.storyboard is None
    assert made.poster is None


async def test_the_storyboard_stops_decoding_forward_when_its_budget_is_spent(
    media_factory: MediaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process, with a budget of 30 frames for the whole storyboard: the first
    forward tile decodes up to it, and every later tile shows its keyframe."""
    path = media_factory(
        "storyboard_budget.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=6"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        *("-g", "250", "-keyint_min", "250", "-sc_threshold", "0"),
    )
    media = await shared_pyav_prober().probe(path)
    monkeypatch.setattr(pyav_pictures, "forward_budget", lambda width, height: 30)
    plan = plan_pictures(path.name, media, StoryboardSpec(), None)
    assert plan is not None
    made = pyav_pictures.render_pictures(str(path), path.name, plan)
    assert made.storyboard is not None
    times = [tile.time for tile in made.storyboard.tiles]
    # Tiles 0 and 1: the keyframe; tile 2 (middle 2.5 s): 30 frames in, the budget's end
    # (1.2 s: x264 reorders, so the count is of frames out of the decoder); then keyframes.
    assert times[:2] == [0.0, 0.0]
    assert 0.0 < times[2] < 2.5
    assert times[3:] == [0.0] * 3


@pytest.mark.parametrize("name", list(shared_media_names()))
async def test_every_shared_file_gets_a_storyboard_and_a_poster_when_it_has_video(
    maker: PyAVPictureMaker, name: str
) -> None:
    path = SHARED_MEDIA_DIR / name
    media = await shared_pyav_prober().probe(path)
    made = await maker.pictures(path, media, StoryboardSpec(), None)
    if not media.video_streams:
        assert made.storyboard is None
        assert made.poster is None
        return
    assert made.storyboard is not None
    assert made.poster is not None
    board = made.storyboard
    duration = media.video_streams[0].duration or media.duration or 0
    assert len(board.tiles) == max(1, min(100, math.ceil(duration / board.interval - 1e-9)))
    sprite = board.sprites[0]
    assert _size(sprite.data) == (sprite.width, sprite.height)
    for tile in board.tiles:
        assert tile.x + tile.w <= sprite.width
        assert tile.y + tile.h <= sprite.height
    assert _size(made.poster.data) == (made.poster.width, made.poster.height)
