"""Every answer says ``X-Content-Type-Options: nosniff`` and how it may be cached: ``no-store``
(errors, routing 404/405s, health, metrics and schemas too), except a signed file, which a
browser may keep privately until its URL expires."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.domain.ports import Storage
from heimdex.domain.storage_keys import thumbnail_key
from tests.fixtures.app import (
    TokenFactory,
    bearer,
    ingest_file,
    init_upload,
    put_upload,
    services_of,
)


def assert_secured(response: httpx.Response, cache_control: str = "no-store") -> None:
    where = f"{response.request.method} {response.request.url.path} → {response.status_code}"
    assert response.headers.get_list("x-content-type-options") == ["nosniff"], where
    assert response.headers.get_list("cache-control") == [cache_control], where


async def test_every_kind_of_answer_carries_the_headers(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, h264_aac_mp4: Path
) -> None:
    token = make_token(org_a, scopes=["admin"])
    asset_id = uuid.uuid4()
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/health", {}),
        ("GET", "/metrics", {}),
        ("GET", "/schema/openapi.json", {}),
        ("GET", "/v1/schemas/sidecar/v1", {}),
        ("GET", "/nowhere", {}),
        ("DELETE", "/health", {}),
        ("OPTIONS", "/v1/assets", {}),
        ("GET", "/v1/assets", {}),
        ("GET", "/v1/assets", {"headers": bearer(token)}),
        ("GET", f"/v1/assets/{asset_id}", {"headers": bearer(token)}),
        ("GET", "/v1/admin/health", {"headers": bearer(token)}),
        ("POST", "/v1/ingest/init", {"headers": bearer(token), "content": b"{"}),
        ("POST", "/v1/ingest/init", {"headers": bearer(token), "content": b" " * (2 << 20)}),
        ("GET", f"/v1/files/derived/{org_a}/{asset_id}/thumbs/0000.jpg", {}),
        ("PUT", f"/v1/uploads/{asset_id}", {"content": b"x"}),
    ]
    statuses = []
    for method, path, options in requests:
        response = await client.request(method, path, **options)
        assert_secured(response)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 200, 404, 405, 204, 401, 200, 404, 200, 400, 413, 401, 401]

    init = await init_upload(client, token, h264_aac_mp4)
    assert_secured(await put_upload(client, init, h264_aac_mp4.read_bytes()))


async def test_a_signed_file_may_be_kept_privately_until_its_url_expires(
    app: Litestar,
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    h264_aac_mp4: Path,
) -> None:
    asset = await ingest_file(client, make_token(org_a), h264_aac_mp4)
    storage: Storage = services_of(app).adapters.storage
    key = thumbnail_key(org_a, uuid.UUID(asset["asset_id"]), 0, "jpg")
    await storage.write_bytes(key, b"\xff\xd8\xff")
    url = urlsplit(await storage.download_url(key, "http://testserver", int(time.time()) + 600))
    response = await client.get(f"{url.path}?{url.query}")
    assert response.status_code == 200
    cache_control = response.headers["cache-control"]
    assert cache_control.startswith("private, max-age=")
    assert 590 <= int(cache_control.removeprefix("private, max-age=")) <= 600
    assert_secured(response, cache_control)
