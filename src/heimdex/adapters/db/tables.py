"""SQLAlchemy models of the catalogue: the target of the Alembic history in ``migrations/``.

Built on advanced-alchemy's pieces (its UUID primary-key mixin, ``GUID`` and ``DateTimeUTC`` types,
its naming convention) in a registry of our own, so nothing else that imports
advanced-alchemy can add tables to our metadata. Timestamps carry no defaults: the use cases own
the clock and every row's times come from the domain objects.

Every tenant table has an indexed ``org_id``; on PostgreSQL row-level security also filters on
it (see ``migrations/versions/0001_catalogue.py``). These models are the adapters' business only:
repositories map rows to the domain's structs and back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import CommonTableAttributes, create_registry
from advanced_alchemy.mixins import UUIDPrimaryKey
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Column sizes: organisation ids come from tokens, keys and URIs are built by the domain.
ORG_ID_LENGTH = 255
STATUS_LENGTH = 16
SHA256_HEX_LENGTH = 64
KEY_LENGTH = 1024
NAME_LENGTH = 255
#: an S3 multipart upload id (AWS: about 150 characters; other stores differ)
SESSION_LENGTH = 1024
CODEC_LENGTH = 64

# JSON, stored as JSONB on PostgreSQL. (advanced-alchemy's own ``JsonB`` does the same but
# 1.12's fails to attach to a table under SQLAlchemy 2.1: it calls the removed
# ``sqlalchemy.util.portable_instancemethod``.)
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(CommonTableAttributes, DeclarativeBase):
    """Declarative base with advanced-alchemy's type map (UUID → ``GUID``, datetime →
    ``DateTimeUTC``) and naming convention, in Heimdex's own registry."""

    registry = create_registry()
    metadata = registry.metadata
    __abstract__ = True


class UploadRow(UUIDPrimaryKey, Base):
    """An upload slot (``heimdex.domain.model.Upload``)."""

    __tablename__ = "uploads"
    __table_args__ = (UniqueConstraint("source_uri", name="uq_uploads_source_uri"),)

    org_id: Mapped[str] = mapped_column(String(ORG_ID_LENGTH), index=True)
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    source_uri: Mapped[str] = mapped_column(String(KEY_LENGTH))
    source_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    content_length: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(NAME_LENGTH))
    declared_sha256: Mapped[str | None] = mapped_column(String(SHA256_HEX_LENGTH))
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    received_sha256: Mapped[str | None] = mapped_column(String(SHA256_HEX_LENGTH))
    received_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    resumable: Mapped[bool] = mapped_column(Boolean, server_default=false())
    received_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")
    resumable_session: Mapped[str | None] = mapped_column(String(SESSION_LENGTH))


# The abandoned-upload sweep's question: which slots expired without a commit.
Index("ix_uploads_status_expires_at", UploadRow.status, UploadRow.expires_at)


class AssetRow(UUIDPrimaryKey, Base):
    """A committed asset (``heimdex.domain.model.Asset``).

    ``media`` holds the whole media description as JSON; ``duration``, ``video_codec``,
    ``audio_codec`` and ``display_height`` (of the first video and audio streams) are copies of
    the parts the list filters need, so filtering runs in SQL on SQLite and PostgreSQL alike.
    """

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("upload_id", name="uq_assets_upload_id"),)

    org_id: Mapped[str] = mapped_column(String(ORG_ID_LENGTH))
    upload_id: Mapped[UUID] = mapped_column(
        GUID(), ForeignKey("uploads.id", name="fk_assets_upload_id_uploads")
    )
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    source_uri: Mapped[str] = mapped_column(String(KEY_LENGTH))
    source_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LENGTH))
    content_type: Mapped[str] = mapped_column(String(NAME_LENGTH))
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    media: Mapped[dict[str, Any]] = mapped_column(Json)
    duration: Mapped[float | None] = mapped_column(Float)
    video_codec: Mapped[str | None] = mapped_column(String(CODEC_LENGTH))
    audio_codec: Mapped[str | None] = mapped_column(String(CODEC_LENGTH))
    display_height: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


# Newest first, ties by id: the listing's order and its keyset cursor. It starts with org_id, so
# it is also the assets' org index.
Index(
    "ix_assets_org_created",
    AssetRow.org_id,
    AssetRow.created_at.desc(),
    AssetRow.id.desc(),
)
# "Do I already have this file?": the sha256 filter (what `heimdex ingest` asks for each file).
Index("ix_assets_org_sha256", AssetRow.org_id, AssetRow.sha256)


class JobRow(UUIDPrimaryKey, Base):
    """A unit of background work (``heimdex.domain.model.Job``); deleting its asset deletes it."""

    __tablename__ = "jobs"

    org_id: Mapped[str] = mapped_column(String(ORG_ID_LENGTH), index=True)
    asset_id: Mapped[UUID] = mapped_column(
        GUID(),
        ForeignKey("assets.id", name="fk_jobs_asset_id_assets", ondelete="CASCADE"),
        index=True,
    )
    kind: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    progress: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    error_code: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    error_message: Mapped[str | None] = mapped_column(String(4096))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    thumbnail_count: Mapped[int] = mapped_column(Integer, server_default="10")
    thumbnail_width: Mapped[int] = mapped_column(Integer, server_default="320")
    thumbnail_format: Mapped[str] = mapped_column(String(8), server_default="jpg")
    # Both null: no storyboard.
    storyboard_width: Mapped[int | None] = mapped_column(Integer, server_default="160")
    storyboard_format: Mapped[str | None] = mapped_column(String(8), server_default="jpg")
    lease_owner: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


# The sweep's question: which jobs are due, across organisations.
Index("ix_jobs_status_next_attempt", JobRow.status, JobRow.next_attempt_at)
# Whose turn it is: when each organisation's latest job started.
Index("ix_jobs_org_id_started_at", JobRow.org_id, JobRow.started_at)


class IdempotencyRecordRow(UUIDPrimaryKey, Base):
    """A claimed ``Idempotency-Key`` and, once the request finished, its first answer.

    Unique per (org, method, route, key): the claim is one ``INSERT … ON CONFLICT DO NOTHING``.
    ``completed_at`` is NULL while the request runs under its lease (``lease_until``).
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (
        UniqueConstraint(
            "org_id", "method", "route", "key", name="uq_idempotency_records_scope"
        ),  # starts with org_id: it is the org index too
    )

    org_id: Mapped[str] = mapped_column(String(ORG_ID_LENGTH))
    method: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    route: Mapped[str] = mapped_column(String(KEY_LENGTH))
    key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(128))
    lease_until: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(Json)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)


# The job listing's order and keyset cursor, per organisation (``GET /v1/jobs``).
Index("ix_jobs_org_created", JobRow.org_id, JobRow.created_at.desc(), JobRow.id.desc())

URL_LENGTH = 2048


class WebhookEndpointRow(UUIDPrimaryKey, Base):
    """Where an organisation wants its events (``heimdex.domain.webhooks.WebhookEndpoint``).

    ``events`` is a JSON list of event types (empty: all); ``secrets`` a JSON list of
    ``{value, created_at, expires_at}``, kept because every delivery is signed with them.
    """

    __tablename__ = "webhook_endpoints"

    org_id: Mapped[str] = mapped_column(String(ORG_ID_LENGTH), index=True)
    url: Mapped[str] = mapped_column(String(URL_LENGTH))
    events: Mapped[list[str]] = mapped_column(Json)
    description: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    enabled: Mapped[bool] = mapped_column(Boolean)
    secrets: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    disabled_reason: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    failing_since: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class WebhookDeliveryRow(UUIDPrimaryKey, Base):
    """One event on its way to one endpoint (``heimdex.domain.webhooks.WebhookDelivery``): the
    outbox row; deleting its endpoint deletes it."""

    __tablename__ = "webhook_deliveries"

    org_id: Mapped[str] = mapped_column(String(ORG_ID_LENGTH))
    endpoint_id: Mapped[UUID] = mapped_column(
        GUID(),
        ForeignKey(
            "webhook_endpoints.id",
            name="fk_webhook_deliveries_endpoint_id_webhook_endpoints",
            ondelete="CASCADE",
        ),
    )
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


# The deliverer's question (which are due, across organisations) and the listing's order.
Index(
    "ix_webhook_deliveries_status_next_attempt",
    WebhookDeliveryRow.status,
    WebhookDeliveryRow.next_attempt_at,
)
Index(
    "ix_webhook_deliveries_org_endpoint_created",
    WebhookDeliveryRow.org_id,
    WebhookDeliveryRow.endpoint_id,
    WebhookDeliveryRow.created_at.desc(),
    WebhookDeliveryRow.id.desc(),
)


metadata: MetaData = Base.metadata

# The tables row-level security guards on PostgreSQL (each has org_id and a policy on it).
TENANT_TABLES: tuple[str, ...] = (
    "uploads",
    "assets",
    "jobs",
    "idempotency_records",
    "webhook_endpoints",
    "webhook_deliveries",
    "frames",
)


class FrameRow(Base):
    """A fingerprinted frame of an asset (``heimdex.domain.frames``): its time, its 64-bit
    fingerprint as hex, and its four 16-bit bands, each in an indexed column, for the exact
    Hamming search (multi-index hashing: ``adapters/db/frame_repository.py``)."""

    __tablename__ = "frames"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    org_id: Mapped[str] = mapped_column(String(ORG_ID_LENGTH))
    asset_id: Mapped[UUID] = mapped_column(
        GUID(), ForeignKey("assets.id", name="fk_frames_asset_id_assets", ondelete="CASCADE")
    )
    time: Mapped[float] = mapped_column(Float)
    fingerprint: Mapped[str] = mapped_column(String(16))
    b0: Mapped[int] = mapped_column(Integer)
    b1: Mapped[int] = mapped_column(Integer)
    b2: Mapped[int] = mapped_column(Integer)
    b3: Mapped[int] = mapped_column(Integer)


Index("ix_frames_org_asset_time", FrameRow.org_id, FrameRow.asset_id, FrameRow.time)
for _band in range(4):
    Index(f"ix_frames_org_b{_band}", FrameRow.org_id, getattr(FrameRow, f"b{_band}"))
