"""Signatures a stock Standard Webhooks library verifies, rotation, and the retry schedule."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from heimdex.domain.webhooks import (
    MAX_ATTEMPTS,
    MAX_ERROR_BYTES,
    RETRY_SCHEDULE,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookSecret,
    event_body,
    new_event_id,
    new_secret,
    retry_delay,
    signature_header,
)

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def headers(secrets: list[str], event_id: str, body: str, at: datetime) -> dict[str, str]:
    stamp = int(at.timestamp())
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature_header(secrets, event_id, stamp, body),
    }


def test_standardwebhooks_verifies_the_signature() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    body = event_body(WebhookEventType.ASSET_READY, NOW, {"asset_id": str(uuid4())})
    event_id = new_event_id(uuid4())
    now = datetime.now(UTC)
    payload = Webhook(secret).verify(body, headers([secret], event_id, body, now))
    assert payload["type"] == "asset.ready"
    assert json.loads(body)["timestamp"].startswith("2026-12-01T15:00:00")
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers([secret], event_id, body, now))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + " ", headers([secret], event_id, body, now))


def test_after_rotation_both_secrets_sign_until_the_grace_ends() -> None:
    old = new_secret()
    endpoint = WebhookEndpoint(
        id=uuid4(),
        org_id="acme",
        url="https://hooks.example.com/",
        events=(),
        description=None,
        enabled=True,
        secrets=(WebhookSecret(value=old, created_at=NOW),),
        created_at=NOW,
        updated_at=NOW,
    )
    rotated, new = endpoint.rotated(NOW, timedelta(hours=1))
    assert rotated.signing_secrets(NOW) == [old, new]
    assert rotated.signing_secrets(NOW + timedelta(hours=2)) == [new]
    body = event_body(WebhookEventType.JOB_FAILED, NOW, {})
    now = datetime.now(UTC)
    signed = headers(rotated.signing_secrets(NOW), "msg_1", body, now)
    Webhook(old).verify(body, signed)  # a receiver still on the old secret
    Webhook(new).verify(body, signed)  # and one already on the new


def test_the_schedule_spans_a_day_and_then_fails() -> None:
    assert sum(RETRY_SCHEDULE, timedelta()) >= timedelta(hours=24)
    rng = random.Random(7)
    for attempts, base in enumerate(RETRY_SCHEDULE, start=1):
        delay = retry_delay(attempts, rng)
        assert base * 0.9 <= delay <= base * 1.1
    delivery = WebhookDelivery(
        id=uuid4(),
        org_id="acme",
        endpoint_id=uuid4(),
        event_id="msg_1",
        event_type=WebhookEventType.ASSET_READY,
        payload="{}",
        status=DeliveryStatus.PENDING,
        attempts=1,
        next_attempt_at=NOW,
        created_at=NOW,
        updated_at=NOW,
    )
    retry = delivery.attempt_failed(NOW, code="http_error", status_code=500, error="x" * 5000)
    assert retry.status is DeliveryStatus.PENDING
    assert retry.next_attempt_at is not None
    assert len((retry.last_error or "").encode()) == MAX_ERROR_BYTES
    last = msgspec_replace(delivery, attempts=MAX_ATTEMPTS)
    assert (
        last.attempt_failed(NOW, code="timeout", status_code=None, error="").status
        is DeliveryStatus.FAILED
    )


def msgspec_replace(delivery: WebhookDelivery, **changes: object) -> WebhookDelivery:
    import msgspec

    return msgspec.structs.replace(delivery, **changes)
