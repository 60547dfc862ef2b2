"""Outbound webhooks: endpoints an organisation registers, events, and their deliveries.

Events follow Standard Webhooks (standardwebhooks.com): the body ``{"type", "timestamp",
"data"}`` is signed as ``"{webhook-id}.{webhook-timestamp}.{body}"`` with HMAC-SHA256 under each
active secret, and the ``webhook-id`` (the event's id) is the same on every attempt and every
endpoint, so a receiver can deduplicate. Pure: no I/O, the clock comes in as arguments.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import random
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 24
#: how much of a receiver's answer (or of an error) a delivery keeps
MAX_ERROR_BYTES = 1024
#: the Standard Webhooks schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
#: 10 h — about 28 h in all, then the delivery is ``failed``
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
#: each wait is stretched or shrunk by up to this fraction, so receivers coming back from an
#: outage are not hit by every delivery at the same instant
JITTER = 0.1


class WebhookEventType(enum.StrEnum):
    ASSET_CREATED = "asset.created"
    ASSET_READY = "asset.ready"
    ASSET_FAILED = "asset.failed"
    ASSET_DELETED = "asset.deleted"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    UPLOAD_EXPIRED = "upload.expired"


class WebhookSecret(msgspec.Struct, frozen=True, kw_only=True):
    """A signing secret; ``expires_at`` is set when a rotation retires it (it keeps signing
    beside the new one until then)."""

    value: str
    created_at: datetime
    expires_at: datetime | None = None

    def is_active(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


def new_secret() -> str:
    """``whsec_`` and the base64 of 24 random bytes: the form ``standardwebhooks`` reads."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class WebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where an organisation wants its events. ``events`` empty means every type."""

    id: UUID
    org_id: str
    url: str
    events: tuple[WebhookEventType, ...]
    description: str | None
    enabled: bool
    secrets: tuple[WebhookSecret, ...]
    created_at: datetime
    updated_at: datetime
    #: why Heimdex disabled it (410 Gone, failing for days); ``None`` when enabled or when the
    #: organisation disabled it itself
    disabled_reason: str | None = None
    #: when the first of the failures since its last success happened
    failing_since: datetime | None = None

    def wants(self, event_type: WebhookEventType) -> bool:
        return self.enabled and (not self.events or event_type in self.events)

    def signing_secrets(self, now: datetime) -> list[str]:
        return [secret.value for secret in self.secrets if secret.is_active(now)]

    def rotated(self, now: datetime, grace: timedelta) -> tuple[WebhookEndpoint, str]:
        """A new secret; the active ones keep signing for ``grace``, expired ones are dropped."""
        fresh = new_secret()
        kept = tuple(
            msgspec.structs.replace(s, expires_at=min(s.expires_at or now + grace, now + grace))
            for s in self.secrets
            if s.is_active(now)
        )
        secrets_now = (*kept, WebhookSecret(value=fresh, created_at=now))
        return msgspec.structs.replace(self, secrets=secrets_now, updated_at=now), fresh


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event on its way to one endpoint: the outbox row, written in the transaction of the
    change that caused the event. ``payload`` is the exact body every attempt sends."""

    id: UUID
    org_id: str
    endpoint_id: UUID
    event_id: str
    event_type: WebhookEventType
    payload: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    #: a stable code for the last failure (``http_error``, ``timeout``, ``webhook_url_forbidden``…)
    last_error_code: str | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None

    def succeeded(self, now: datetime, status_code: int) -> WebhookDelivery:
        return msgspec.structs.replace(
            self,
            status=DeliveryStatus.SUCCEEDED,
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
            last_attempt_at=now,
            last_status_code=status_code,
            last_error_code=None,
            last_error=None,
            delivered_at=now,
            updated_at=now,
        )

    def attempt_failed(
        self,
        now: datetime,
        *,
        code: str,
        status_code: int | None,
        error: str,
        final: bool = False,
        rng: random.Random | None = None,
    ) -> WebhookDelivery:
        """The next attempt per ``RETRY_SCHEDULE`` (with jitter), or ``failed`` once the
        schedule is spent or ``final`` says retrying cannot help."""
        give_up = final or self.attempts >= MAX_ATTEMPTS
        return msgspec.structs.replace(
            self,
            status=DeliveryStatus.FAILED if give_up else DeliveryStatus.PENDING,
            next_attempt_at=None if give_up else now + retry_delay(self.attempts, rng),
            lease_owner=None,
            lease_expires_at=None,
            last_attempt_at=now,
            last_status_code=status_code,
            last_error_code=code,
            last_error=truncate_error(error),
            updated_at=now,
        )

    def requeued(self, now: datetime) -> WebhookDelivery:
        """Due now again, with a fresh schedule; the ``webhook-id`` stays the same."""
        return msgspec.structs.replace(
            self,
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )


def retry_delay(attempts: int, rng: random.Random | None = None) -> timedelta:
    """The wait after the ``attempts``-th failed attempt, jittered by up to ``JITTER``."""
    base = RETRY_SCHEDULE[min(max(attempts, 1), len(RETRY_SCHEDULE)) - 1]
    factor = 1 + (rng or random).uniform(-JITTER, JITTER)
    return base * factor


def truncate_error(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_ERROR_BYTES:
        return text
    return data[:MAX_ERROR_BYTES].decode(errors="ignore")


def new_event_id(event_uuid: UUID) -> str:
    """The ``webhook-id``: ``msg_`` and the event's uuid, one per event."""
    return f"msg_{event_uuid.hex}"


def event_body(event_type: WebhookEventType, timestamp: datetime, data: dict[str, Any]) -> str:
    """The JSON body every attempt sends: ``{"type", "timestamp", "data"}``."""
    return msgspec.json.encode(
        {"type": event_type.value, "timestamp": timestamp, "data": data}
    ).decode()


def sign(secret: str, event_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` under one ``whsec_`` secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    message = f"{event_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    secrets_in_use: Sequence[str], event_id: str, timestamp: int, body: str
) -> str:
    """One signature per active secret, space-separated (the spec's rotation)."""
    return " ".join(sign(secret, event_id, timestamp, body) for secret in secrets_in_use)


class DeliveryFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which failed deliveries ``heimdex replay`` selects."""

    org_id: str | None = None
    error_code: str | None = None
    since: datetime | None = None
    until: datetime | None = None
