"""Webhook events into the outbox: called by the use cases inside the unit of work of the change
that causes each event, so the event is committed with the change or not at all.

One delivery row per enabled endpoint of the organisation that wants the type; they share the
event's id (``webhook-id``) and its body. The data names ids and links (paths under the API's own
base URL) and what a receiver needs to act without calling back; the JSON Schema of each type is
in ``heimdex/schemas/webhook-events-v1.schema.json``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from heimdex.domain.model import Asset, Job, Upload
from heimdex.domain.ports import UnitOfWork
from heimdex.domain.webhooks import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEventType,
    event_body,
    new_event_id,
)


async def record_event(
    uow: UnitOfWork, event_type: WebhookEventType, data: dict[str, Any], now: datetime
) -> int:
    """Write the event's deliveries in ``uow`` (not committed here); answers how many."""
    endpoints = await uow.webhooks.subscribed(event_type)
    if not endpoints:
        return 0
    event_id = new_event_id(uuid.uuid4())
    body = event_body(event_type, now, data)
    for endpoint in endpoints:
        await uow.deliveries.add(
            WebhookDelivery(
                id=uuid.uuid4(),
                org_id=endpoint.org_id,
                endpoint_id=endpoint.id,
                event_id=event_id,
                event_type=event_type,
                payload=body,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    return len(endpoints)


def asset_links(asset_id: uuid.UUID) -> dict[str, str]:
    base = f"/v1/assets/{asset_id}"
    return {"asset": base, "sidecar": f"{base}/sidecar", "thumbnails": f"{base}/thumbnails"}


def asset_data(asset: Asset, job: Job | None = None) -> dict[str, Any]:
    video = next(iter(asset.media.video_streams), None)
    data: dict[str, Any] = {
        "asset_id": str(asset.id),
        "upload_id": str(asset.upload_id),
        "status": asset.status.value,
        "source_name": asset.source_name,
        "source_uri": asset.source_uri,
        "size_bytes": asset.size_bytes,
        "sha256": asset.sha256,
        "content_type": asset.content_type,
        "duration": asset.media.duration,
        "width": video.display_width if video else None,
        "height": video.display_height if video else None,
        "created_at": asset.created_at.isoformat(),
        "links": asset_links(asset.id),
    }
    if job is not None:
        data["job_id"] = str(job.id)
        data["links"]["job"] = f"/v1/jobs/{job.id}"
        if job.error is not None:
            data["error"] = {"code": job.error.code, "message": job.error.message}
    return data


def deleted_asset_data(asset: Asset) -> dict[str, Any]:
    return {
        "asset_id": str(asset.id),
        "upload_id": str(asset.upload_id),
        "source_name": asset.source_name,
        "source_uri": asset.source_uri,
    }


def job_data(job: Job) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "kind": job.kind.value,
        "status": job.status.value,
        "asset_id": str(job.asset_id),
        "attempts": job.attempts,
        "error": None
        if job.error is None
        else {"code": job.error.code, "message": job.error.message},
        "links": {"job": f"/v1/jobs/{job.id}", **asset_links(job.asset_id)},
    }


def upload_data(upload: Upload) -> dict[str, Any]:
    return {
        "upload_id": str(upload.id),
        "source_name": upload.source_name,
        "source_uri": upload.source_uri,
        "status": upload.status.value,
        "content_length": upload.content_length,
        "expires_at": upload.expires_at.isoformat(),
    }
