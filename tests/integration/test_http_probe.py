"""POST /v1/ingest/probe: real probers on real media; source_uri is an identifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.fixtures.app import TokenFactory, bearer, ingest_file, init_upload, put_upload

PROBE = "/v1/ingest/probe"


@pytest.fixture(params=["pyav", "ffprobe"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"prober": request.param}


async def uploaded(client: AsyncTestClient[Litestar], token: str, path: Path) -> dict[str, Any]:
    init = await init_upload(client, token, path)
    assert (await put_upload(client, init, path.read_bytes())).status_code == 200
    return init


async def test_probes_an_own_upload_by_its_source_uri(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, h264_aac_mp4: Path
) -> None:
    token = make_token()
    init = await uploaded(client, token, h264_aac_mp4)
    response = await client.post(
        PROBE, json={"source_uri": init["source_uri"]}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    media = response.json()
    assert media["format_name"].startswith("mov,mp4")
    assert abs(media["duration"] - 4.0) < 0.1
    assert media["size_bytes"] == h264_aac_mp4.stat().st_size
    video = next(s for s in media["streams"] if s["kind"] == "video")
    audio = next(s for s in media["streams"] if s["kind"] == "audio")
    assert (video["codec"], video["width"], video["height"]) == ("h264", 640, 360)
    assert (audio["codec"], audio["channels"], audio["sample_rate"]) == ("aac", 2, 48000)


async def test_probes_an_asset_by_id(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, rotated_mp4: Path
) -> None:
    token = make_token()
    asset = await ingest_file(client, token, rotated_mp4)
    response = await client.post(PROBE, json={"asset_id": asset["asset_id"]}, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["streams"][0]["rotation"] == 90


async def test_body_org_id_must_match_the_token(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, h264_aac_mp4: Path
) -> None:
    token = make_token()
    init = await uploaded(client, token, h264_aac_mp4)
    same = await client.post(
        PROBE, json={"source_uri": init["source_uri"], "org_id": "org-a"}, headers=bearer(token)
    )
    assert same.status_code == 200
    other = await client.post(
        PROBE, json={"source_uri": init["source_uri"], "org_id": "org-b"}, headers=bearer(token)
    )
    assert other.status_code == 403
    assert other.json()["code"] == "org_mismatch"


async def test_another_orgs_upload_is_forbidden(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, h264_aac_mp4: Path
) -> None:
    init = await uploaded(client, make_token("org-b"), h264_aac_mp4)
    response = await client.post(
        PROBE, json={"source_uri": init["source_uri"]}, headers=bearer(make_token("org-a"))
    )
    assert response.status_code == 422
    assert response.json()["code"] == "source_uri_forbidden"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda uri: uri.replace("/uploads/org-a/", "/uploads/org-a/../org-a/"),
        lambda uri: uri.replace("/uploads/", "/%75ploads/"),
        lambda uri: uri + "?x=1",
        lambda uri: uri.upper(),
        lambda _: "file:///etc/passwd",
        lambda _: "http://169.254.169.254/latest/meta-data/",
        lambda uri: "concat:" + uri,
        lambda uri: "subfile:" + uri.removeprefix("file://"),
        lambda _: "data:video/mp4;base64,AAAA",
        lambda uri: uri.removeprefix("file://"),
    ],
)
async def test_anything_but_the_issued_uri_is_forbidden(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    h264_aac_mp4: Path,
    mutate: Any,
) -> None:
    token = make_token()
    init = await uploaded(client, token, h264_aac_mp4)
    response = await client.post(
        PROBE, json={"source_uri": mutate(init["source_uri"])}, headers=bearer(token)
    )
    assert response.status_code == 422
    assert response.json()["code"] == "source_uri_forbidden"


@pytest.mark.parametrize("fixture_name", ["text_mp4", "truncated_mp4"])
async def test_broken_media_is_422_invalid_media(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    request: pytest.FixtureRequest,
    fixture_name: str,
) -> None:
    token = make_token()
    init = await uploaded(client, token, request.getfixturevalue(fixture_name))
    response = await client.post(
        PROBE, json={"source_uri": init["source_uri"]}, headers=bearer(token)
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_media"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"source_uri": ""},
        {"source_uri": 5},
        {"source_uri": "x", "extra": 1},
        {"source_uri": "x", "asset_id": "00000000-0000-4000-8000-000000000000"},
        [],
    ],
)
async def test_malformed_bodies_are_400_problems(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, body: Any
) -> None:
    response = await client.post(PROBE, json=body, headers=bearer(make_token()))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


async def test_probe_needs_a_token(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(PROBE, json={"source_uri": "file:///x"})
    assert response.status_code == 401
