"""The ingest flow through real HTTP handling: init → PUT → commit → get → list → delete."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.app import (
    TEST_SECRET,
    TokenFactory,
    bearer,
    ingest_file,
    init_upload,
    put_upload,
)


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    """Every test here runs on SQLite and on PostgreSQL (as the runtime role)."""
    return {"database_url": database_url}


def stored_files(settings: Settings) -> list[Path]:
    root = settings.resolved_storage_root
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_the_whole_flow(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    settings: Settings,
    h264_aac_mp4: Path,
    org_a: str,
) -> None:
    token = make_token(org_a)
    data = h264_aac_mp4.read_bytes()
    init = await init_upload(client, token, h264_aac_mp4, sha256=hashlib.sha256(data).hexdigest())
    assert init["method"] == "PUT"
    assert init["headers"]["Content-Type"] == "video/mp4"
    assert init["source_uri"].startswith("file://")
    put = await put_upload(client, init, data)
    assert put.status_code == 200, put.text
    assert put.json()["sha256"] == hashlib.sha256(data).hexdigest()

    commit = await client.post(
        "/v1/ingest/commit", json={"upload_id": init["upload_id"]}, headers=bearer(token)
    )
    assert commit.status_code == 201, commit.text
    asset = commit.json()
    assert commit.headers["location"] == f"/v1/assets/{asset['asset_id']}"
    assert asset["size_bytes"] == len(data)
    assert asset["media"]["video"]["codec"] == "h264"
    assert asset["media"]["audio"]["sample_rate"] == 48000
    assert asset["status"] == "committed"

    again = await client.post(
        "/v1/ingest/commit", json={"upload_id": init["upload_id"]}, headers=bearer(token)
    )
    assert again.status_code == 200
    assert again.json()["asset_id"] == asset["asset_id"]

    got = await client.get(f"/v1/assets/{asset['asset_id']}", headers=bearer(token))
    assert got.status_code == 200
    assert got.json()["sha256"] == hashlib.sha256(data).hexdigest()
    listing = await client.get("/v1/assets", headers=bearer(token))
    assert [a["asset_id"] for a in listing.json()["items"]] == [asset["asset_id"]]

    deleted = await client.delete(f"/v1/assets/{asset['asset_id']}", headers=bearer(token))
    assert deleted.status_code == 204
    assert (
        await client.get(f"/v1/assets/{asset['asset_id']}", headers=bearer(token))
    ).status_code == 404
    assert stored_files(settings) == []


async def test_put_with_the_bearer_token_instead_of_the_signature(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    h264_aac_mp4: Path,
    org_a: str,
    org_b: str,
) -> None:
    token = make_token(org_a)
    init = await init_upload(client, token, h264_aac_mp4)
    bare_url = init["upload_url"].split("?", 1)[0]
    response = await client.put(
        bare_url, content=h264_aac_mp4.read_bytes(), headers={**init["headers"], **bearer(token)}
    )
    assert response.status_code == 200, response.text
    other = await client.put(
        bare_url, content=b"x", headers={**init["headers"], **bearer(make_token(org_b))}
    )
    assert other.status_code == 404


async def test_put_refuses_a_tampered_or_missing_signature(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    h264_aac_mp4: Path,
    org_a: str,
) -> None:
    init = await init_upload(client, make_token(org_a), h264_aac_mp4)
    url = urlsplit(init["upload_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    for tampered in (
        {**query, "signature": "0" * 64},
        {**query, "org": "org-b"},
        {**query, "expires": str(int(query["expires"]) + 3600)},
        {k: v for k, v in query.items() if k != "signature"},
        {**query, "expires": "²"},  # a digit to str.isdigit, not to int()
        {**query, "expires": "9" * 5000},  # past int()'s digit limit
    ):
        response = await client.put(
            f"{url.path}?{urlencode(tampered)}", content=b"x", headers=init["headers"]
        )
        assert response.status_code == 401, tampered
        assert response.json()["code"] == "invalid_upload_signature"


async def test_put_after_expiry_is_410(
    make_token: TokenFactory,
    data_dir: Path,
    h264_aac_mp4: Path,
    org_a: str,
) -> None:
    settings = Settings.from_flat(
        data_dir=data_dir, jwt_secret=TEST_SECRET, upload_url_ttl_seconds=1
    )
    async with AsyncTestClient(app=create_app(settings=settings)) as client:
        init = await init_upload(client, make_token(org_a), h264_aac_mp4)
        await anyio.sleep(1.1)
        response = await put_upload(client, init, h264_aac_mp4.read_bytes())
        assert response.status_code == 410
        assert response.json()["code"] == "upload_expired"


async def test_upload_size_failures_keep_nothing(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    settings: Settings,
    h264_aac_mp4: Path,
    org_a: str,
) -> None:
    token = make_token(org_a)
    data = h264_aac_mp4.read_bytes()
    init = await init_upload(client, token, h264_aac_mp4)
    longer = await put_upload(client, init, data + b"extra")
    assert longer.status_code == 413
    assert longer.json()["code"] == "upload_too_large"
    shorter = await put_upload(client, init, data[:-10])
    assert shorter.status_code == 400
    assert shorter.json()["code"] == "length_mismatch"
    assert stored_files(settings) == []
    ok = await put_upload(client, init, data)  # the slot is open again after failures
    assert ok.status_code == 200
    second = await put_upload(client, init, data)
    assert second.status_code == 409
    assert second.json()["code"] == "upload_already_received"


async def test_a_put_with_content_range_is_refused_not_stored_as_the_whole_file(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    settings: Settings,
    h264_aac_mp4: Path,
    org_a: str,
) -> None:
    data = h264_aac_mp4.read_bytes()
    init = await init_upload(client, make_token(org_a), h264_aac_mp4)
    for content_range in (f"bytes 0-{len(data) - 1}/{len(data)}", f"bytes 0-{len(data) - 1}/*"):
        headers = {**init["headers"], "Content-Range": content_range}
        response = await client.put(init["upload_url"], content=data, headers=headers)
        assert response.status_code == 400, response.text  # RFC 9110 §14.5
        assert response.json()["code"] == "content_range_unsupported"
        assert stored_files(settings) == []
    assert (await put_upload(client, init, data)).status_code == 200  # the slot is untouched


async def test_checksum_mismatch_keeps_nothing(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    settings: Settings,
    h264_aac_mp4: Path,
    org_a: str,
) -> None:
    init = await init_upload(client, make_token(org_a), h264_aac_mp4, sha256="ab" * 32)
    response = await put_upload(client, init, h264_aac_mp4.read_bytes())
    assert response.status_code == 422
    assert response.json()["code"] == "checksum_mismatch"
    assert stored_files(settings) == []


async def test_init_limits(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    settings: Settings,
    org_a: str,
) -> None:
    token = make_token(org_a)
    base = {"source_name": "a.mp4", "content_length": 10, "content_type": "video/mp4"}
    too_big = {**base, "content_length": settings.uploads.max_size_bytes + 1}
    response = await client.post("/v1/ingest/init", json=too_big, headers=bearer(token))
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    response = await client.post(
        "/v1/ingest/init", json={**base, "content_type": "text/html"}, headers=bearer(token)
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    response = await client.post(
        "/v1/ingest/init", json={**base, "source_name": "../../etc/passwd"}, headers=bearer(token)
    )
    assert response.status_code == 201
    assert response.json()["source_name"] == "passwd"
    assert "/etc/passwd" not in response.json()["source_uri"].split("/uploads/")[0]
    for bad in (
        {**base, "content_length": 0},
        {**base, "sha256": "xyz"},
        {**base, "sha256": "ab" * 32 + "\n"},  # "$" alone would let the newline through
        {"content_length": 1},
    ):
        response = await client.post("/v1/ingest/init", json=bad, headers=bearer(token))
        assert response.status_code == 400, bad


async def test_commit_before_upload_and_not_media(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    text_mp4: Path,
    org_a: str,
) -> None:
    token = make_token(org_a)
    init = await init_upload(client, token, text_mp4)
    early = await client.post(
        "/v1/ingest/commit", json={"upload_id": init["upload_id"]}, headers=bearer(token)
    )
    assert early.status_code == 409
    assert early.json()["code"] == "upload_not_received"
    assert (await put_upload(client, init, text_mp4.read_bytes())).status_code == 200
    commit = await client.post(
        "/v1/ingest/commit", json={"upload_id": init["upload_id"]}, headers=bearer(token)
    )
    assert commit.status_code == 422
    assert commit.json()["code"] == "invalid_media"
    assert (await client.get("/v1/assets", headers=bearer(token))).json()["items"] == []


async def test_commit_of_an_unknown_upload_is_404(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
) -> None:
    response = await client.post(
        "/v1/ingest/commit",
        json={"upload_id": str(uuid.uuid4())},
        headers=bearer(make_token(org_a)),
    )
    assert response.status_code == 404


async def test_list_filters_and_pages(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    h264_aac_mp4: Path,
    vp9_webm: Path,
    audio_m4a: Path,
    org_a: str,
) -> None:
    token = make_token(org_a)
    h264 = await ingest_file(client, token, h264_aac_mp4)
    vp9 = await ingest_file(client, token, vp9_webm, "video/webm")
    audio = await ingest_file(client, token, audio_m4a, "audio/mp4")

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/v1/assets", params=params, headers=bearer(token))
        assert response.status_code == 200, response.text
        return [a["asset_id"] for a in response.json()["items"]]

    assert await ids() == [audio["asset_id"], vp9["asset_id"], h264["asset_id"]]
    assert await ids(codec="vp9") == [vp9["asset_id"]]
    assert await ids(codec="aac") == [audio["asset_id"], h264["asset_id"]]
    assert await ids(min_height=300) == [h264["asset_id"]]  # 640x360 against 320x240
    assert await ids(min_height=240) == [vp9["asset_id"], h264["asset_id"]]
    assert await ids(status="committed", max_duration=100) != []
    assert await ids(status="ready") == []
    h264_sum = hashlib.sha256(h264_aac_mp4.read_bytes()).hexdigest()
    assert await ids(sha256=h264_sum) == [h264["asset_id"]]
    assert await ids(sha256=h264_sum.upper()) == [h264["asset_id"]]
    assert await ids(sha256="0" * 64) == []

    first = await client.get("/v1/assets", params={"limit": 2}, headers=bearer(token))
    page = first.json()
    assert len(page["items"]) == 2
    assert page["next_cursor"]
    second = await client.get(
        "/v1/assets", params={"limit": 2, "cursor": page["next_cursor"]}, headers=bearer(token)
    )
    assert [a["asset_id"] for a in second.json()["items"]] == [h264["asset_id"]]
    assert second.json()["next_cursor"] is None

    bad = await client.get("/v1/assets", params={"cursor": "garbage!"}, headers=bearer(token))
    assert bad.status_code == 400
    for params in (
        {"limit": 0},
        {"limit": 1000},
        {"status": "nope"},
        {"min_duration": -1},
        {"sha256": "abc"},
        {"sha256": "g" * 64},
    ):
        response = await client.get("/v1/assets", params=params, headers=bearer(token))
        assert response.status_code == 400, params


async def test_another_org_sees_nothing_of_ours(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    h264_aac_mp4: Path,
    org_a: str,
    org_b: str,
) -> None:
    ours, theirs = make_token(org_a), make_token(org_b)
    asset = await ingest_file(client, ours, h264_aac_mp4)
    init = await init_upload(client, ours, h264_aac_mp4)
    asset_id, upload_id = asset["asset_id"], init["upload_id"]
    attempts = [
        ("GET", f"/v1/assets/{asset_id}", None),
        ("DELETE", f"/v1/assets/{asset_id}", None),
        ("POST", "/v1/ingest/commit", {"upload_id": asset["upload_id"]}),
        ("POST", "/v1/ingest/commit", {"upload_id": upload_id}),
        ("POST", "/v1/ingest/probe", {"asset_id": asset_id}),
    ]
    for method, url, body in attempts:
        response = await client.request(method, url, json=body, headers=bearer(theirs))
        assert response.status_code == 404, (method, url, response.text)
    put = await client.put(f"/v1/uploads/{upload_id}", content=b"x", headers=bearer(theirs))
    assert put.status_code == 404
    listing = await client.get("/v1/assets", headers=bearer(theirs))
    assert listing.json()["items"] == []
    mismatch = await client.post(
        "/v1/ingest/init",
        json={
            "source_name": "a.mp4",
            "content_length": 1,
            "content_type": "video/mp4",
            "org_id": org_a,
        },
        headers=bearer(theirs),
    )
    assert mismatch.status_code == 403
    assert (await client.get(f"/v1/assets/{asset_id}", headers=bearer(ours))).status_code == 200
