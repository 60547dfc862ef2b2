"""The sidecar v1 document and its published JSON Schema.

The media descriptions below are what the PyAV prober says of the shared sample files
(``../shared/media``), so the documents are the ones real assets produce.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import pytest
from jsonschema import Draft202012Validator

from heimdex.domain.media import Chapter, Color, MediaInfo, StreamInfo
from heimdex.domain.model import Asset, AssetStatus
from heimdex.domain.sidecar import (
    SCHEMA_ID,
    Generator,
    SidecarContainer,
    SidecarDocument,
    SidecarSource,
    ThumbnailRef,
    ThumbnailSummary,
    build_sidecar,
    encode_sidecar,
)
from heimdex.domain.storage_keys import thumbnail_key
from heimdex.schemas import SIDECAR_V1_SCHEMA_ID, sidecar_schema_v1

ORG = "acme"
ASSET_ID = UUID("6f1c1f34-8f3e-4d59-9a55-3c1a8e0f2b71")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
GENERATOR = Generator(version="0.1.0", prober="pyav", thumbnailer="pyav")
NO_COLOR = Color()

Json = dict[str, Any]


# -- real-shaped media -------------------------------------------------------------------------


def h264_aac() -> MediaInfo:
    """mp4_sample_with_metadata.mp4: H.264 High + AAC, container tags."""
    return MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=1.067211,
        bit_rate=765509,
        size_bytes=102120,
        tags={
            "major_brand": "isom",
            "creation_time": "2016-05-31T17:01:35.000000Z",
            "artist": "Test Artist",
            "location": "+40.680-074.500/",
        },
        streams=[
            StreamInfo(
                index=0,
                kind="video",
                codec="h264",
                profile="High",
                bit_rate=718289,
                duration=1.001,
                language="und",
                tags={"language": "und", "handler_name": "VideoHandler"},
                width=1080,
                height=720,
                rotation=0,
                display_width=1080,
                display_height=720,
                display_aspect_ratio="3:2",
                frame_rate=29.97002997002997,
                pix_fmt="yuv420p",
                bit_depth=8,
                color=NO_COLOR,
                hdr=False,
                field_order="progressive",
            ),
            StreamInfo(
                index=1,
                kind="audio",
                codec="aac",
                profile="LC",
                bit_rate=74502,
                duration=1.02322,
                language="und",
                tags={"language": "und", "handler_name": "SoundHandler"},
                channels=1,
                channel_layout="mono",
                sample_rate=44100,
            ),
        ],
    )


def rotated_90() -> MediaInfo:
    """A phone's portrait clip: stored 1280x720, turned 90° clockwise to show 720x1280."""
    return MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=4.971633,
        bit_rate=4088322,
        size_bytes=2540705,
        tags={"major_brand": "isom", "encoder": "Lavf60.16.100"},
        streams=[
            StreamInfo(
                index=0,
                kind="video",
                codec="h264",
                profile="Constrained Baseline",
                bit_rate=3950120,
                duration=4.971633,
                language="eng",
                tags={"language": "eng", "handler_name": "VideoHandle"},
                width=1280,
                height=720,
                rotation=90,
                display_width=720,
                display_height=1280,
                frame_rate=29.97002997002997,
                pix_fmt="yuv420p",
                bit_depth=8,
                color=Color(range="tv", space="bt709", transfer="bt709", primaries="bt709"),
                hdr=False,
                field_order="progressive",
            ),
            StreamInfo(
                index=1,
                kind="audio",
                codec="aac",
                profile="LC",
                bit_rate=129162,
                duration=4.968617,
                language="eng",
                channels=2,
                channel_layout="stereo",
                sample_rate=44100,
            ),
        ],
    )


def audio_only() -> MediaInfo:
    """mp4_sample_audio_only.mp4: one AAC track, nothing to take a picture of."""
    return MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=1.044898,
        bit_rate=80934,
        size_bytes=10571,
        tags={"major_brand": "isom"},
        streams=[
            StreamInfo(
                index=0,
                kind="audio",
                codec="aac",
                profile="LC",
                bit_rate=72956,
                duration=1.044898,
                language="und",
                channels=1,
                channel_layout="mono",
                sample_rate=44100,
            )
        ],
    )


def hdr_hlg() -> MediaInfo:
    """mp4_hlg10-color-test.mp4: 10-bit HEVC with the HLG transfer, audio first."""
    return MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=0.3001,
        bit_rate=9100459,
        size_bytes=341381,
        tags={"major_brand": "mp42", "com.android.version": "14"},
        streams=[
            StreamInfo(
                index=0,
                kind="audio",
                codec="aac",
                profile="LC",
                bit_rate=185517,
                duration=0.288792,
                language="eng",
                channels=2,
                channel_layout="stereo",
                sample_rate=48000,
            ),
            StreamInfo(
                index=1,
                kind="video",
                codec="hevc",
                profile="Main 10",
                bit_rate=8834175,
                duration=0.3001,
                language="eng",
                width=1920,
                height=1080,
                rotation=0,
                display_width=1920,
                display_height=1080,
                frame_rate=29.990003332222592,
                pix_fmt="yuv420p10le",
                bit_depth=10,
                color=Color(
                    range="tv", space="bt2020nc", transfer="arib-std-b67", primaries="bt2020"
                ),
                hdr=True,
            ),
        ],
    )


def cover_art_mp3() -> MediaInfo:
    """mp3_bear-id3.mp3: an MP3 with album art and two chapters; the art is not video."""
    return MediaInfo(
        format_name="mp3",
        duration=2.695914,
        bit_rate=231176,
        size_bytes=77904,
        tags={"title": "Test title", "id3v2_priv.test@gmail.com": "Test data"},
        streams=[
            StreamInfo(
                index=0,
                kind="audio",
                codec="mp3",
                bit_rate=113241,
                duration=2.695914,
                channels=2,
                channel_layout="stereo",
                sample_rate=48000,
            ),
            StreamInfo(
                index=1,
                kind="cover_art",
                codec="mjpeg",
                profile="Progressive",
                duration=2.695911,
                title="Test description",
                tags={"title": "Test description", "comment": "Other"},
                width=1400,
                height=1400,
                display_aspect_ratio="1:1",
                pix_fmt="yuvj420p",
                bit_depth=8,
                color=Color(range="pc", space="bt470bg"),
                hdr=False,
            ),
        ],
        chapters=[
            Chapter(index=0, start=0.0, end=0.6, title="Chapter title"),
            Chapter(index=1, start=0.6, end=1.2, title=None),
        ],
    )


def with_subtitles() -> MediaInfo:
    """mkv_sample_with_srt.mkv: H.264, AC-3 and an English SubRip track; no video bit rate."""
    return MediaInfo(
        format_name="matroska,webm",
        duration=1.234,
        bit_rate=669685,
        size_bytes=103299,
        tags={"ENCODER": "Lavf58.29.100"},
        streams=[
            StreamInfo(
                index=0,
                kind="video",
                codec="h264",
                profile="High",
                tags={"DURATION": "00:00:00.968000000"},
                width=1080,
                height=720,
                rotation=0,
                display_width=1080,
                display_height=720,
                display_aspect_ratio="3:2",
                frame_rate=1000.0,
                pix_fmt="yuv420p",
                bit_depth=8,
                color=NO_COLOR,
                hdr=False,
                field_order="progressive",
            ),
            StreamInfo(
                index=1,
                kind="audio",
                codec="ac3",
                bit_rate=96000,
                channels=1,
                channel_layout="mono",
                sample_rate=44100,
            ),
            StreamInfo(
                index=2,
                kind="subtitle",
                codec="subrip",
                language="eng",
                title="Subs Label",
                tags={"language": "eng", "title": "Subs Label"},
            ),
        ],
    )


def mostly_unknown() -> MediaInfo:
    """A stream the prober could say almost nothing of: every unknown must still be there."""
    return MediaInfo(
        format_name="mpegts",
        duration=None,
        bit_rate=None,
        size_bytes=1915720,
        streams=[
            StreamInfo(index=0, kind="video", codec=None),
            StreamInfo(index=1, kind="audio", codec="mp2"),
            StreamInfo(index=2, kind="data", codec=None),
        ],
    )


def thumbs(media: MediaInfo, count: int, fmt: str = "jpg", width: int = 320) -> list[ThumbnailRef]:
    """Refs as the job makes them: upright size, evenly spread times, keys from the layout."""
    videos = media.video_streams
    if not videos:
        return []
    video = videos[0]
    shown_w = video.display_width or video.width or width
    shown_h = video.display_height or video.height or width
    height = round(width * shown_h / shown_w / 2) * 2
    duration = media.duration or 1.0
    return [
        ThumbnailRef(
            index=i,
            time=round(duration * (i + 0.5) / count, 6),
            key=thumbnail_key(ORG, ASSET_ID, i, fmt),
            width=width,
            height=height,
            format=fmt,
        )
        for i in range(count)
    ]


def asset(media: MediaInfo, name: str = "clip.mp4", content_type: str = "video/mp4") -> Asset:
    return Asset(
        id=ASSET_ID,
        org_id=ORG,
        upload_id=UUID("0b5e3c1a-2f44-4c3e-8d7a-5f9e1a2b3c4d"),
        key=f"uploads/{ORG}/0b5e3c1a-2f44-4c3e-8d7a-5f9e1a2b3c4d/{name}",
        source_uri=f"file://uploads/{ORG}/0b5e3c1a-2f44-4c3e-8d7a-5f9e1a2b3c4d/{name}",
        source_name=name,
        size_bytes=media.size_bytes,
        sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        content_type=content_type,
        status=AssetStatus.PROCESSING,
        media=media,
        created_at=NOW,
        updated_at=NOW,
    )


CASES: dict[str, Callable[[], SidecarDocument]] = {
    "h264_aac": lambda: build_sidecar(asset(h264_aac()), thumbs(h264_aac(), 10), GENERATOR),
    "rotated_90": lambda: build_sidecar(
        asset(rotated_90()), thumbs(rotated_90(), 10, "webp"), GENERATOR
    ),
    "audio_only": lambda: build_sidecar(
        asset(audio_only(), "voice.m4a", "audio/mp4"), [], GENERATOR
    ),
    "hdr_hlg": lambda: build_sidecar(asset(hdr_hlg()), thumbs(hdr_hlg(), 3), GENERATOR),
    # A 9-frame clip asked for 10 thumbnails: one per frame, and says so.
    "fewer_frames": lambda: build_sidecar(
        asset(hdr_hlg()),
        thumbs(hdr_hlg(), 9),
        GENERATOR,
        summary=ThumbnailSummary.of(10, 9, has_video=True),
    ),
    "audio_with_summary": lambda: build_sidecar(
        asset(audio_only(), "voice.m4a", "audio/mp4"),
        [],
        GENERATOR,
        summary=ThumbnailSummary.of(10, 0, has_video=False),
    ),
    "cover_art_mp3": lambda: build_sidecar(
        asset(cover_art_mp3(), "bear.mp3", "audio/mpeg"), [], GENERATOR
    ),
    "subtitles": lambda: build_sidecar(
        asset(with_subtitles(), "vidéo été.mkv", "video/x-matroska"),
        thumbs(with_subtitles(), 4),
        Generator(version="0.1.0", prober="ffprobe", thumbnailer="ffmpeg"),
    ),
    "mostly_unknown": lambda: build_sidecar(
        asset(mostly_unknown(), "feed.ts", "video/mp2t"), [], GENERATOR
    ),
}


def as_json(document: SidecarDocument) -> Json:
    decoded: Json = json.loads(encode_sidecar(document))
    return decoded


@pytest.fixture(scope="module")
def schema() -> Json:
    loaded: Json = json.loads(sidecar_schema_v1())
    return loaded


@pytest.fixture(scope="module")
def validator(schema: Json) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture
def valid_document() -> Json:
    return as_json(CASES["h264_aac"]())


# -- the document ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_every_sidecar_validates_against_the_published_schema(
    case: str, validator: Draft202012Validator
) -> None:
    errors = [e.message for e in validator.iter_errors(as_json(CASES[case]()))]
    assert errors == []


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_input_encodes_to_the_same_bytes(case: str) -> None:
    assert encode_sidecar(CASES[case]()) == encode_sidecar(CASES[case]())


def test_tag_and_thumbnail_order_do_not_change_the_bytes() -> None:
    # A database may hand tags back in another order (PostgreSQL's jsonb sorts keys); a
    # thumbnailer may finish out of order.
    media = h264_aac()
    shuffled = msgspec.structs.replace(media, tags=dict(reversed(media.tags.items())))
    refs = thumbs(media, 10)
    one = encode_sidecar(build_sidecar(asset(media), refs, GENERATOR))
    other = encode_sidecar(build_sidecar(asset(shuffled), list(reversed(refs)), GENERATOR))
    assert one == other


def test_the_top_level_keys_come_in_the_documented_order() -> None:
    document = as_json(CASES["h264_aac"]())
    assert list(document) == [
        "schema",
        "asset_id",
        "org_id",
        "source",
        "container",
        "streams",
        "chapters",
        "media",
        "thumbnails",
        "generator",
        "thumbnail_summary",
        "storyboard",
        "poster",
    ]
    assert document["schema"] == SCHEMA_ID == "heimdex.sidecar/v1"
    assert document["asset_id"] == str(ASSET_ID)
    assert document["org_id"] == ORG


def test_source_is_the_verified_upload() -> None:
    document = as_json(CASES["subtitles"]())
    assert document["source"] == {
        "name": "vidéo été.mkv",
        "bytes": 103299,
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "content_type": "video/x-matroska",
    }


def test_media_is_exactly_the_probe_shape_and_the_top_level_repeats_it() -> None:
    media = with_subtitles()
    document = as_json(build_sidecar(asset(media), [], GENERATOR))
    # What the probe endpoint answers: the MediaInfo encoded by msgspec.
    probe_answer = msgspec.json.decode(msgspec.json.encode(media))
    assert document["media"] == probe_answer
    assert document["streams"] == probe_answer["streams"]
    assert document["chapters"] == probe_answer["chapters"]
    assert document["container"] == {
        "format_name": "matroska,webm",
        "duration": 1.234,
        "bit_rate": 669685,
        "tags": {"ENCODER": "Lavf58.29.100"},
    }


def test_every_key_is_present_and_unknowns_are_null() -> None:
    document = as_json(CASES["mostly_unknown"]())
    stream_keys = {f.encode_name for f in msgspec.structs.fields(StreamInfo)}
    for stream in (*document["streams"], *document["media"]["streams"]):
        assert set(stream) == stream_keys
    video, audio, data = document["streams"]
    assert video["codec"] is None
    assert video["width"] is None
    assert video["rotation"] is None
    assert video["color"] is None
    assert video["hdr"] is None
    assert audio["channels"] is None
    assert audio["sample_rate"] is None
    assert data["language"] is None
    assert document["container"]["duration"] is None
    assert document["container"]["bit_rate"] is None
    assert document["media"]["duration"] is None


def test_fields_of_another_kind_are_null() -> None:
    audio, cover = as_json(CASES["cover_art_mp3"]())["streams"]
    assert audio["kind"] == "audio"
    assert (audio["width"], audio["frame_rate"], audio["color"]) == (None, None, None)
    assert cover["kind"] == "cover_art"
    # A still picture: a size, no frame rate and no display turn.
    assert (cover["width"], cover["height"]) == (1400, 1400)
    assert (cover["frame_rate"], cover["rotation"], cover["channels"]) == (None, None, None)
    assert cover["color"] == {
        "range": "pc",
        "space": "bt470bg",
        "transfer": None,
        "primaries": None,
    }


def test_rotation_and_display_size_are_carried_as_probed() -> None:
    document = as_json(CASES["rotated_90"]())
    video = document["streams"][0]
    assert (video["width"], video["height"], video["rotation"]) == (1280, 720, 90)
    assert (video["display_width"], video["display_height"]) == (720, 1280)
    first = document["thumbnails"][0]
    assert first["width"] < first["height"]  # upright
    assert first["format"] == "webp"
    assert first["key"] == f"derived/{ORG}/{ASSET_ID}/thumbs/0000.webp"


def test_hdr_is_described_by_its_transfer() -> None:
    video = as_json(CASES["hdr_hlg"]())["streams"][1]
    assert video["hdr"] is True
    assert video["color"]["transfer"] == "arib-std-b67"
    assert video["bit_depth"] == 10


def test_an_audio_only_asset_has_no_thumbnails() -> None:
    document = as_json(CASES["audio_only"]())
    assert document["thumbnails"] == []
    assert [s["kind"] for s in document["streams"]] == ["audio"]


def test_times_are_seconds_and_sizes_are_integers() -> None:
    document = as_json(CASES["h264_aac"]())
    assert isinstance(document["source"]["bytes"], int)
    assert isinstance(document["media"]["size_bytes"], int)
    assert isinstance(document["container"]["bit_rate"], int)
    assert isinstance(document["container"]["duration"], float)
    assert all(isinstance(t["time"], float) for t in document["thumbnails"])
    assert [t["index"] for t in document["thumbnails"]] == list(range(10))


def test_the_generator_names_the_software() -> None:
    assert as_json(CASES["subtitles"]())["generator"] == {
        "name": "heimdex",
        "version": "0.1.0",
        "prober": "ffprobe",
        "thumbnailer": "ffmpeg",
    }


def test_encoding_is_utf8_json_ending_in_a_newline() -> None:
    raw = encode_sidecar(CASES["subtitles"]())
    assert raw.endswith(b"}\n")
    assert "vidéo été.mkv".encode() in raw


def test_the_document_decodes_back_to_itself() -> None:
    document = CASES["cover_art_mp3"]()
    assert msgspec.json.decode(encode_sidecar(document), type=SidecarDocument) == document


def test_a_thumbnail_in_an_unpublished_format_is_refused() -> None:
    with pytest.raises(ValueError, match="png"):
        ThumbnailRef(index=0, time=0.5, key="k", width=320, height=180, format="png")


# -- the schema --------------------------------------------------------------------------------


def test_the_schema_is_valid_draft_2020_12(schema: Json) -> None:
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SIDECAR_V1_SCHEMA_ID


def _object_schemas(node: Any) -> Iterator[Json]:
    if isinstance(node, dict):
        if "properties" in node:
            yield node
        for value in node.values():
            yield from _object_schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _object_schemas(value)


# Keys added to v1 after its release: optional, so documents written before still validate.
ADDED_IN_V1 = {"thumbnail_summary", "storyboard", "poster"}


def test_the_schema_requires_every_key_and_allows_no_other(schema: Json) -> None:
    objects = list(_object_schemas(schema))
    assert len(objects) == 14  # document, source, container, color, stream, chapter, media, …
    for node in objects:
        assert set(node["required"]) == set(node["properties"]) - ADDED_IN_V1
        assert node["additionalProperties"] is False


def test_a_document_written_before_the_summary_existed_still_validates_and_decodes(
    valid_document: Json, validator: Draft202012Validator
) -> None:
    old = copy.deepcopy(valid_document)
    del old["thumbnail_summary"]

    assert validator.is_valid(old)
    assert msgspec.json.decode(json.dumps(old), type=SidecarDocument).thumbnail_summary is None


def test_the_summary_says_why_there_are_fewer_thumbnails_than_asked_for() -> None:
    assert ThumbnailSummary.of(10, 10, has_video=True).shortfall is None
    assert ThumbnailSummary.of(10, 9, has_video=True).shortfall == "fewer_frames"
    assert ThumbnailSummary.of(10, 0, has_video=False).shortfall == "no_video"
    assert ThumbnailSummary.of(0, 0, has_video=False).shortfall is None  # none asked for
    document = as_json(CASES["fewer_frames"]())
    assert document["thumbnail_summary"] == {
        "requested": 10,
        "made": 9,
        "shortfall": "fewer_frames",
    }


@pytest.mark.parametrize(
    ("struct", "pointer"),
    [
        (SidecarDocument, ""),
        (SidecarSource, "/$defs/source"),
        (SidecarContainer, "/$defs/container"),
        (StreamInfo, "/$defs/stream"),
        (Color, "/$defs/color"),
        (Chapter, "/$defs/chapter"),
        (MediaInfo, "/$defs/media"),
        (ThumbnailRef, "/$defs/thumbnail"),
        (ThumbnailSummary, "/$defs/thumbnail_summary"),
        (Generator, "/$defs/generator"),
    ],
)
def test_the_schema_and_the_structs_name_the_same_keys(
    schema: Json, struct: type[msgspec.Struct], pointer: str
) -> None:
    node = schema
    for part in pointer.split("/")[1:]:
        node = node[part]
    assert [f.encode_name for f in msgspec.structs.fields(struct)] == list(node["properties"])


def _set(path: str, value: Any) -> Callable[[Json], None]:
    def apply(document: Json) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value

    return apply


def _drop(path: str) -> Callable[[Json], None]:
    def apply(document: Json) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]

    return apply


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(_set("schema", "heimdex.sidecar/v2"), id="wrong-schema-value"),
        pytest.param(_drop("schema"), id="missing-schema"),
        pytest.param(_drop("generator"), id="missing-generator"),
        pytest.param(_drop("source.sha256"), id="missing-source-sha256"),
        pytest.param(_drop("streams.0.rotation"), id="missing-stream-key"),
        pytest.param(_drop("media.streams.1.sample_rate"), id="missing-media-stream-key"),
        pytest.param(_drop("thumbnails.0.key"), id="missing-thumbnail-key"),
        pytest.param(_set("generated_by", "someone"), id="extra-top-level-field"),
        pytest.param(_set("streams.0.fps", 25), id="extra-stream-field"),
        pytest.param(_set("thumbnails.0.url", "https://x"), id="extra-thumbnail-field"),
        pytest.param(_set("streams.0.color.gamma", "2.2"), id="extra-color-field"),
        pytest.param(_set("source.bytes", -1), id="negative-source-size"),
        pytest.param(_set("media.size_bytes", -1), id="negative-media-size"),
        pytest.param(_set("container.duration", -1.0), id="negative-duration"),
        pytest.param(_set("source.bytes", 1.5), id="fractional-size"),
        pytest.param(_set("streams.0.rotation", 45), id="rotation-45"),
        pytest.param(_set("media.streams.0.rotation", -90), id="rotation-negative"),
        pytest.param(_set("streams.0.kind", "picture"), id="unknown-kind"),
        pytest.param(_set("thumbnails.0.format", "png"), id="unknown-thumbnail-format"),
        pytest.param(_set("thumbnails.0.width", 0), id="zero-thumbnail-width"),
        pytest.param(_set("thumbnails.0.key", "/etc/passwd"), id="thumbnail-key-off-layout"),
        pytest.param(_set("source.sha256", "ABC"), id="bad-sha256"),
        pytest.param(_set("asset_id", "not-a-uuid"), id="asset-id-not-a-uuid"),
        pytest.param(_set("container.tags.rating", 2), id="non-string-tag"),
        pytest.param(_set("streams.0.field_order", "interlaced"), id="unknown-field-order"),
        pytest.param(_set("streams.1.channels", "2"), id="string-number"),
        pytest.param(_set("thumbnail_summary", {"requested": 1}), id="partial-summary"),
        pytest.param(
            _set("thumbnail_summary", {"requested": 1, "made": 0, "shortfall": "lazy"}),
            id="unknown-shortfall",
        ),
    ],
)
def test_the_schema_rejects_a_broken_document(
    corrupt: Callable[[Json], None], valid_document: Json, validator: Draft202012Validator
) -> None:
    assert validator.is_valid(valid_document)
    broken = copy.deepcopy(valid_document)
    corrupt(broken)
    assert not validator.is_valid(broken)


def test_a_storyboard_and_a_poster_are_listed_and_valid(validator: Draft202012Validator) -> None:
    from heimdex.domain.model import StoryboardTile
    from heimdex.domain.sidecar import PosterRef, SpriteRef, StoryboardRef
    from heimdex.domain.storage_keys import poster_key, sprite_key

    tiles = [
        StoryboardTile(start=i, end=i + 1, time=i, sprite=0, x=160 * i, y=0, w=160, h=90)
        for i in range(4)
    ]
    board = StoryboardRef(
        interval=1.0,
        tile_width=160,
        tile_height=90,
        format="jpg",
        sprites=[
            SpriteRef(
                index=0, key=sprite_key(ORG, ASSET_ID, 0, "jpg"), width=640, height=90, format="jpg"
            )
        ],
        tiles=tiles,
    )
    poster = PosterRef(
        time=2.5,
        key=poster_key(ORG, ASSET_ID, 2.5),
        width=640,
        height=360,
        format="jpg",
        chosen_by="user",
    )
    media = h264_aac()
    document = as_json(
        build_sidecar(asset(media), thumbs(media, 2), GENERATOR, storyboard=board, poster=poster)
    )
    assert [e.message for e in validator.iter_errors(document)] == []
    assert document["poster"]["key"].endswith("/poster/000002500.jpg")
    assert document["storyboard"]["tiles"][3]["x"] == 480
    document["poster"]["chosen_by"] = "someone"
    assert list(validator.iter_errors(document))
