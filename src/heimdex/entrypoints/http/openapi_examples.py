"""Examples for the OpenAPI document: one request and one answer per operation, taken from a real
run of the walkthrough (ids and signatures replaced by stable ones).

``tests/integration/test_http_api_docs.py`` validates every example against the schema it sits
beside, so an example cannot drift from what the route answers.
"""

from __future__ import annotations

from typing import Any

ORG = "acme"
ASSET_ID = "c332fb7a-b768-45d7-8b41-b041b05d7bd5"
UPLOAD_ID = "b2a83591-2952-4707-8d5e-3c1634d2a7a5"
OTHER_ASSET_ID = "5f0e3c52-8a8e-4d4b-9c1e-2f6a0d9b7e41"
JOB_ID = "31d339bb-b203-4e0d-9a98-58b635e3b81d"
SHA256 = "ba1e0860f3d95c555ef9b69d49f9c55afad92226cfa4a5b21eb6b045bc1e43ae"
SIGNED = f"org={ORG}&expires=1796142022&signature=16bcd485d9addbe594e52cf373e33192e3a0237a"
SOURCE_URI = f"file:///srv/heimdex/data/storage/uploads/{ORG}/{UPLOAD_ID}/clip.mp4"
CREATED = "2026-12-01T15:20:16.005823Z"

_VIDEO_SUMMARY: dict[str, Any] = {
    "codec": "h264",
    "width": 320,
    "height": 240,
    "display_width": 320,
    "display_height": 240,
    "rotation": 0,
    "frame_rate": 25.0,
    "hdr": False,
}

ASSET: dict[str, Any] = {
    "asset_id": ASSET_ID,
    "upload_id": UPLOAD_ID,
    "status": "committed",
    "source_name": "clip.mp4",
    "source_uri": SOURCE_URI,
    "size_bytes": 178530,
    "sha256": SHA256,
    "content_type": "video/mp4",
    "media": {
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "duration": 4.0,
        "bit_rate": 357060,
        "video": _VIDEO_SUMMARY,
        "audio": {"codec": "aac", "channels": 1, "sample_rate": 44100},
        "stream_count": 2,
    },
    "created_at": CREATED,
    "updated_at": CREATED,
    "links": {"self": f"/v1/assets/{ASSET_ID}"},
}

_VIDEO_STREAM: dict[str, Any] = {
    "index": 0,
    "kind": "video",
    "codec": "h264",
    "profile": "High",
    "bit_rate": 277704,
    "duration": 4.0,
    "language": "und",
    "title": None,
    "tags": {"language": "und", "handler_name": "VideoHandler"},
    "width": 320,
    "height": 240,
    "rotation": 0,
    "display_width": 320,
    "display_height": 240,
    "display_aspect_ratio": "4:3",
    "frame_rate": 25.0,
    "pix_fmt": "yuv420p",
    "bit_depth": 8,
    "color": {"range": None, "space": None, "transfer": None, "primaries": None},
    "hdr": False,
    "field_order": "progressive",
    "channels": None,
    "channel_layout": None,
    "sample_rate": None,
}

_AUDIO_STREAM: dict[str, Any] = {
    **dict.fromkeys(_VIDEO_STREAM),
    "index": 1,
    "kind": "audio",
    "codec": "aac",
    "profile": "LC",
    "bit_rate": 69432,
    "duration": 4.0,
    "language": "und",
    "tags": {"language": "und", "handler_name": "SoundHandler"},
    "channels": 1,
    "channel_layout": "mono",
    "sample_rate": 44100,
}

MEDIA_INFO: dict[str, Any] = {
    "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
    "duration": 4.0,
    "bit_rate": 357060,
    "size_bytes": 178530,
    "tags": {"major_brand": "isom", "encoder": "Lavf59.27.100"},
    "streams": [_VIDEO_STREAM, _AUDIO_STREAM],
    "chapters": [],
}

JOB: dict[str, Any] = {
    "job_id": JOB_ID,
    "kind": "sidecar",
    "status": "succeeded",
    "asset_id": ASSET_ID,
    "progress": 1.0,
    "attempts": 1,
    "max_attempts": 3,
    "error": None,
    "next_attempt_at": None,
    "created_at": "2026-12-01T15:20:16.036750Z",
    "updated_at": "2026-12-01T15:20:16.158081Z",
    "started_at": "2026-12-01T15:20:16.054725Z",
    "finished_at": "2026-12-01T15:20:16.158081Z",
    "thumbnails": {"count": 10, "width": 320, "format": "jpg"},
    "storyboard": {"width": 160, "format": "jpg"},
    "links": {
        "self": f"/v1/jobs/{JOB_ID}",
        "asset": f"/v1/assets/{ASSET_ID}",
        "sidecar": f"/v1/assets/{ASSET_ID}/sidecar",
        "thumbnails": f"/v1/assets/{ASSET_ID}/thumbnails",
    },
}

_QUEUED_JOB: dict[str, Any] = {
    **JOB,
    "status": "queued",
    "progress": 0.0,
    "attempts": 0,
    "updated_at": JOB["created_at"],
    "started_at": None,
    "finished_at": None,
}


def _thumbnail(index: int) -> dict[str, Any]:
    key = f"derived/{ORG}/{ASSET_ID}/thumbs/{index:04d}.jpg"
    return {
        "index": index,
        "time": round(0.2 + 0.4 * index, 3),
        "width": 320,
        "height": 240,
        "url": f"https://heimdex.example.com/v1/files/{key}?{SIGNED}",
    }


_SPRITE_KEY = f"derived/{ORG}/{ASSET_ID}/storyboard/sprite-00.jpg"
_SPRITE_URL = f"https://heimdex.example.com/v1/files/{_SPRITE_KEY}?{SIGNED}"
_POSTER_KEY = f"derived/{ORG}/{ASSET_ID}/poster/000002520.jpg"
_TILES = [
    {"start": float(i), "end": float(i + 1), "time": float(i), "sprite": 0, "x": 160 * i}
    | {"y": 0, "w": 160, "h": 120}
    for i in range(4)
]
STORYBOARD: dict[str, Any] = {
    "interval": 1.0,
    "tile_width": 160,
    "tile_height": 120,
    "format": "jpg",
    "sprites": [{"index": 0, "width": 640, "height": 120, "url": _SPRITE_URL}],
    "cues": [
        {
            "start": tile["start"],
            "end": tile["end"],
            "time": tile["time"],
            "url": f"{_SPRITE_URL}#xywh={tile['x']},0,160,120",
        }
        for tile in _TILES
    ],
}
POSTER: dict[str, Any] = {
    "time": 2.52,
    "width": 320,
    "height": 240,
    "url": f"https://heimdex.example.com/v1/files/{_POSTER_KEY}?{SIGNED}",
    "chosen_by": "auto",
}

SIDECAR: dict[str, Any] = {
    "schema": "heimdex.sidecar/v1",
    "asset_id": ASSET_ID,
    "org_id": ORG,
    "source": {
        "name": "clip.mp4",
        "bytes": 178530,
        "sha256": SHA256,
        "content_type": "video/mp4",
    },
    "container": {
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "duration": 4.0,
        "bit_rate": 357060,
        "tags": {"major_brand": "isom"},
    },
    "streams": [_VIDEO_STREAM, _AUDIO_STREAM],
    "chapters": [],
    "media": MEDIA_INFO,
    "thumbnails": [
        {
            "index": index,
            "time": round(0.2 + 0.4 * index, 3),
            "key": f"derived/{ORG}/{ASSET_ID}/thumbs/{index:04d}.jpg",
            "width": 320,
            "height": 240,
            "format": "jpg",
        }
        for index in range(3)
    ],
    "generator": {"name": "heimdex", "version": "0.1.0", "prober": "pyav", "thumbnailer": "pyav"},
    "thumbnail_summary": {"requested": 3, "made": 3, "shortfall": None},
    "storyboard": {
        "interval": 1.0,
        "tile_width": 160,
        "tile_height": 120,
        "format": "jpg",
        "sprites": [{"index": 0, "key": _SPRITE_KEY, "width": 640, "height": 120, "format": "jpg"}],
        "tiles": _TILES,
    },
    "poster": {
        "time": 2.52,
        "key": _POSTER_KEY,
        "width": 320,
        "height": 240,
        "format": "jpg",
        "chosen_by": "auto",
    },
}

WEBHOOK_ID = "5f0c8a47-3b1e-4d8a-9c64-2a7e0b9d1f35"
DELIVERY_ID = "8d2b6c1e-7f4a-4e3b-a5d9-0c1e2f3a4b5c"
WEBHOOK: dict[str, Any] = {
    "webhook_id": WEBHOOK_ID,
    "url": "https://hooks.example.com/heimdex",
    "events": ["asset.ready", "job.failed"],
    "description": "media pipeline",
    "enabled": True,
    "disabled_reason": None,
    "created_at": CREATED,
    "updated_at": CREATED,
}
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - an example
DELIVERY: dict[str, Any] = {
    "delivery_id": DELIVERY_ID,
    "webhook_id": WEBHOOK_ID,
    "event_id": "msg_2f1c0d9e8b7a4c3d9e8f7a6b5c4d3e2f",
    "event_type": "asset.ready",
    "status": "succeeded",
    "attempts": 1,
    "next_attempt_at": None,
    "last_attempt_at": "2026-12-01T15:20:16.170000Z",
    "last_status_code": 204,
    "last_error_code": None,
    "last_error": None,
    "created_at": "2026-12-01T15:20:16.158081Z",
    "delivered_at": "2026-12-01T15:20:16.170000Z",
}

#: operationId -> (request body example or None, {success status: answer example})
OPERATIONS: dict[str, tuple[Any, dict[str, Any]]] = {
    "HealthLiveness": (None, {"200": {"status": "ok", "version": "0.1.0"}}),
    "adminHealth": (
        None,
        {
            "200": {
                "status": "ok",
                "checks": [
                    {
                        "name": name,
                        "ok": True,
                        "latency_ms": 1.6,
                        "error": None,
                        "transient": None,
                    }
                    for name in ("database", "storage", "prober", "queue", "thumbnailer")
                ],
            }
        },
    ),
    "initUpload": (
        {
            "source_name": "clip.mp4",
            "content_length": 178530,
            "content_type": "video/mp4",
            "sha256": SHA256,
        },
        {
            "201": {
                "upload_id": UPLOAD_ID,
                "upload_url": f"https://heimdex.example.com/v1/uploads/{UPLOAD_ID}?{SIGNED}",
                "method": "PUT",
                "headers": {"Content-Type": "video/mp4", "Content-Length": "178530"},
                "expires_at": "2026-12-01T16:20:08.192989Z",
                "source_uri": SOURCE_URI,
                "source_name": "clip.mp4",
            }
        },
    ),
    "receiveUpload": (
        None,
        {
            "200": {
                "upload_id": UPLOAD_ID,
                "status": "received",
                "size_bytes": 178530,
                "sha256": SHA256,
                "received_at": "2026-12-01T15:20:08.243290Z",
            }
        },
    ),
    "commitUpload": ({"upload_id": UPLOAD_ID}, {"201": ASSET, "200": ASSET}),
    "probeMedia": ({"asset_id": ASSET_ID}, {"200": MEDIA_INFO}),
    "getAsset": (None, {"200": ASSET}),
    "listAssets": (None, {"200": {"items": [ASSET], "next_cursor": None}}),
    "listThumbnails": (
        None,
        {
            "200": {
                "items": [_thumbnail(i) for i in range(3)],
                "summary": {"requested": 3, "made": 3, "shortfall": None},
            }
        },
    ),
    "readSidecar": (None, {"200": SIDECAR}),
    "requestSidecar": (
        {
            "thumbnails": {"count": 10, "width": 320, "format": "jpg"},
            "storyboard": {"width": 160, "format": "jpg"},
        },
        {"202": _QUEUED_JOB},
    ),
    "getJob": (None, {"200": JOB}),
    "getStoryboard": (None, {"200": STORYBOARD}),
    "getStoryboardVtt": (
        None,
        {
            "200": "WEBVTT\n\n"
            + "".join(
                f"00:00:0{i}.000 --> 00:00:0{i + 1}.000\n{cue['url']}\n\n"
                for i, cue in enumerate(STORYBOARD["cues"])
            )
        },
    ),
    "getPoster": (None, {"200": POSTER}),
    "setPoster": ({"time": 2.5}, {"200": {**POSTER, "time": 2.5, "chosen_by": "user"}}),
    "V1SchemasSidecarSidecarSchema": (
        None,
        {
            "200": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": "https://heimdex.dev/schemas/sidecar/v1",
                "title": "Heimdex sidecar v1",
                "type": "object",
            }
        },
    ),
    "MetadataLegacyMetadata": (None, {"200": MEDIA_INFO}),
    "listJobs": (None, {"200": {"items": [JOB], "next_cursor": None}}),
    "createWebhook": (
        {
            "url": "https://hooks.example.com/heimdex",
            "events": ["asset.ready", "job.failed"],
            "description": "media pipeline",
        },
        {"201": {**WEBHOOK, "secret": WEBHOOK_SECRET}},
    ),
    "listWebhooks": (None, {"200": {"items": [WEBHOOK]}}),
    "getWebhook": (None, {"200": WEBHOOK}),
    "updateWebhook": ({"enabled": False}, {"200": {**WEBHOOK, "enabled": False}}),
    "rotateWebhookSecret": (
        None,
        {"200": {**WEBHOOK, "secret": "whsec_0n9pZ3kq1X6yHc2mB8vT4rW7sLdJfGaE"}},
    ),
    "listWebhookDeliveries": (None, {"200": {"items": [DELIVERY], "next_cursor": None}}),
    "retryWebhookDelivery": (
        None,
        {
            "200": {
                **DELIVERY,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": "2026-12-01T16:00:00.000000Z",
                "last_status_code": 503,
                "last_error_code": "http_error",
                "last_error": "Service Unavailable",
                "delivered_at": None,
            }
        },
    ),
    "similarAssets": (
        None,
        {
            "200": {
                "asset_id": ASSET_ID,
                "frames": 14,
                "items": [
                    {
                        "asset_id": OTHER_ASSET_ID,
                        "frames_matched": 12,
                        "distance": 0,
                        "matches": [
                            {"time": 0.0, "other_time": 0.0, "distance": 0},
                            {"time": 1.0, "other_time": 1.0, "distance": 1},
                            {"time": 2.0, "other_time": 2.0, "distance": 2},
                        ],
                    }
                ],
            }
        },
    ),
    "searchFrames": (
        {"asset_id": ASSET_ID, "time": 2.0},
        {
            "200": {
                "items": [
                    {
                        "asset_id": OTHER_ASSET_ID,
                        "time": 2.0,
                        "distance": 1,
                        "thumbnail_url": "https://heimdex.example.com/v1/files/derived/"
                        f"{ORG}/{OTHER_ASSET_ID}/storyboard/sprite-00.jpg?{SIGNED}"
                        "#xywh=320,0,160,120",
                    }
                ]
            }
        },
    ),
    "webhookEventSchema": (
        None,
        {
            "200": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": "https://heimdex.dev/schemas/webhook-events/v1",
                "title": "Heimdex webhook events v1",
                "type": "object",
            }
        },
    ),
}


def problem_example(status: int, code: str, path: str) -> dict[str, Any]:
    """What a problem answer with ``code`` looks like (the title and detail are illustrative)."""
    title = code.replace("_", " ").capitalize()
    return {
        "type": f"urn:heimdex:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": f"{title} (an example; the detail says what happened)",
        "instance": path,
        "request_id": "0cc3852ae498468d8b68a43b39870f0a",
    }
