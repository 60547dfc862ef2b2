"""The Thumbnailer contract, run against every adapter: real binaries, real encoded media.

Each adapter must give the requested number of valid pictures at evenly spread times, upright
and of the declared size, none for audio, a real picture instead of a black start, distinct
frames near their targets in a long-GOP file, HDR tone-mapped rather than washed out; refuse
broken and hostile files with ``InvalidMedia`` without opening what they name; and survive a
decoder crash or a hang.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import msgspec
import pytest

from heimdex.adapters.media import frame_picker, pyav_thumbnailer
from heimdex.adapters.media.decode_pool import DecodePool
from heimdex.adapters.media.ffmpeg_thumbnailer import FfmpegThumbnailer
from heimdex.adapters.media.pyav_thumbnailer import PyAVThumbnailer
from heimdex.adapters.media.thumbnail_plan import (
    luma_stats,
    output_size,
    plan_thumbnails,
    target_times,
)
from heimdex.domain.errors import (
    DecoderCrashed,
    InvalidInput,
    InvalidMedia,
    MetadataTooLarge,
    ThumbnailerUnavailable,
    ThumbnailTimeout,
)
from heimdex.domain.media import MediaInfo, StreamInfo
from heimdex.domain.model import Thumbnail, ThumbnailSpec
from heimdex.domain.ports import Thumbnailer
from tests.fixtures.media import (
    SHARED_MEDIA_DIR,
    FifoWatch,
    ManifestEntry,
    MediaFactory,
    atime_is_recorded,
    read_manifest,
    shared_media_names,
)
from tests.fixtures.metadata_bombs import write_matroska_with_tags
from tests.fixtures.probers import shared_pyav_prober
from tests.fixtures.thumbnail_media import (
    QUADRANT_SIZE,
    QUADRANTS,
    SLOT_CLIPS,
    answer_later,
    readme_clip,
    rotated_copy,
    segfault,
    slot_clip,
    vfr_clip,
)
from tests.requirements import require_binary

pytestmark = pytest.mark.ffmpeg

THUMBNAILERS = ["pyav", "ffmpeg"]
BROKEN = ["zero_byte_mp4", "text_mp4", "truncated_mp4"]
BAITS = ["hls_playlist_mp4", "ffconcat_mp4"]
WORKER_MODULE = "heimdex.adapters.media.pyav_thumbnailer"
MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
# The shared files with a real video stream (the MP3's MJPEG picture is cover art).
SHARED_VIDEO = [
    entry.file
    for entry in (read_manifest(SHARED_MEDIA_DIR) if list(shared_media_names()) else [])
    if entry.video_codec not in (None, "mjpeg")
]


@pytest.fixture(scope="module")
def decode_pool() -> Iterator[DecodePool]:
    """One pool for the module's PyAV thumbnailers: workers start once, as in production."""
    pool = DecodePool(2, preload=[WORKER_MODULE])
    yield pool
    asyncio.run(pool.close())


def make_thumbnailer(name: str, pool: DecodePool) -> Thumbnailer:
    if name == "ffmpeg":
        return FfmpegThumbnailer(binary=require_binary("ffmpeg"), timeout=30)
    return PyAVThumbnailer(pool=pool, timeout=30)


@pytest.fixture(params=THUMBNAILERS)
def thumbnailer(request: pytest.FixtureRequest, decode_pool: DecodePool) -> Thumbnailer:
    return make_thumbnailer(request.param, decode_pool)


async def describe(path: Path) -> MediaInfo:
    return await shared_pyav_prober().probe(path)


async def thumbnails_of(
    thumbnailer: Thumbnailer, path: Path, spec: ThumbnailSpec | None = None
) -> list[Thumbnail]:
    return list(await thumbnailer.thumbnails(path, await describe(path), spec or ThumbnailSpec()))


def claimed_video(path: Path, format_name: str = MP4) -> MediaInfo:
    """What a stale or forged description of ``path`` could say: a 4 s 640x360 H.264 video."""
    return MediaInfo(
        format_name=format_name,
        duration=4.0,
        bit_rate=None,
        size_bytes=path.stat().st_size,
        streams=[
            StreamInfo(
                index=0,
                kind="video",
                codec="h264",
                width=640,
                height=360,
                rotation=0,
                display_width=640,
                display_height=360,
                frame_rate=25.0,
            )
        ],
    )


# -- looking at the pictures --------------------------------------------------------------------
def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"


def is_webp(data: bytes) -> bool:
    riff_size = int.from_bytes(data[4:8], "little")
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP" and riff_size + 8 == len(data)


class Picture:
    """A thumbnail decoded back with PyAV: its real size and its pixels."""

    def __init__(self, data: bytes) -> None:
        with av.open(io.BytesIO(data), mode="r") as container:
            frame = next(container.decode(video=0))
        self.width, self.height = frame.width, frame.height
        self.format_name: str = container.format.name
        gray = frame.reformat(format="gray")
        plane = gray.planes[0]
        raw = bytes(plane)
        self.luma = [
            raw[y * plane.line_size : y * plane.line_size + self.width] for y in range(self.height)
        ]
        rgb = frame.reformat(format="rgb24")
        plane = rgb.planes[0]
        raw = bytes(plane)
        self.rgb = [
            raw[y * plane.line_size : y * plane.line_size + self.width * 3]
            for y in range(self.height)
        ]

    def mean_luma(
        self, left: float = 0, top: float = 0, right: float = 1, bottom: float = 1
    ) -> float:
        """Mean luma of a region given in fractions of the picture."""
        rows = self.luma[int(top * self.height) : int(bottom * self.height)]
        values = [v for row in rows for v in row[int(left * self.width) : int(right * self.width)]]
        return sum(values) / len(values)

    def luma_stddev(self) -> float:
        values = [v for row in self.luma for v in row]
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))

    def saturation(self) -> float:
        """Mean HSV saturation: washed-out pictures have little."""
        total, count = 0.0, 0
        for row in self.rgb:
            for x in range(0, len(row), 3):
                high, low = max(row[x : x + 3]), min(row[x : x + 3])
                total += (high - low) / high if high else 0.0
                count += 1
        return total / count

    def difference(self, other: Picture) -> float:
        """Mean absolute difference per RGB sample."""
        assert (self.width, self.height) == (other.width, other.height)
        total = sum(
            abs(a - b)
            for mine, theirs in zip(self.rgb, other.rgb, strict=True)
            for a, b in zip(mine, theirs, strict=True)
        )
        return total / (self.width * self.height * 3)


def unmapped_picture(path: Path, width: int, height: int) -> Picture:
    """The first frame scaled to RGB with no tone mapping: what a washed-out thumbnail is."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    rgb = frame.reformat(width=width, height=height, format="rgb24")
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "rgb24"
    return Picture(b"".join(bytes(p) for p in encoder.encode(rgb) + encoder.encode(None)))


# -- count, times, format, size -----------------------------------------------------------------
async def test_ten_evenly_spread_jpegs_of_the_declared_size_by_default(
    thumbnailer: Thumbnailer, gop1_mp4: Path
) -> None:
    thumbnails = await thumbnails_of(thumbnailer, gop1_mp4)

    assert [t.index for t in thumbnails] == list(range(10))
    # Targets 0.5, 1.5 … 9.5 s; with a keyframe every second each lands on the one before.
    assert [t.time for t in thumbnails] == pytest.approx([float(i) for i in range(10)], abs=0.002)
    assert len({t.data for t in thumbnails}) == 10
    for thumbnail in thumbnails:
        assert is_jpeg(thumbnail.data)
        picture = Picture(thumbnail.data)
        assert picture.format_name == "jpeg_pipe"
        assert (thumbnail.width, thumbnail.height) == (picture.width, picture.height) == (320, 180)


async def test_count_width_and_webp_are_honoured(thumbnailer: Thumbnailer, gop1_mp4: Path) -> None:
    spec = ThumbnailSpec(count=4, width=160, format="webp")

    thumbnails = await thumbnails_of(thumbnailer, gop1_mp4, spec)

    # Targets 1.25, 3.75, 6.25, 8.75 s: the keyframes at or before them.
    assert [t.time for t in thumbnails] == pytest.approx([1.0, 3.0, 6.0, 8.0], abs=0.002)
    for thumbnail in thumbnails:
        assert is_webp(thumbnail.data)
        picture = Picture(thumbnail.data)
        assert picture.format_name == "webp_pipe"
        assert (thumbnail.width, thumbnail.height) == (picture.width, picture.height) == (160, 90)


async def test_an_unknown_format_or_absurd_width_is_invalid_input(
    thumbnailer: Thumbnailer, gop1_mp4: Path
) -> None:
    with pytest.raises(InvalidInput):
        await thumbnails_of(thumbnailer, gop1_mp4, ThumbnailSpec(format="png"))
    with pytest.raises(InvalidInput):
        await thumbnails_of(thumbnailer, gop1_mp4, ThumbnailSpec(width=100_000))


@pytest.mark.parametrize("fixture_name", ["vp9_webm", "hevc_mkv"])
async def test_other_codecs_and_containers_give_thumbnails(
    thumbnailer: Thumbnailer, request: pytest.FixtureRequest, fixture_name: str
) -> None:
    path: Path = request.getfixturevalue(fixture_name)

    thumbnails = await thumbnails_of(thumbnailer, path, ThumbnailSpec(count=3))

    assert len(thumbnails) == 3
    for thumbnail in thumbnails:
        picture = Picture(thumbnail.data)
        assert (picture.width, picture.height) == (320, 240)


def test_times_sizes_and_the_dull_test_are_decided_alike_for_both() -> None:
    """The shared plan, on its own: numbers both adapters rely on."""
    assert target_times(10.0, 4) == [1.25, 3.75, 6.25, 8.75]
    assert target_times(None, 10) == [0.0]  # unknown duration: one, from the start
    stored_1080p = StreamInfo(index=0, kind="video", codec="h264", width=1920, height=1080)
    portrait_1080p = msgspec.structs.replace(stored_1080p, rotation=90)
    assert output_size(stored_1080p, 320) == (320, 180)
    assert output_size(portrait_1080p, 320) == (320, 568)  # not 180x320
    pal_widescreen = StreamInfo(
        index=0,
        kind="video",
        codec="mpeg2video",
        width=720,
        height=576,
        display_aspect_ratio="16:9",
    )
    assert output_size(pal_widescreen, 320) == (320, 180)  # the display aspect, not 720:576
    black = bytes(320 * 180)
    pattern = bytes(range(256)) * 225
    assert luma_stats(black, 320, 180, 320, limited=False).dull
    assert luma_stats(bytes([16]) * (320 * 180), 320, 180, 320, limited=True).dull
    assert not luma_stats(pattern, 320, 180, 320, limited=False).dull


# Shared files whose video has fewer frames than ten slots hold, or ends well before the file.
FEWER_IN_SHARED = {
    "mp4_hlg10-color-test.mp4": 9,  # nine frames
    "mkv_sample_with_srt.mkv": 8,  # 1.0 s of video in a 1.234 s file (the subtitles run on)
    "flv_sample.flv": 9,  # 1.0 s of video in a 1.136 s file (the audio runs on)
}


@pytest.mark.parametrize("file_name", SHARED_VIDEO)
async def test_every_shared_video_file_gives_distinct_frames_one_per_slot(
    thumbnailer: Thumbnailer,
    shared_media_dir: Path,
    shared_media_manifest: list[ManifestEntry],
    file_name: str,
) -> None:
    """AVI, FLV, Matroska, MPEG-TS, HEVC with B-frames: seeking differs in each demuxer."""
    entry = next(e for e in shared_media_manifest if e.file == file_name)
    assert entry.width is not None
    assert entry.height is not None
    path = shared_media_dir / file_name
    media = await describe(path)

    thumbnails = list(await thumbnailer.thumbnails(path, media, ThumbnailSpec()))

    duration = media.video_streams[0].duration or media.duration
    assert duration is not None
    if file_name == "mp4_silent-black-10s.mp4":  # ten black frames: one picture, ten times
        assert_in_slots(thumbnails, duration, 10)
    else:
        assert_one_distinct_frame_per_slot(
            thumbnails, duration, 10, made=FEWER_IN_SHARED.get(file_name, 10)
        )
    turned = entry.rotation in (90.0, -90.0)
    aspect = entry.height / entry.width if not turned else entry.width / entry.height
    for thumbnail in thumbnails:
        picture = Picture(thumbnail.data)
        assert (picture.width, picture.height) == (thumbnail.width, thumbnail.height)
        assert picture.width == 320
        assert picture.height == pytest.approx(320 * aspect, abs=2)


# -- one frame per slot ----------------------------------------------------------------------------
def assert_in_slots(thumbnails: list[Thumbnail], duration: float, count: int) -> None:
    """Times strictly increasing, each in a slot of its own of ``count`` equal slots (in order:
    when all are made, thumbnail i in slot i), indexes 0, 1, …."""
    assert [t.index for t in thumbnails] == list(range(len(thumbnails)))
    width = duration / count
    slot_of = [min(int((t.time + 0.0005) / width), count - 1) for t in thumbnails]
    assert slot_of == sorted(set(slot_of)), [t.time for t in thumbnails]
    if len(thumbnails) == count:
        assert slot_of == list(range(count))
    for thumbnail, slot in zip(thumbnails, slot_of, strict=True):
        # Times are rounded to milliseconds: a frame on a boundary may read a hair before it.
        assert slot * width - 0.001 <= thumbnail.time < (slot + 1) * width + 0.001


def assert_one_distinct_frame_per_slot(
    thumbnails: list[Thumbnail], duration: float, count: int, made: int | None = None
) -> None:
    assert len(thumbnails) == (count if made is None else made), [t.time for t in thumbnails]
    assert_in_slots(thumbnails, duration, count)
    # Different pictures, not only different times: the digests of the files and the pixels.
    assert len({hashlib.sha256(t.data).hexdigest() for t in thumbnails}) == len(thumbnails)
    assert len({pixel_digest(t.data) for t in thumbnails}) == len(thumbnails)


def pixel_digest(data: bytes) -> str:
    return hashlib.sha256(b"".join(Picture(data).luma)).hexdigest()


def small_gray(frame: Any) -> bytes:
    plane = frame.reformat(width=80, height=46, format="gray").planes[0]
    raw = bytes(plane)
    return b"".join(raw[y * plane.line_size : y * plane.line_size + 80] for y in range(46))


def reference_frames(path: Path) -> dict[float, bytes]:
    """Every frame of the clip, small and grey, by its time in milliseconds."""
    frames = {}
    with av.open(str(path)) as container:
        start = (container.start_time or 0) / 1_000_000
        for frame in container.decode(video=0):
            frames[round(frame.time - start, 3)] = small_gray(frame)
    return frames


def assert_pictures_show_their_times(thumbnails: list[Thumbnail], path: Path) -> None:
    """Each picture is closest to the clip's frame at its ``time`` among the frames near it."""
    frames = reference_frames(path)
    for thumbnail in thumbnails:
        with av.open(io.BytesIO(thumbnail.data), mode="r") as container:
            ours = small_gray(next(container.decode(video=0)))
        near = [t for t in frames if abs(t - thumbnail.time) <= 0.15]

        def distance(time: float, ours: bytes = ours) -> int:
            return sum(abs(a - b) for a, b in zip(frames[time], ours, strict=True))

        assert min(near, key=distance) == pytest.approx(thumbnail.time, abs=0.0015)


@pytest.mark.parametrize("clip", list(SLOT_CLIPS))
async def test_clips_of_every_length_and_gop_give_a_distinct_frame_in_every_slot(
    thumbnailer: Thumbnailer, media_factory: MediaFactory, clip: str
) -> None:
    """1 to 60 s, a keyframe every second to a single one, B-frames in all: thumbnail i is
    the frame at slot i's target (or the slot's keyframe), a picture of its own."""
    path = slot_clip(media_factory, clip)
    seconds, _ = SLOT_CLIPS[clip]

    thumbnails = await thumbnails_of(thumbnailer, path)

    assert_one_distinct_frame_per_slot(thumbnails, float(seconds), 10)
    assert_pictures_show_their_times(thumbnails, path)


async def test_the_readme_clip_and_a_12_s_2_s_gop_clip_give_the_frames_at_their_targets(
    thumbnailer: Thumbnailer, media_factory: MediaFactory
) -> None:
    """The issue's two examples: [0,0,0,0,0,2.2,2.6,3,3.4,3.8] and [0,0,2,4,4,6,6,8,10,10]
    before slots."""
    readme = await thumbnails_of(thumbnailer, readme_clip(media_factory))
    gop2 = await thumbnails_of(thumbnailer, slot_clip(media_factory, "12s_gop2"))

    # The only keyframe (0) lies in the first slot; every other is the frame at its target.
    assert [t.time for t in readme] == pytest.approx([0.0, *(0.6 + 0.4 * i for i in range(9))])
    # Slots 1.2 s wide: a keyframe at or before the target inside the slot, else the target.
    assert [t.time for t in gop2] == pytest.approx(
        [0.0, 1.8, 3.0, 4.0, 5.4, 6.0, 7.8, 9.0, 10.0, 11.4], abs=0.002
    )
    assert len({t.data for t in readme}) == len({t.data for t in gop2}) == 10


async def test_a_variable_frame_rate_clip_gives_frames_from_each_slot(
    thumbnailer: Thumbnailer, media_factory: MediaFactory
) -> None:
    """No frames from 2.0 to 2.6 s: the slot [1.6, 2.4) has none at or after its target, so
    its thumbnail is an earlier frame of the same slot, never one from the next."""
    path = vfr_clip(media_factory)

    thumbnails = await thumbnails_of(thumbnailer, path)

    assert_one_distinct_frame_per_slot(thumbnails, 8.0, 10)
    assert 1.6 <= thumbnails[2].time < 2.0
    assert_pictures_show_their_times(thumbnails, path)


async def test_a_rotated_clip_gives_distinct_upright_frames_per_slot(
    thumbnailer: Thumbnailer, media_factory: MediaFactory
) -> None:
    path = rotated_copy(media_factory, slot_clip(media_factory, "8s_gop2"), 270)

    thumbnails = await thumbnails_of(thumbnailer, path)

    assert_one_distinct_frame_per_slot(thumbnails, 8.0, 10)
    assert {(t.width, t.height) for t in thumbnails} == {(320, 568)}


@pytest.mark.parametrize("fixture_name", ["pq_mkv", "hlg_mkv"])
async def test_hdr_clips_give_distinct_frames_per_slot(
    thumbnailer: Thumbnailer, request: pytest.FixtureRequest, fixture_name: str
) -> None:
    path: Path = request.getfixturevalue(fixture_name)  # 1 s, 25 frames

    thumbnails = await thumbnails_of(thumbnailer, path)

    assert_one_distinct_frame_per_slot(thumbnails, 1.0, 10)


async def test_fewer_frames_than_thumbnails_give_one_thumbnail_per_frame(
    thumbnailer: Thumbnailer, media_factory: MediaFactory
) -> None:
    path = media_factory(
        "five_frames.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=0.2"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
    )

    thumbnails = await thumbnails_of(thumbnailer, path)

    assert [t.time for t in thumbnails] == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16])
    assert_one_distinct_frame_per_slot(thumbnails, 0.2, 10, made=5)


# -- upright --------------------------------------------------------------------------------------
async def test_a_portrait_phone_clip_gives_portrait_thumbnails(
    thumbnailer: Thumbnailer, rotated_mp4: Path
) -> None:
    thumbnails = await thumbnails_of(thumbnailer, rotated_mp4, ThumbnailSpec(count=2))

    for thumbnail in thumbnails:
        picture = Picture(thumbnail.data)
        # Stored 640x360, shown 360x640: at 320 wide, 320x568.
        assert (thumbnail.width, thumbnail.height) == (picture.width, picture.height) == (320, 568)


# Which stored quadrant each displayed quadrant shows after a clockwise turn.
TURNED = {
    0: {"top_left": "top_left", "top_right": "top_right", "bottom_left": "bottom_left"},
    90: {"top_left": "bottom_left", "top_right": "top_left", "bottom_left": "bottom_right"},
    180: {"top_left": "bottom_right", "top_right": "bottom_left", "bottom_left": "top_right"},
    270: {"top_left": "top_right", "top_right": "bottom_right", "bottom_left": "top_left"},
}
REGIONS = {  # the middle of each displayed quadrant, away from the scaled edges
    "top_left": (0.1, 0.1, 0.4, 0.4),
    "top_right": (0.6, 0.1, 0.9, 0.4),
    "bottom_left": (0.1, 0.6, 0.4, 0.9),
}


@pytest.mark.parametrize(("rotate_tag", "clockwise"), [(None, 0), (270, 90), (180, 180), (90, 270)])
async def test_thumbnails_are_turned_upright_not_mirrored(
    thumbnailer: Thumbnailer,
    media_factory: MediaFactory,
    quadrants_mp4: Path,
    rotate_tag: int | None,
    clockwise: int,
) -> None:
    path = (
        quadrants_mp4
        if rotate_tag is None
        else rotated_copy(media_factory, quadrants_mp4, rotate_tag)
    )
    media = await describe(path)
    assert media.streams[0].rotation == clockwise

    (thumbnail,) = await thumbnailer.thumbnails(path, media, ThumbnailSpec(count=1))

    picture = Picture(thumbnail.data)
    stored_width, stored_height = QUADRANT_SIZE
    portrait = clockwise in (90, 270)
    # 320 wide; 240 high as stored, or 320 * 320 / 240 ≈ 426 when turned a quarter.
    expected_height = 426 if portrait else 320 * stored_height // stored_width
    assert (picture.width, picture.height) == (320, expected_height)
    # Three quadrants fix the turn and rule out a mirror image.
    for displayed, stored in TURNED[clockwise].items():
        assert picture.mean_luma(*REGIONS[displayed]) == pytest.approx(QUADRANTS[stored], abs=12)


async def test_a_shared_270_degree_clip_is_portrait(
    thumbnailer: Thumbnailer, shared_media_dir: Path
) -> None:
    path = shared_media_dir / "mp4_internal_emulator_transformer_output_270_rotated.mp4"

    thumbnails = await thumbnails_of(thumbnailer, path, ThumbnailSpec(count=2))

    assert [(t.width, t.height) for t in thumbnails] == [(320, 568)] * 2
    assert Picture(thumbnails[0].data).height == 568


# -- no video, no thumbnails ----------------------------------------------------------------------
async def test_audio_only_gives_no_thumbnails(thumbnailer: Thumbnailer, audio_m4a: Path) -> None:
    assert await thumbnails_of(thumbnailer, audio_m4a) == []


async def test_an_mp3s_cover_art_is_not_video(
    thumbnailer: Thumbnailer, shared_media_dir: Path
) -> None:
    path = shared_media_dir / "mp3_bear-id3.mp3"
    media = await describe(path)
    assert [s.kind for s in media.streams] == ["audio", "cover_art"]

    assert await thumbnailer.thumbnails(path, media, ThumbnailSpec()) == []


# -- choosing frames ------------------------------------------------------------------------------
async def test_a_dull_frame_is_replaced_by_a_better_one_from_its_own_slot(
    thumbnailer: Thumbnailer, dark_start_mp4: Path
) -> None:
    """Two slots, [0, 2) and [2, 4): the first's keyframe (1 s) is black, the pattern starts at
    1.2 s — inside the same slot, so that is what the first thumbnail shows."""
    first, second = await thumbnails_of(thumbnailer, dark_start_mp4, ThumbnailSpec(count=2))

    assert 1.2 - 0.002 <= first.time < 2.0
    assert 2.0 <= second.time < 4.0
    for thumbnail in (first, second):
        picture = Picture(thumbnail.data)
        assert picture.mean_luma() > 60
        assert picture.luma_stddev() > 30


async def test_a_slot_with_nothing_but_black_keeps_a_black_frame_of_its_own(
    thumbnailer: Thumbnailer, black_start_mp4: Path
) -> None:
    """No borrowing from a neighbour: slots [0, 0.4) … [1.6, 2.0) are black, so their
    thumbnails are black frames from those slots, and the rest show the pattern."""
    thumbnails = await thumbnails_of(thumbnailer, black_start_mp4)

    assert len(thumbnails) == 10
    assert_in_slots(thumbnails, 4.0, 10)  # ten frames; the five black ones look alike
    assert len({t.data for t in thumbnails[5:]}) == 5
    assert all(Picture(t.data).mean_luma() < 10 for t in thumbnails[:5])
    assert all(Picture(t.data).mean_luma() > 60 for t in thumbnails[5:])


async def test_an_all_black_video_still_gets_its_thumbnails_quickly(
    thumbnailer: Thumbnailer, shared_media_dir: Path
) -> None:
    path = shared_media_dir / "mp4_silent-black-10s.mp4"
    started = time.monotonic()

    thumbnails = await thumbnails_of(thumbnailer, path)

    assert time.monotonic() - started < 10  # the search for a better keyframe is bounded
    assert len(thumbnails) == 10
    assert all(Picture(t.data).mean_luma() < 10 for t in thumbnails)


async def test_a_long_gop_gives_distinct_frames_near_their_targets(
    thumbnailer: Thumbnailer, long_gop_mp4: Path
) -> None:
    thumbnails = await thumbnails_of(thumbnailer, long_gop_mp4)

    targets = target_times(20.0, 10)  # 1, 3 … 19 s; the only keyframe is at 0
    times = [t.time for t in thumbnails]
    assert len({t.data for t in thumbnails}) == 10
    assert times == sorted(set(times))
    # The only keyframe lies in the first slot, [0, 2); every other thumbnail is decoded
    # forward to its slot's target.
    assert times[0] == pytest.approx(0.0, abs=0.002)
    assert times[1:] == pytest.approx(targets[1:], abs=1 / 30 + 0.002)


async def test_pyav_skipping_non_reference_frames_changes_no_picture(
    long_gop_mp4: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding forward skips the frames nothing is built from until just before a target:
    the thumbnails must be the very same bytes as when every frame is decoded."""
    with av.open(str(long_gop_mp4)) as container:
        kinds = {
            av.video.frame.PictureType(frame.pict_type).name for frame in container.decode(video=0)
        }
    assert "B" in kinds  # the clip has non-reference frames, or this would prove nothing
    media = await shared_pyav_prober().probe(long_gop_mp4)
    plan = plan_thumbnails(long_gop_mp4.name, media, ThumbnailSpec())
    assert plan is not None

    skipping = pyav_thumbnailer.render(str(long_gop_mp4), long_gop_mp4.name, plan)
    monkeypatch.setattr(frame_picker, "SKIP_LEAD", 1e9)  # never skip
    decoding_all = pyav_thumbnailer.render(str(long_gop_mp4), long_gop_mp4.name, plan)

    assert [t.time for t in skipping] == [t.time for t in decoding_all]
    assert [t.data for t in skipping] == [t.data for t in decoding_all]


async def test_both_thumbnailers_pick_the_same_frames_and_draw_them_alike(
    decode_pool: DecodePool,
    gop1_mp4: Path,
    long_gop_mp4: Path,
    media_factory: MediaFactory,
    quadrants_mp4: Path,
) -> None:
    rotated = rotated_copy(media_factory, quadrants_mp4, 270)
    for path in (gop1_mp4, long_gop_mp4, rotated):
        pyav = await thumbnails_of(
            make_thumbnailer("pyav", decode_pool), path, ThumbnailSpec(count=4)
        )
        ffmpeg = await thumbnails_of(
            make_thumbnailer("ffmpeg", decode_pool), path, ThumbnailSpec(count=4)
        )

        assert [t.time for t in pyav] == pytest.approx([t.time for t in ffmpeg], abs=0.002)
        for mine, theirs in zip(pyav, ffmpeg, strict=True):
            # Two FFmpeg versions' scalers and JPEG encoders: close, not bit-identical.
            assert Picture(mine.data).difference(Picture(theirs.data)) < 3


# -- HDR -------------------------------------------------------------------------------------------
async def test_hlg_video_is_tone_mapped_not_washed_out(
    thumbnailer: Thumbnailer, shared_media_dir: Path
) -> None:
    path = shared_media_dir / "mp4_hlg10-color-test.mp4"

    thumbnail = (await thumbnails_of(thumbnailer, path, ThumbnailSpec(count=1)))[0]

    ours = Picture(thumbnail.data)
    washed_out = unmapped_picture(path, ours.width, ours.height)
    # The BT.2020 colour checker read as if it were BT.709 loses about a quarter of its
    # saturation (measured: 0.22 against 0.28 mapped) and some contrast: demand most of what
    # the BT.2020 → BT.709 conversion gives back.
    assert ours.saturation() > 1.2 * washed_out.saturation()
    assert ours.luma_stddev() > 1.1 * washed_out.luma_stddev()


@pytest.mark.parametrize("fixture_name", ["pq_mkv", "hlg_mkv"])
async def test_hdr_made_from_sdr_maps_back_close_to_the_sdr_picture(
    thumbnailer: Thumbnailer,
    request: pytest.FixtureRequest,
    sdr_source_mkv: Path,
    fixture_name: str,
) -> None:
    hdr: Path = request.getfixturevalue(fixture_name)
    spec = ThumbnailSpec(count=1)

    (mapped,) = await thumbnails_of(thumbnailer, hdr, spec)
    (reference,) = await thumbnails_of(thumbnailer, sdr_source_mkv, spec)

    ours, sdr = Picture(mapped.data), Picture(reference.data)
    unmapped = unmapped_picture(hdr, ours.width, ours.height)
    # Measured: ≈ 18 from the SDR picture (the knee softens the brightest colours a little),
    # against 70 to 90 for the HDR signal shown as it is.
    assert ours.difference(sdr) < 30
    assert unmapped.difference(sdr) > 2 * ours.difference(sdr)
    assert ours.saturation() > 0.75


# -- broken and hostile files ---------------------------------------------------------------------
@pytest.mark.parametrize("fixture_name", BROKEN)
async def test_broken_files_are_invalid_media(
    thumbnailer: Thumbnailer, request: pytest.FixtureRequest, fixture_name: str
) -> None:
    path: Path = request.getfixturevalue(fixture_name)

    with pytest.raises(InvalidMedia) as raised:
        await thumbnailer.thumbnails(path, claimed_video(path), ThumbnailSpec())

    assert type(raised.value) is InvalidMedia
    assert raised.value.code == "invalid_media"
    assert path.name in raised.value.message
    assert str(path.parent) not in raised.value.message  # no server paths in client errors


async def test_ffmpegs_complaint_is_in_the_error(text_mp4: Path) -> None:
    thumbnailer = FfmpegThumbnailer(binary=require_binary("ffmpeg"))

    with pytest.raises(InvalidMedia) as raised:
        await thumbnailer.thumbnails(text_mp4, claimed_video(text_mp4), ThumbnailSpec())

    assert "moov atom not found" in raised.value.message


@pytest.mark.parametrize("bait", BAITS)
@pytest.mark.parametrize("claimed_format", [MP4, "hls"])
async def test_playlists_are_refused_and_what_they_name_is_never_opened(
    thumbnailer: Thumbnailer,
    request: pytest.FixtureRequest,
    bait: str,
    claimed_format: str,
    sentinel_fifo: Path,
    sentinel_file: Path,
) -> None:
    path: Path = request.getfixturevalue(bait)
    atime_works = atime_is_recorded(sentinel_file.parent)
    past = time.time() - 10 * 86400
    os.utime(sentinel_file, (past, sentinel_file.stat().st_mtime))

    with FifoWatch(sentinel_fifo) as watch, pytest.raises(InvalidMedia) as raised:
        await asyncio.wait_for(
            thumbnailer.thumbnails(path, claimed_video(path, claimed_format), ThumbnailSpec()),
            timeout=20,
        )

    assert type(raised.value) is InvalidMedia
    assert watch.opened == 0, "the thumbnailer opened a file the upload names"
    if atime_works:  # else the FIFO alone is the proof
        assert sentinel_file.stat().st_atime == pytest.approx(past, abs=1)


async def test_a_tag_bomb_is_refused_before_ffmpeg_parses_it(
    thumbnailer: Thumbnailer, tmp_path: Path
) -> None:
    """A stored file replaced by one with 40,000 tags (seconds of FFmpeg CPU per open, and
    the ffmpeg thumbnailer opens it once per picture) fails at once with its code."""
    bomb = write_matroska_with_tags(tmp_path / "tag_bomb.mkv", 40_000)
    with pytest.raises(MetadataTooLarge):
        await thumbnailer.thumbnails(bomb, claimed_video(bomb, "matroska,webm"), ThumbnailSpec())


async def test_a_fifo_is_refused_at_once(thumbnailer: Thumbnailer, tmp_path: Path) -> None:
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)

    with pytest.raises(InvalidMedia, match="not a regular file"):
        await asyncio.wait_for(
            thumbnailer.thumbnails(fifo, claimed_video(fifo), ThumbnailSpec()), timeout=5
        )


# -- crashes and hangs ----------------------------------------------------------------------------
async def test_a_decoder_crash_fails_that_call_and_the_pool_replaces_the_worker(
    gop1_mp4: Path,
) -> None:
    pool = DecodePool(1, preload=[WORKER_MODULE])  # one worker: the crash kills the only one
    try:
        with pytest.raises(DecoderCrashed) as raised:
            await pool.run(segfault)
        assert raised.value.code == "decoder_crashed"
        assert "SIGSEGV" in raised.value.message

        thumbnails = await thumbnails_of(PyAVThumbnailer(pool=pool), gop1_mp4)
        assert len(thumbnails) == 10
    finally:
        await pool.close()


async def test_a_crash_spares_the_call_running_beside_it() -> None:
    pool = DecodePool(2, preload=[WORKER_MODULE])
    try:
        slow = asyncio.ensure_future(pool.run(answer_later, 1.0, 42))
        await asyncio.sleep(0.2)  # let it take its worker first
        with pytest.raises(DecoderCrashed):
            await pool.run(segfault)

        assert await slow == 42
        assert await pool.run(answer_later, 0.0, 7) == 7
    finally:
        await pool.close()


async def test_a_decode_that_outlives_its_timeout_is_killed(decode_pool: DecodePool) -> None:
    started = time.monotonic()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await decode_pool.run(answer_later, 30.0, 1)

    assert time.monotonic() - started < 5
    assert await decode_pool.run(answer_later, 0.0, 3) == 3  # its worker was replaced


async def test_a_pyav_thumbnailer_out_of_time_is_thumbnail_timeout(
    decode_pool: DecodePool, long_gop_mp4: Path
) -> None:
    thumbnailer = PyAVThumbnailer(pool=decode_pool, timeout=0.001)

    with pytest.raises(ThumbnailTimeout) as raised:
        await thumbnails_of(thumbnailer, long_gop_mp4)

    assert raised.value.code == "thumbnail_timeout"
    assert long_gop_mp4.name in raised.value.message


async def test_an_ffmpeg_killed_by_a_signal_is_a_decoder_crash(
    tmp_path: Path, gop1_mp4: Path
) -> None:
    # A stand-in binary: it dies the way a crashing decoder does.
    crashing = tmp_path / "crashing-ffmpeg"
    crashing.write_text("#!/bin/sh\necho 'decoding…' >&2\nkill -SEGV $$\n")
    crashing.chmod(crashing.stat().st_mode | stat.S_IXUSR)
    thumbnailer = FfmpegThumbnailer(binary=str(crashing))

    with pytest.raises(DecoderCrashed, match="SIGSEGV"):
        await thumbnails_of(thumbnailer, gop1_mp4)


async def test_an_ffmpeg_timeout_kills_its_process_group_and_leaves_no_zombie(
    tmp_path: Path, gop1_mp4: Path
) -> None:
    # A stand-in binary that hangs, with a child of its own.
    pids = tmp_path / "pids"
    slow = tmp_path / "slow-ffmpeg"
    slow.write_text(f"#!/bin/sh\necho $$ > {pids}\nsleep 60 &\necho $! >> {pids}\nwait\n")
    slow.chmod(slow.stat().st_mode | stat.S_IXUSR)
    thumbnailer = FfmpegThumbnailer(binary=str(slow), timeout=0.5)
    started = time.monotonic()

    with pytest.raises(ThumbnailTimeout) as raised:
        await thumbnails_of(thumbnailer, gop1_mp4)

    assert raised.value.code == "thumbnail_timeout"
    assert time.monotonic() - started < 5
    shell, sleeper = (int(pid) for pid in pids.read_text().split())
    assert _state(shell) is None, "ffmpeg's process was not reaped"
    assert _state(sleeper) in (None, "Z")  # same group: killed (reaped by init, or about to be)


def _state(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return fields[0]


# -- health ----------------------------------------------------------------------------------------
async def test_check_passes_when_the_thumbnailer_works(thumbnailer: Thumbnailer) -> None:
    await thumbnailer.check()


async def test_a_missing_ffmpeg_is_thumbnailer_unavailable(tmp_path: Path, gop1_mp4: Path) -> None:
    thumbnailer = FfmpegThumbnailer(binary=str(tmp_path / "no-such-ffmpeg"))

    with pytest.raises(ThumbnailerUnavailable):
        await thumbnails_of(thumbnailer, gop1_mp4)
    with pytest.raises(ThumbnailerUnavailable):
        await thumbnailer.check()


async def test_a_closed_pool_refuses_work() -> None:
    pool = DecodePool(1, preload=[WORKER_MODULE])
    await pool.start()
    await pool.close()

    with pytest.raises(ThumbnailerUnavailable):
        await pool.run(answer_later, 0.0, 1)
