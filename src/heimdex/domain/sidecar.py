"""The sidecar v1 document (DESIGN.md §6): what Heimdex knows of one asset, as versioned JSON.

The shape is a public contract, published as a JSON Schema (``heimdex.schemas``, the file
``sidecar-v1.schema.json``, served at ``GET /v1/schemas/sidecar/v1``); a change that is not purely
additive is a v2.
Every key is always present: unknown values are ``null``, never guessed and never left out, so a
client can tell "not known" from "not written". Times are seconds, sizes are bytes.

The document is a pure function of the asset, its thumbnails and the generator, and it carries no
timestamp: a re-run of the same job writes byte-for-byte the same file, so a retry or a crashed
worker's second attempt is invisible to anyone reading it. When it was made is the job's
``finished_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal
from uuid import UUID

import msgspec

from heimdex.domain.media import Chapter, MediaInfo, StreamInfo
from heimdex.domain.model import Asset, StoryboardTile
from heimdex.domain.storage_keys import THUMBNAIL_FORMATS

SCHEMA_ID: Final = "heimdex.sidecar/v1"
"""The value of the document's ``schema`` key: names the shape, and its version."""

SchemaId = Literal["heimdex.sidecar/v1"]


class SidecarSource(msgspec.Struct, frozen=True, kw_only=True):
    """The uploaded file as the client sent it and Heimdex verified it."""

    name: str
    # ``bytes`` on the wire (DESIGN.md §6); a Python attribute of that name would shadow the type.
    size_bytes: int = msgspec.field(name="bytes")
    sha256: str
    content_type: str


class SidecarContainer(msgspec.Struct, frozen=True, kw_only=True):
    """The container (file format) level of the media description."""

    format_name: str
    duration: float | None
    bit_rate: int | None
    tags: dict[str, str]


class ThumbnailRef(msgspec.Struct, frozen=True, kw_only=True):
    """A stored thumbnail: when in the video it was taken, where it is, and its pixel size."""

    index: int
    time: float
    key: str
    width: int
    height: int
    format: str

    def __post_init__(self) -> None:
        # The schema allows only these; refusing here keeps an invalid document from being written.
        if self.format not in THUMBNAIL_FORMATS:
            raise ValueError(
                f"thumbnail format {self.format!r} is not one of {sorted(THUMBNAIL_FORMATS)}"
            )


ThumbnailShortfall = Literal["no_video", "fewer_frames"]


class ThumbnailSummary(msgspec.Struct, frozen=True, kw_only=True):
    """How many thumbnails were asked for and made, and why fewer when fewer.

    Thumbnail i is a frame from the i-th of ``requested`` equal parts of the duration, so a part
    no frame lies in gives none: ``fewer_frames`` — the video has fewer frames than
    ``requested``, or ends well before the file does (audio or subtitles run on).
    ``no_video``: the asset has no video stream, so no thumbnails at all.
    """

    requested: int
    made: int
    shortfall: ThumbnailShortfall | None

    @classmethod
    def of(cls, requested: int, made: int, *, has_video: bool) -> ThumbnailSummary:
        shortfall: ThumbnailShortfall | None = None
        if not has_video and requested > 0:
            shortfall = "no_video"
        elif made < requested:
            shortfall = "fewer_frames"
        return cls(requested=requested, made=made, shortfall=shortfall)


class SpriteRef(msgspec.Struct, frozen=True, kw_only=True):
    """A stored sprite sheet of the storyboard."""

    index: int
    key: str
    width: int
    height: int
    format: str


class StoryboardRef(msgspec.Struct, frozen=True, kw_only=True):
    """The storyboard: a tile every ``interval`` seconds (each standing for ``start`` ≤ t <
    ``end`` and showing the frame at ``time``), at ``x``, ``y``, ``w``, ``h`` on sprite sheet
    ``sprite``."""

    interval: float
    tile_width: int
    tile_height: int
    format: str
    sprites: list[SpriteRef]
    tiles: list[StoryboardTile]


PosterChooser = Literal["auto", "user"]


class PosterRef(msgspec.Struct, frozen=True, kw_only=True):
    """The stored poster: the frame shown at ``time``, and who chose it (``auto``: the rule;
    ``user``: ``PUT /v1/assets/{id}/poster``)."""

    time: float
    key: str
    width: int
    height: int
    format: str
    chosen_by: PosterChooser


class Generator(msgspec.Struct, frozen=True, kw_only=True):
    """What made the document: Heimdex's version and the prober and thumbnailer adapters' names."""

    name: str = "heimdex"
    version: str
    prober: str
    thumbnailer: str


class SidecarDocument(msgspec.Struct, frozen=True, kw_only=True):
    """The sidecar v1 document. Field order is the order of the keys in the JSON.

    ``container``, ``streams`` and ``chapters`` are the media description spread out for readers
    who want the common parts at the top level; ``media`` is the whole description, exactly as
    the probe endpoint answers it, so a client that already parses one parses the other.
    """

    schema: SchemaId = SCHEMA_ID
    asset_id: UUID
    org_id: str
    source: SidecarSource
    container: SidecarContainer
    streams: list[StreamInfo]
    chapters: list[Chapter]
    media: MediaInfo
    thumbnails: list[ThumbnailRef]
    generator: Generator
    # Added in v1 after its first release: optional in the schema (older documents lack it),
    # always written now.
    thumbnail_summary: ThumbnailSummary | None = None
    # Added later still, optional the same way: null when not made (no video, or
    # ``storyboard: false``).
    storyboard: StoryboardRef | None = None
    poster: PosterRef | None = None


def build_sidecar(
    asset: Asset,
    thumbnails: Sequence[ThumbnailRef],
    generator: Generator,
    *,
    summary: ThumbnailSummary | None = None,
    storyboard: StoryboardRef | None = None,
    poster: PosterRef | None = None,
) -> SidecarDocument:
    """The sidecar of ``asset`` with its stored ``thumbnails`` (empty for audio-only media) and,
    when known, how they compare to what was asked for."""
    media = asset.media
    return SidecarDocument(
        asset_id=asset.id,
        org_id=asset.org_id,
        source=SidecarSource(
            name=asset.source_name,
            size_bytes=asset.size_bytes,
            sha256=asset.sha256,
            content_type=asset.content_type,
        ),
        container=SidecarContainer(
            format_name=media.format_name,
            duration=media.duration,
            bit_rate=media.bit_rate,
            tags=dict(media.tags),
        ),
        streams=list(media.streams),
        chapters=list(media.chapters),
        media=media,
        # By index, whatever order the thumbnailer finished them in: same input, same bytes.
        thumbnails=sorted(thumbnails, key=lambda t: t.index),
        generator=generator,
        thumbnail_summary=summary,
        storyboard=storyboard,
        poster=poster,
    )


# "deterministic" keeps struct fields in declaration order (readable: ``schema`` first) and sorts
# dict keys, so tags read back from a database that reorders JSON keys (PostgreSQL's jsonb) still
# encode to the same bytes.
_ENCODER: Final = msgspec.json.Encoder(order="deterministic")


def encode_sidecar(document: SidecarDocument) -> bytes:
    """The document as UTF-8 JSON, indented for people and ending in a newline.

    Deterministic: the same document always encodes to the same bytes.
    """
    return msgspec.json.format(_ENCODER.encode(document), indent=2) + b"\n"
