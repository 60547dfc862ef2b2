"""The Prober contract, run against every adapter: real binaries, real encoded media.

Each adapter must describe generated clips and the shared sample files with the values of
DESIGN.md §6, agree with the other adapter field by field, refuse broken and hostile files
with ``InvalidMedia``, and never open a file an upload points at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import av.error
import msgspec
import pytest

from heimdex.adapters.media import pyav as pyav_adapter
from heimdex.adapters.media.allowlist import MEDIA_DEMUXERS, format_whitelist
from heimdex.adapters.media.ffprobe import FfprobeProber
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.metadata_budget import MetadataBudget, check_metadata
from heimdex.domain.errors import InvalidMedia, MetadataTooLarge, ProberUnavailable, ProbeTimeout
from heimdex.domain.media import MediaInfo, display_size, normalise_rotation
from heimdex.domain.ports import Prober
from tests.fixtures.media import (
    FifoWatch,
    ManifestEntry,
    MediaFactory,
    atime_is_recorded,
    shared_media_names,
)
from tests.fixtures.metadata_bombs import add_mp4_metadata, write_matroska_with_tags
from tests.fixtures.probers import shared_pyav_prober
from tests.requirements import require_binary

pytestmark = pytest.mark.ffmpeg

PROBERS = ["ffprobe", "pyav"]
GENERATED = [
    "h264_aac_mp4",
    "vp9_webm",
    "hevc_mkv",
    "rotated_mp4",
    "audio_m4a",
    "hdr_tt_mkv",
    "cover_art_m4a",
]
BROKEN = ["zero_byte_mp4", "text_mp4", "truncated_mp4"]
# Uploads that name other local files, and which library follows each when left without the
# demuxer allow-list (the controls prove it, so the refusal tests can fail).
BAITS = ["hls_playlist_mp4", "hls_playlist_m3u8", "ffconcat_mp4"]
LIVE_BAITS = {
    ("ffprobe", "hls_playlist_mp4"),
    ("ffprobe", "hls_playlist_m3u8"),
    ("pyav", "hls_playlist_m3u8"),
    ("ffprobe", "ffconcat_mp4"),
    ("pyav", "ffconcat_mp4"),
}
SHARED = list(shared_media_names())
MP4_FORMAT = "mov,mp4,m4a,3gp,3g2,mj2"
# MANIFEST.tsv holds ffprobe 5.1's MP4 duration, read from the movie header (mvhd); the probers
# measure the tracks (see description.py), which for two shared files ends ~44 ms later.
MVHD_SLACK = 0.05


def make_prober(name: str) -> Prober:
    if name == "ffprobe":
        return FfprobeProber(binary=require_binary("ffprobe"))
    return shared_pyav_prober()


@pytest.fixture(params=PROBERS)
def prober(request: pytest.FixtureRequest) -> Prober:
    return make_prober(request.param)


@pytest.fixture(scope="session")
def hdr_tt_mkv(media_factory: MediaFactory) -> Path:
    """10-bit PQ (HDR10 colour tags), full range, interlaced top field first."""
    return media_factory(
        "hdr_tt.mkv",
        *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p10le"),
        *("-flags", "+ilme+ildct", "-top", "1", "-x264-params", "interlaced=1:tff=1"),
        *("-color_primaries", "bt2020", "-color_trc", "smpte2084"),
        *("-colorspace", "bt2020nc", "-color_range", "pc"),
    )


@pytest.fixture(scope="session")
def cover_art_m4a(media_factory: MediaFactory) -> Path:
    """AAC with an iTunes cover picture (a "covr" tag, not a track)."""
    return media_factory(
        "cover_art.m4a",
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1"),
        *("-f", "lavfi", "-i", "color=c=red:s=64x64:d=1"),
        *("-map", "0:a", "-map", "1:v", "-c:a", "aac", "-c:v", "mjpeg", "-frames:v", "1"),
        *("-disposition:v:0", "attached_pic"),
    )


def one_frame(media: MediaInfo) -> float:
    """A frame's length: the tolerance on durations."""
    for stream in media.streams:
        if stream.kind == "video" and stream.frame_rate:
            return 1.0 / stream.frame_rate
    for stream in media.streams:
        if stream.kind == "audio" and stream.sample_rate:
            return 1024 / stream.sample_rate  # an AAC frame
    return 0.05


def size_of(path: Path) -> int:
    return path.stat().st_size


def copy_file(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def backdate_atime(path: Path) -> float:
    """Set the access time ten days back (older than the mtime, so relatime updates it)."""
    past = time.time() - 10 * 86400
    os.utime(path, (past, path.stat().st_mtime))
    return past


def atime_of(path: Path) -> float:
    return path.stat().st_atime


def assert_same_description(first: MediaInfo, second: MediaInfo) -> None:
    """Equal field by field; durations within a frame of each other."""
    tolerance = one_frame(first)

    def timeless(media: MediaInfo) -> dict[str, Any]:
        data: dict[str, Any] = msgspec.to_builtins(media)
        data.pop("duration")
        for stream in data["streams"]:
            stream.pop("duration")
        return data

    assert timeless(first) == timeless(second)
    assert (first.duration is None) == (second.duration is None)
    if first.duration is not None and second.duration is not None:
        assert first.duration == pytest.approx(second.duration, abs=tolerance)
    for a, b in zip(first.streams, second.streams, strict=True):
        assert (a.duration is None) == (b.duration is None)
        if a.duration is not None and b.duration is not None:
            assert a.duration == pytest.approx(b.duration, abs=tolerance)


# -- the design's values on generated clips ----------------------------------------------------
async def test_h264_aac_mp4_gives_the_design_fields(prober: Prober, h264_aac_mp4: Path) -> None:
    media = await prober.probe(h264_aac_mp4)

    assert media.format_name == MP4_FORMAT
    assert media.duration == pytest.approx(4.0, abs=1 / 25)
    assert media.size_bytes == size_of(h264_aac_mp4)
    assert media.bit_rate == int(media.size_bytes * 8 / 4.0)
    assert media.chapters == []
    video, audio = media.streams
    assert (video.index, video.kind, video.codec, video.profile) == (0, "video", "h264", "High")
    assert (video.width, video.height, video.rotation) == (640, 360, 0)
    assert (video.display_width, video.display_height) == (640, 360)
    assert video.display_aspect_ratio == "16:9"
    assert video.frame_rate == 25.0
    assert (video.pix_fmt, video.bit_depth, video.field_order) == ("yuv420p", 8, "progressive")
    assert video.hdr is False
    assert video.language == "und"
    assert video.bit_rate is not None
    assert 0 < video.bit_rate < media.bit_rate
    assert (audio.index, audio.kind, audio.codec, audio.profile) == (1, "audio", "aac", "LC")
    assert (audio.channels, audio.channel_layout, audio.sample_rate) == (2, "stereo", 48000)
    assert (audio.width, audio.rotation, audio.frame_rate) == (None, None, None)
    assert audio.duration == pytest.approx(4.0, abs=1024 / 48000)


async def test_a_portrait_phone_clip_is_turned_90_degrees_clockwise(
    prober: Prober, rotated_mp4: Path
) -> None:
    (video,) = (await prober.probe(rotated_mp4)).streams

    assert (video.width, video.height) == (640, 360)
    assert video.rotation == 90
    assert (video.display_width, video.display_height) == (360, 640)


@pytest.mark.parametrize(("rotate_tag", "clockwise"), [(90, 270), (180, 180), (270, 90)])
async def test_every_quarter_turn_is_reported_clockwise(
    prober: Prober, media_factory: MediaFactory, upright_mp4: Path, rotate_tag: int, clockwise: int
) -> None:
    # ffmpeg 5.1 turns the tag into a counter-clockwise matrix (see the rotated_mp4 fixture).
    path = media_factory(
        f"rotated_{rotate_tag}.mp4",
        *("-i", str(upright_mp4), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate_tag}"),
    )

    (video,) = (await prober.probe(path)).streams

    assert video.rotation == clockwise
    assert (video.display_width, video.display_height) == display_size(640, 360, clockwise)


@pytest.mark.parametrize("rotate_tag", [90, 180, 270, None])
def test_pyav_reads_mp4_matrices_as_its_decoder_sees_them(
    media_factory: MediaFactory, upright_mp4: Path, rotate_tag: int | None
) -> None:
    """The adapter's MOV matrix reader against FFmpeg's own answer: a decoded frame's matrix."""
    path = upright_mp4
    if rotate_tag is not None:
        path = media_factory(
            f"rotated_{rotate_tag}.mp4",
            *("-i", str(upright_mp4), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate_tag}"),
        )

    read = pyav_adapter.mov_track_rotations(path, size_of(path))
    with av.open(str(path)) as container:
        streams = list(container.streams)
        decoded = pyav_adapter._decoded_rotations(container, streams, time.monotonic() + 30)

    assert read is not None
    assert decoded == {0: read[0]}


async def test_vp9_webm_and_hevc_mkv_name_their_codecs(
    prober: Prober, vp9_webm: Path, hevc_mkv: Path
) -> None:
    webm = await prober.probe(vp9_webm)
    mkv = await prober.probe(hevc_mkv)

    assert webm.format_name == mkv.format_name == "matroska,webm"
    assert [(s.kind, s.codec) for s in webm.streams] == [("video", "vp9"), ("audio", "opus")]
    assert [(s.kind, s.codec) for s in mkv.streams] == [("video", "hevc"), ("audio", "aac")]
    assert webm.duration == pytest.approx(2.0, abs=1 / 25)
    assert mkv.duration == pytest.approx(1.0, abs=1 / 25)
    for video, size in ((webm.streams[0], (320, 240)), (mkv.streams[0], (320, 240))):
        assert (video.width, video.height, video.rotation) == (*size, 0)
        assert (video.pix_fmt, video.bit_depth) == ("yuv420p", 8)
    assert mkv.streams[0].profile == "Main"
    assert webm.streams[0].profile == "Profile 0"
    assert (webm.streams[1].channels, webm.streams[1].sample_rate) == (2, 48000)


async def test_an_audio_only_file_has_no_video_stream(prober: Prober, audio_m4a: Path) -> None:
    media = await prober.probe(audio_m4a)

    assert media.format_name == MP4_FORMAT
    assert media.video_streams == []
    (audio,) = media.streams
    assert (audio.kind, audio.codec) == ("audio", "aac")
    assert (audio.channels, audio.sample_rate) == (2, 48000)
    assert media.duration == pytest.approx(2.0, abs=1024 / 48000)


async def test_colour_hdr_and_interlacing_use_ffmpeg_names(
    prober: Prober, hdr_tt_mkv: Path
) -> None:
    (video,) = (await prober.probe(hdr_tt_mkv)).streams

    assert video.color is not None
    assert (video.color.range, video.color.space) == ("pc", "bt2020nc")
    assert (video.color.transfer, video.color.primaries) == ("smpte2084", "bt2020")
    assert video.hdr is True
    assert (video.pix_fmt, video.bit_depth, video.profile) == ("yuv420p10le", 10, "High 10")
    assert video.field_order == "tt"


@pytest.mark.parametrize("fixture_name", GENERATED)
async def test_both_probers_agree_on_generated_clips(
    request: pytest.FixtureRequest, fixture_name: str
) -> None:
    path: Path = request.getfixturevalue(fixture_name)
    ffprobe, pyav = make_prober("ffprobe"), make_prober("pyav")

    assert_same_description(await ffprobe.probe(path), await pyav.probe(path))


# -- the shared sample files -------------------------------------------------------------------
@pytest.mark.parametrize("file_name", SHARED)
async def test_both_probers_agree_on_shared_files(shared_media_dir: Path, file_name: str) -> None:
    path = shared_media_dir / file_name
    ffprobe, pyav = make_prober("ffprobe"), make_prober("pyav")

    assert_same_description(await ffprobe.probe(path), await pyav.probe(path))


@pytest.mark.parametrize("file_name", SHARED)
async def test_shared_files_match_the_manifest(
    prober: Prober,
    shared_media_dir: Path,
    shared_media_manifest: list[ManifestEntry],
    file_name: str,
) -> None:
    entry = next(e for e in shared_media_manifest if e.file == file_name)
    media = await prober.probe(shared_media_dir / file_name)

    assert media.format_name == entry.format_name
    assert media.size_bytes == entry.size_bytes
    slack = MVHD_SLACK if media.format_name == MP4_FORMAT else 0.0
    assert media.duration == pytest.approx(entry.duration, abs=one_frame(media) + slack)
    pictures = [s for s in media.streams if s.kind in ("video", "cover_art")]
    if entry.video_codec is None:
        assert pictures == []
    else:
        picture = pictures[0]
        assert (picture.codec, picture.width, picture.height) == (
            entry.video_codec,
            entry.width,
            entry.height,
        )
        if picture.kind == "video":
            # The manifest keeps ffprobe's counter-clockwise angle; ours is clockwise.
            expected = normalise_rotation(-entry.rotation) if entry.rotation else 0
            assert picture.rotation == expected
            assert entry.width is not None
            assert entry.height is not None
            assert (picture.display_width, picture.display_height) == display_size(
                entry.width, entry.height, expected
            )
    audio = media.audio_streams
    if entry.audio_codec is None:
        assert audio == []
    else:
        assert (audio[0].codec, audio[0].channels, audio[0].sample_rate) == (
            entry.audio_codec,
            entry.channels,
            entry.sample_rate,
        )


def packet_rate(path: Path) -> float | None:
    """Frames per second measured on the file: video packets over the span of their times."""
    with av.open(str(path)) as container:
        videos = [
            s
            for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not videos:
            return None
        stream = videos[0]
        assert stream.time_base is not None
        times = sorted(
            float(p.pts * stream.time_base)
            for p in container.demux(stream)
            if p.pts is not None and p.size
        )
    return (len(times) - 1) / (times[-1] - times[0])


@pytest.mark.parametrize("file_name", SHARED)
async def test_the_frame_rate_is_the_streams_never_its_time_base(
    prober: Prober, shared_media_dir: Path, file_name: str
) -> None:
    """Matroska and FLV count time in milliseconds; FFmpeg's average rate of such a file can
    be that tick (1000 for ``mkv_sample_with_srt.mkv``, a 60 fps clip)."""
    path = shared_media_dir / file_name
    measured = packet_rate(path)
    media = await prober.probe(path)

    videos = media.video_streams
    if measured is None or not videos:
        assert all(s.frame_rate is None for s in media.streams)
        return
    assert videos[0].frame_rate == pytest.approx(measured, rel=0.05)


async def test_an_mp3s_album_art_is_cover_art_not_video(
    prober: Prober, shared_media_dir: Path
) -> None:
    media = await prober.probe(shared_media_dir / "mp3_bear-id3.mp3")

    assert [(s.kind, s.codec) for s in media.streams] == [("audio", "mp3"), ("cover_art", "mjpeg")]
    assert media.video_streams == []
    art = media.streams[1]
    assert (art.width, art.height, art.frame_rate, art.rotation) == (1400, 1400, None, None)


async def test_an_m4as_cover_picture_is_cover_art(prober: Prober, cover_art_m4a: Path) -> None:
    media = await prober.probe(cover_art_m4a)

    assert [(s.kind, s.codec) for s in media.streams] == [("audio", "aac"), ("cover_art", "mjpeg")]
    assert (media.streams[1].width, media.streams[1].height) == (64, 64)


async def test_hlg_video_is_hdr(prober: Prober, shared_media_dir: Path) -> None:
    media = await prober.probe(shared_media_dir / "mp4_hlg10-color-test.mp4")

    (video,) = media.video_streams
    assert video.color is not None
    assert (video.color.transfer, video.color.primaries) == ("arib-std-b67", "bt2020")
    assert video.hdr is True
    assert (video.codec, video.profile, video.bit_depth) == ("hevc", "Main 10", 10)


async def test_chapters_are_read_with_times_and_titles(
    prober: Prober, shared_media_dir: Path
) -> None:
    media = await prober.probe(shared_media_dir / "mp4_sample_with_chapters.mp4")

    assert [(c.index, c.start, c.end, c.title) for c in media.chapters] == [
        (0, 0.0, 0.201, "Chapter 1"),
        (1, 0.201, 0.8, "Chapter 2"),
        (2, 0.8, 0.85, "Chapter 3"),
    ]
    assert [s.kind for s in media.streams] == ["video", "audio", "data"]


# -- broken and hostile files ------------------------------------------------------------------
@pytest.mark.parametrize("fixture_name", BROKEN)
async def test_broken_files_are_invalid_media(
    prober: Prober, request: pytest.FixtureRequest, fixture_name: str
) -> None:
    path: Path = request.getfixturevalue(fixture_name)

    with pytest.raises(InvalidMedia) as raised:
        await prober.probe(path)

    assert type(raised.value) is InvalidMedia
    assert raised.value.code == "invalid_media"
    assert path.name in raised.value.message
    assert str(path.parent) not in raised.value.message  # no server paths in client errors


async def test_a_file_without_audio_or_video_is_invalid_media(
    prober: Prober, media_factory: MediaFactory, media_dir: Path
) -> None:
    subtitles = media_dir / "only.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    path = media_factory("subtitles_only.mkv", "-i", str(subtitles))

    with pytest.raises(InvalidMedia, match="no audio or video"):
        await prober.probe(path)


@pytest.mark.parametrize("bait", BAITS)
async def test_playlists_and_file_lists_are_refused_and_what_they_name_is_never_opened(
    prober: Prober,
    request: pytest.FixtureRequest,
    bait: str,
    sentinel_fifo: Path,
    sentinel_file: Path,
) -> None:
    path: Path = request.getfixturevalue(bait)
    atime_works = atime_is_recorded(sentinel_file.parent)
    past = backdate_atime(sentinel_file)

    with FifoWatch(sentinel_fifo) as watch, pytest.raises(InvalidMedia) as raised:
        await asyncio.wait_for(prober.probe(path), timeout=20)

    assert type(raised.value) is InvalidMedia
    assert watch.opened == 0, "the prober opened a file the upload names"
    if atime_works:  # else the FIFO alone is the proof
        assert atime_of(sentinel_file) == pytest.approx(past, abs=1)


@pytest.mark.parametrize(("library", "bait"), sorted(LIVE_BAITS))
def test_without_the_allow_list_the_library_would_open_what_the_bait_names(
    request: pytest.FixtureRequest, library: str, bait: str, sentinel_fifo: Path
) -> None:
    """The control for the test above: each bait is live, and the watch sees it taken."""
    path: Path = request.getfixturevalue(bait)

    with FifoWatch(sentinel_fifo) as watch:
        if library == "ffprobe":
            command = [require_binary("ffprobe"), "-v", "quiet", "-protocol_whitelist", "file,pipe"]
            subprocess.run(
                [*command, "-show_format", f"file:{path}"], capture_output=True, timeout=30
            )
        else:
            with contextlib.suppress(av.error.FFmpegError):
                av.open(f"file:{path}", container_options={"protocol_whitelist": "file"}).close()

    assert watch.opened > 0


async def test_a_name_starting_with_a_dash_is_a_file_not_an_option(
    prober: Prober, h264_aac_mp4: Path, tmp_path: Path
) -> None:
    path = copy_file(h264_aac_mp4, tmp_path / "-version.mp4")

    media = await prober.probe(path)

    assert [s.codec for s in media.streams] == ["h264", "aac"]


async def test_a_fifo_is_refused_at_once(prober: Prober, tmp_path: Path) -> None:
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    started = time.monotonic()
    try:
        with pytest.raises(InvalidMedia, match="not a regular file"):
            await asyncio.wait_for(prober.probe(fifo), timeout=5)
    finally:
        _release_readers(fifo)

    assert time.monotonic() - started < 2


def _release_readers(fifo: Path) -> None:
    """Let a reader a regression left blocked on the FIFO go, so the suite cannot hang."""
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading, as it should be
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


# -- running out of time, or of ffprobe --------------------------------------------------------
async def test_an_ffprobe_timeout_kills_its_process_group_and_leaves_no_zombie(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    # A stand-in binary (the only one in this suite): it hangs, with a child of its own.
    pids = tmp_path / "pids"
    slow = tmp_path / "slow-ffprobe"
    slow.write_text(f"#!/bin/sh\necho $$ > {pids}\nsleep 60 &\necho $! >> {pids}\nwait\n")
    slow.chmod(slow.stat().st_mode | stat.S_IXUSR)
    prober = FfprobeProber(binary=str(slow), timeout=0.5)
    started = time.monotonic()

    with pytest.raises(ProbeTimeout) as raised:
        await prober.probe(h264_aac_mp4)

    assert raised.value.code == "probe_timeout"
    assert time.monotonic() - started < 5
    shell, sleeper = (int(pid) for pid in pids.read_text().split())
    assert _state(shell) is None, "ffprobe's process was not reaped"
    # Its child was in the same group: killed too (gone, or dead awaiting its new parent).
    assert _state(sleeper) in (None, "Z")


def _state(pid: int) -> str | None:
    """The process's state letter from /proc, or ``None`` when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return fields[0]


async def test_a_pyav_probe_out_of_time_is_probe_timeout(h264_aac_mp4: Path) -> None:
    with pytest.raises(ProbeTimeout):
        await shared_pyav_prober(timeout=1e-9).probe(h264_aac_mp4)


async def test_a_missing_ffprobe_is_prober_unavailable(tmp_path: Path, h264_aac_mp4: Path) -> None:
    prober = FfprobeProber(binary=str(tmp_path / "no-such-ffprobe"))

    with pytest.raises(ProberUnavailable):
        await prober.probe(h264_aac_mp4)
    with pytest.raises(ProberUnavailable):
        await prober.check()


async def test_check_passes_when_the_prober_works(prober: Prober) -> None:
    await prober.check()


# -- the allow-list ----------------------------------------------------------------------------
# -- metadata bombs ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tag_bomb_mkv(media_dir: Path) -> Path:
    """40,000 Matroska tags: seconds of FFmpeg CPU if parsed (see metadata_bombs.py)."""
    return write_matroska_with_tags(media_dir / "tag_bomb.mkv", 40_000)


@pytest.fixture(scope="session")
def few_tags_mkv(media_dir: Path) -> Path:
    """The same file with five tags: the normal probe to compare with."""
    return write_matroska_with_tags(media_dir / "few_tags.mkv", 5)


async def _timed_probe(prober: Prober, path: Path) -> tuple[float, MediaInfo | Exception]:
    """Wall time and CPU time of this process and its children, and the outcome."""
    started = time.perf_counter()
    try:
        outcome: MediaInfo | Exception = await prober.probe(path)
    except InvalidMedia as exc:
        outcome = exc
    return time.perf_counter() - started, outcome


async def test_a_tag_bomb_is_refused_before_ffmpeg_parses_it(
    prober: Prober, tag_bomb_mkv: Path, few_tags_mkv: Path
) -> None:
    """40,000 tags cost FFmpeg ≈ 6 s of CPU; the budget refuses the file from its structure in
    about the time a normal probe takes (a generous ratio, measured in this run)."""
    await prober.probe(few_tags_mkv)  # warm: a worker started, ffprobe's pages cached
    normal, described = await _timed_probe(prober, few_tags_mkv)
    assert isinstance(described, MediaInfo)
    assert described.tags  # a few tags are fine
    refused, outcome = await _timed_probe(prober, tag_bomb_mkv)
    assert isinstance(outcome, MetadataTooLarge), outcome
    assert outcome.code == "metadata_too_large"
    assert refused < max(20 * normal, 1.0), (refused, normal)


@pytest.fixture(scope="session")
def moov_last_m4a(media_factory: MediaFactory) -> Path:
    """AAC in MP4 with its ``moov`` last (no faststart), so a box can be added to it."""
    return media_factory(
        "moov_last.m4a",
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1"),
        *("-c:a", "aac", "-f", "mp4"),
    )


async def test_an_mp4_with_too_many_metadata_items_is_refused(
    prober: Prober, moov_last_m4a: Path, tmp_path: Path
) -> None:
    bomb = add_mp4_metadata(moov_last_m4a, tmp_path / "udta_bomb.m4a", 5_000)
    within = add_mp4_metadata(moov_last_m4a, tmp_path / "udta_ok.m4a", 20)
    assert (await prober.probe(within)).format_name == "mov,mp4,m4a,3gp,3g2,mj2"
    with pytest.raises(MetadataTooLarge):
        await prober.probe(bomb)


@pytest.fixture(scope="session")
def ffmpeg_tagged_mkv(media_factory: MediaFactory, media_dir: Path) -> Path:
    """5,000 tags written by ffmpeg itself, which puts Tags after the clusters (found through
    the SeekHead or by walking past the clusters)."""
    metadata = media_dir / "5000_tags.ffmetadata"
    metadata.write_text(";FFMETADATA1\n" + "".join(f"k{i}=v{i}\n" for i in range(5000)))
    return media_factory(
        "ffmpeg_tagged.mkv",
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=1"),
        *("-f", "ffmetadata", "-i", str(metadata), "-map", "0:a", "-map_metadata", "1"),
        *("-c:a", "pcm_s16le"),
    )


async def test_an_ffmpeg_written_file_with_too_many_tags_is_refused(
    prober: Prober, ffmpeg_tagged_mkv: Path
) -> None:
    with pytest.raises(MetadataTooLarge):
        await prober.probe(ffmpeg_tagged_mkv)


@pytest.fixture(scope="session")
def tagged_flac(media_factory: MediaFactory, media_dir: Path) -> Path:
    """FLAC with 5,000 Vorbis comments, written by ffmpeg."""
    metadata = media_dir / "flac_tags.ffmetadata"
    metadata.write_text(";FFMETADATA1\n" + "".join(f"k{i}=v{i}\n" for i in range(5000)))
    return media_factory(
        "tagged.flac",
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=1"),
        *("-f", "ffmetadata", "-i", str(metadata), "-map", "0:a", "-map_metadata", "1"),
    )


async def test_a_flac_with_too_many_comments_is_refused(prober: Prober, tagged_flac: Path) -> None:
    with pytest.raises(MetadataTooLarge):
        await prober.probe(tagged_flac)


async def test_the_budget_is_a_setting(few_tags_mkv: Path, tag_bomb_mkv: Path) -> None:
    """Below the file's five tags the small file is refused too; with the budget off (0) the
    pre-scan lets a file through (FFmpeg then judges it)."""
    tight = FfprobeProber(
        binary=require_binary("ffprobe"), limits=DecodeLimits(max_metadata_entries=4)
    )
    with pytest.raises(MetadataTooLarge):
        await tight.probe(few_tags_mkv)
    by_bytes = FfprobeProber(
        binary=require_binary("ffprobe"), limits=DecodeLimits(max_metadata_bytes=1000)
    )
    with pytest.raises(MetadataTooLarge):
        await by_bytes.probe(tag_bomb_mkv)
    check_metadata(tag_bomb_mkv, MetadataBudget(entries=0, bytes=0))  # off: no refusal


def test_every_allowed_demuxer_exists_in_both_ffmpegs_and_no_playlist_format_is_allowed() -> None:
    ffprobe = require_binary("ffprobe")
    listing = subprocess.run(
        [ffprobe, "-hide_banner", "-demuxers"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    _, _, table = listing.partition("--\n")
    ffprobe_names = {part for line in table.splitlines() for part in line.split()[1].split(",")}

    assert set(MEDIA_DEMUXERS) <= ffprobe_names
    pyav_allowed = pyav_adapter.OPEN_OPTIONS["format_whitelist"].split(",")
    assert pyav_allowed == list(MEDIA_DEMUXERS)  # none missing from PyAV's FFmpeg either
    refused = {"hls", "dash", "concat", "image2", "image2pipe", "lavfi", "tee", "ffmetadata"}
    refused |= {"sdp", "rtp", "rtsp", "webm_dash_manifest", "imf", "data", "srt", "tty"}
    assert not refused & set(format_whitelist().split(","))
