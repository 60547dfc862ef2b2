"""Shared builders of the domain's structs for tests: a valid ``Upload``, ``Asset``, ``Job`` or
``MediaInfo`` with every field set, and what a test cares about given as changes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

from heimdex.domain.media import Chapter, Color, MediaInfo, StreamInfo
from heimdex.domain.model import Asset, AssetStatus, Job, JobKind, JobStatus, Upload, UploadStatus

# Not UTC on purpose: a stored struct must come back as the same instant (and timezone-aware).
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))


def short_media(*, size_bytes: int = 3, format_name: str = "mov,mp4") -> MediaInfo:
    """A description with no streams: for use cases that only carry it along."""
    return MediaInfo(format_name=format_name, duration=2.0, bit_rate=None, size_bytes=size_bytes)


def make_upload(org_id: str, *, at: datetime = T0, **changes: Any) -> Upload:
    """A pending slot created ``at``, open for an hour."""
    upload_id = uuid.uuid4()
    upload = Upload(
        id=upload_id,
        org_id=org_id,
        key=f"uploads/{org_id}/{upload_id}/clip.mp4",
        source_uri=f"local://uploads/{org_id}/{upload_id}/clip.mp4",
        source_name="clip.mp4",
        content_length=412_345,
        content_type="video/mp4",
        declared_sha256="ab" * 32,
        status=UploadStatus.PENDING,
        expires_at=at + timedelta(hours=1),
        created_at=at,
        updated_at=at,
    )
    return msgspec.structs.replace(upload, **changes)


def make_media(
    *,
    duration: float | None = 4.0,
    video: str | None = "h264",
    audio: str | None = "aac",
    display_height: int | None = 640,
) -> MediaInfo:
    """An MP4's description with every field a stream can have: HDR video, stereo audio, tags
    and a chapter."""
    streams: list[StreamInfo] = []
    if video is not None:
        streams.append(
            StreamInfo(
                index=len(streams),
                kind="video",
                codec=video,
                profile="High",
                bit_rate=700_000,
                duration=duration,
                language=None,
                tags={"handler_name": "VideoHandler"},
                width=640,
                height=360,
                rotation=90,
                display_width=360,
                display_height=display_height,
                display_aspect_ratio="9:16",
                frame_rate=29.97002997002997,
                pix_fmt="yuv420p10le",
                bit_depth=10,
                color=Color(range="tv", space="bt2020nc", transfer="smpte2084", primaries="bt2020"),
                hdr=True,
                field_order="progressive",
            )
        )
    if audio is not None:
        streams.append(
            StreamInfo(
                index=len(streams),
                kind="audio",
                codec=audio,
                language="und",
                channels=2,
                channel_layout="stereo",
                sample_rate=48_000,
            )
        )
    return MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=duration,
        bit_rate=812_345,
        size_bytes=412_345,
        tags={"major_brand": "isom", "title": "Ünïcode ☃"},
        streams=streams,
        chapters=[Chapter(index=0, start=0.0, end=2.5, title="Intro")],
    )


def make_asset(upload: Upload, **changes: Any) -> Asset:
    """The committed asset of ``upload``, created when the upload was."""
    asset = Asset(
        id=uuid.uuid4(),
        org_id=upload.org_id,
        upload_id=upload.id,
        key=upload.key,
        source_uri=upload.source_uri,
        source_name=upload.source_name,
        size_bytes=upload.content_length,
        sha256="cd" * 32,
        content_type=upload.content_type,
        status=AssetStatus.COMMITTED,
        media=make_media(),
        created_at=upload.created_at,
        updated_at=upload.created_at,
    )
    return msgspec.structs.replace(asset, **changes)


def make_job(asset: Asset, **changes: Any) -> Job:
    """A queued sidecar job of ``asset``, created when the asset was."""
    job = Job(
        id=uuid.uuid4(),
        org_id=asset.org_id,
        asset_id=asset.id,
        kind=JobKind.SIDECAR,
        status=JobStatus.QUEUED,
        progress=0.0,
        attempts=0,
        max_attempts=5,
        lease_expires_at=None,
        next_attempt_at=None,
        error=None,
        created_at=asset.created_at,
        updated_at=asset.created_at,
    )
    return msgspec.structs.replace(job, **changes)
