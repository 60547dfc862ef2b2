"""Sidecar jobs on the embedded default (in-process queue), through real HTTP handling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.schemas import sidecar_schema_v1
from tests.fixtures.app import TokenFactory, bearer, ingest_file, wait_for_job
from tests.fixtures.media import MediaFactory

SCHEMA = json.loads(sidecar_schema_v1())


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "sweep_interval_seconds": 0.2}


async def test_sidecar_job_makes_thumbnails_and_a_valid_document(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, h264_aac_mp4: Path
) -> None:
    token = make_token(org_a)
    asset = await ingest_file(client, token, h264_aac_mp4)
    url = f"/v1/assets/{asset['asset_id']}"
    not_ready = await client.get(f"{url}/sidecar", headers=bearer(token))
    assert not_ready.status_code == 404
    assert not_ready.json()["code"] == "sidecar_not_ready"

    accepted = await client.post(f"{url}/sidecar", json={}, headers=bearer(token))
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    assert location == f"/v1/jobs/{accepted.json()['job_id']}"
    job = await wait_for_job(client, token, location)
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0
    assert job["attempts"] == 1

    sidecar = await client.get(f"{url}/sidecar", headers=bearer(token))
    assert sidecar.status_code == 200
    document = sidecar.json()
    jsonschema.validate(document, SCHEMA)
    assert document["schema"] == "heimdex.sidecar/v1"
    assert len(document["thumbnails"]) == 10
    times = [t["time"] for t in document["thumbnails"]]
    assert times == sorted(times)
    assert 0 <= times[0] < times[-1] <= 4.0
    assert len(set(times)) == 10  # ten different frames, one in each tenth of the clip
    full = {"requested": 10, "made": 10, "shortfall": None}
    assert document["thumbnail_summary"] == full

    listing = await client.get(f"{url}/thumbnails", headers=bearer(token))
    assert listing.json()["summary"] == full
    items = listing.json()["items"]
    assert [i["index"] for i in items] == list(range(10))
    first = urlsplit(items[0]["url"])
    image = await client.get(f"{first.path}?{first.query}")  # no token: the URL is signed
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content[:3] == b"\xff\xd8\xff"
    tampered = await client.get(f"{first.path}?{first.query.replace('signature=', 'signature=0')}")
    assert tampered.status_code == 401
    assert (await client.get(url, headers=bearer(token))).json()["status"] == "ready"


async def test_repeated_requests_return_the_same_job_until_forced(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, h264_aac_mp4: Path
) -> None:
    token = make_token(org_a)
    asset = await ingest_file(client, token, h264_aac_mp4)
    url = f"/v1/assets/{asset['asset_id']}/sidecar"
    first = (await client.post(url, json={}, headers=bearer(token))).json()
    again = (await client.post(url, json={}, headers=bearer(token))).json()
    assert again["job_id"] == first["job_id"]
    await wait_for_job(client, token, f"/v1/jobs/{first['job_id']}")
    finished = (await client.post(url, json={}, headers=bearer(token))).json()
    assert finished["job_id"] == first["job_id"]
    assert finished["status"] == "succeeded"
    forced = await client.post(
        url,
        json={"force": True, "thumbnails": {"count": 3, "width": 160, "format": "webp"}},
        headers=bearer(token),
    )
    assert forced.json()["job_id"] != first["job_id"]
    job = await wait_for_job(client, token, f"/v1/jobs/{forced.json()['job_id']}")
    assert job["status"] == "succeeded"
    items = (
        await client.get(f"/v1/assets/{asset['asset_id']}/thumbnails", headers=bearer(token))
    ).json()["items"]
    assert len(items) == 3
    assert all(i["width"] == 160 and ".webp?" in i["url"] for i in items)


async def test_audio_only_gets_a_sidecar_without_thumbnails(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, audio_m4a: Path
) -> None:
    token = make_token(org_a)
    asset = await ingest_file(client, token, audio_m4a, "audio/mp4")
    accepted = await client.post(
        f"/v1/assets/{asset['asset_id']}/sidecar", json={}, headers=bearer(token)
    )
    job = await wait_for_job(client, token, accepted.headers["location"])
    assert job["status"] == "succeeded", job
    document = (
        await client.get(f"/v1/assets/{asset['asset_id']}/sidecar", headers=bearer(token))
    ).json()
    jsonschema.validate(document, SCHEMA)
    assert document["thumbnails"] == []
    assert document["thumbnail_summary"]["shortfall"] == "no_video"


async def test_a_clip_with_fewer_frames_than_thumbnails_gets_one_per_frame_and_says_so(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    media_factory: MediaFactory,
) -> None:
    five_frames = media_factory(
        "five_frames.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=0.2"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
    )
    token = make_token(org_a)
    asset = await ingest_file(client, token, five_frames)
    accepted = await client.post(
        f"/v1/assets/{asset['asset_id']}/sidecar", json={}, headers=bearer(token)
    )
    job = await wait_for_job(client, token, accepted.headers["location"])
    assert job["status"] == "succeeded", job

    listing = (
        await client.get(f"/v1/assets/{asset['asset_id']}/thumbnails", headers=bearer(token))
    ).json()
    assert [i["time"] for i in listing["items"]] == [0.0, 0.04, 0.08, 0.12, 0.16]
    assert listing["summary"] == {"requested": 10, "made": 5, "shortfall": "fewer_frames"}


async def test_another_org_sees_no_job_sidecar_or_thumbnail(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    org_b: str,
    h264_aac_mp4: Path,
) -> None:
    ours, theirs = make_token(org_a), make_token(org_b)
    asset = await ingest_file(client, ours, h264_aac_mp4)
    url = f"/v1/assets/{asset['asset_id']}"
    accepted = await client.post(f"{url}/sidecar", json={}, headers=bearer(ours))
    await wait_for_job(client, ours, accepted.headers["location"])
    for method, path in [
        ("POST", f"{url}/sidecar"),
        ("GET", f"{url}/sidecar"),
        ("GET", f"{url}/thumbnails"),
        ("GET", accepted.headers["location"]),
    ]:
        response = await client.request(
            method, path, json={} if method == "POST" else None, headers=bearer(theirs)
        )
        assert response.status_code == 404, (method, path)
    mismatch = await client.post(f"{url}/sidecar", json={"org_id": org_b}, headers=bearer(ours))
    assert mismatch.status_code == 403
    wrong_uri = await client.post(
        f"{url}/sidecar", json={"source_uri": "file:///etc/passwd"}, headers=bearer(ours)
    )
    assert wrong_uri.status_code == 422


async def test_the_schema_is_published(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/v1/schemas/sidecar/v1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    jsonschema.Draft202012Validator.check_schema(response.json())
