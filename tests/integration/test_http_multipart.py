"""Multipart uploads straight to S3: ``init`` with ``multipart`` answers presigned UploadPart
URLs, the client PUTs its parts to them (plain HTTP, as any client would) and ``commit``
completes the upload, then verifies it as any other. On PostgreSQL (as the runtime role) with S3
on a moto server; local storage refuses ``multipart``."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.settings import Settings
from tests.fixtures.app import TokenFactory, bearer
from tests.fixtures.s3 import MotoServer, storage_backend_settings

MIB = 1024 * 1024
#: over one 8 MiB part: two parts, the first at S3's size, the second the rest
FILE_SIZE = 11 * MIB


@pytest.fixture
def backend() -> str:
    return "s3"


@pytest.fixture
def extra_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings_overrides(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra_settings: dict[str, Any],
) -> dict[str, Any]:
    return storage_backend_settings(backend, request, tmp_path, monkeypatch) | extra_settings


@pytest.fixture
def media(h264_aac_mp4: Path) -> bytes:
    """A real MP4 grown to ``FILE_SIZE`` by a trailing ``free`` box (valid MP4, still probes)."""
    data = h264_aac_mp4.read_bytes()
    pad = FILE_SIZE - len(data)
    assert pad > 8
    return (
        data
        + struct.pack(">I", pad)
        + b"free"
        + bytes(range(256)) * ((pad - 8) // 256)
        + (b"\0" * ((pad - 8) % 256))
    )


async def init(
    client: AsyncTestClient[Litestar], token: str, data: bytes, **fields: Any
) -> httpx.Response:
    body = {
        "source_name": "clip.mp4",
        "content_length": len(data),
        "content_type": "video/mp4",
        "multipart": True,
    } | fields
    return await client.post("/v1/ingest/init", json=body, headers=bearer(token))


async def issued(
    client: AsyncTestClient[Litestar], token: str, data: bytes, **fields: Any
) -> dict[str, Any]:
    response = await init(client, token, data, sha256=hashlib.sha256(data).hexdigest(), **fields)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def put_part(part: dict[str, Any], body: bytes) -> httpx.Response:
    """The client's own PUT of a part, straight to the store (no token, no API)."""
    async with httpx.AsyncClient() as store:
        return await store.put(part["url"], content=body)


def part_bytes(data: bytes, parts: list[dict[str, Any]], number: int) -> bytes:
    start = sum(p["size"] for p in parts[: number - 1])
    return data[start : start + parts[number - 1]["size"]]


async def commit(
    client: AsyncTestClient[Litestar], token: str, upload_id: str, **fields: Any
) -> httpx.Response:
    return await client.post(
        "/v1/ingest/commit", json={"upload_id": upload_id} | fields, headers=bearer(token)
    )


def open_uploads(moto: MotoServer, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = (
        moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    )
    return uploads


@pytest.mark.postgres
@pytest.mark.parametrize("with_etags", [False, True], ids=["listed", "etags"])
async def test_parts_put_to_their_urls_commit_as_an_asset_with_the_file_sha256(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    media: bytes,
    org_a: str,
    moto_server: MotoServer,
    s3_bucket: str,
    with_etags: bool,
) -> None:
    token = make_token(org_a)
    slot = await issued(client, token, media)
    parts = slot["parts"]
    assert [p["part_number"] for p in parts] == [1, 2]
    assert [p["size"] for p in parts] == [8 * MIB, FILE_SIZE - 8 * MIB]
    assert slot["method"] == "PUT"
    assert slot["upload_url"] == parts[0]["url"]
    assert len(open_uploads(moto_server, s3_bucket)) == 1
    etags = []
    for part in reversed(parts):  # any order: each URL names its part
        answer = await put_part(part, part_bytes(media, parts, part["part_number"]))
        assert answer.status_code == 200, answer.text
        etags.append({"part_number": part["part_number"], "etag": answer.headers["etag"]})
    fields = {"parts": etags} if with_etags else {}
    committed = await commit(client, token, slot["upload_id"], **fields)
    assert committed.status_code == 201, committed.text
    asset = committed.json()
    assert asset["sha256"] == hashlib.sha256(media).hexdigest()
    assert asset["size_bytes"] == FILE_SIZE
    assert asset["media"]["video"]["codec"] == "h264"
    assert open_uploads(moto_server, s3_bucket) == []
    stored = moto_server.client().get_object(
        Bucket=s3_bucket, Key=slot["source_uri"].split("/", 3)[3]
    )
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == asset["sha256"]
    again = await commit(client, token, slot["upload_id"])
    assert again.status_code == 200
    assert again.json()["asset_id"] == asset["asset_id"]


@pytest.mark.postgres
async def test_a_missing_part_is_409_and_the_upload_stays_open_for_it(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    media: bytes,
    org_a: str,
    moto_server: MotoServer,
    s3_bucket: str,
) -> None:
    token = make_token(org_a)
    slot = await issued(client, token, media)
    parts = slot["parts"]
    first = await put_part(parts[0], part_bytes(media, parts, 1))
    assert first.status_code == 200
    listed = await commit(client, token, slot["upload_id"])
    assert listed.status_code == 409, listed.text
    assert listed.json()["code"] == "upload_parts_missing"
    assert "[2]" in listed.json()["detail"]
    named = await commit(
        client,
        token,
        slot["upload_id"],
        parts=[{"part_number": 1, "etag": first.headers["etag"]}],
    )
    assert named.status_code == 409
    assert named.json()["code"] == "upload_parts_missing"
    assert len(open_uploads(moto_server, s3_bucket)) == 1
    # A wrong ETag is the store's refusal, answered the same way.
    second = await put_part(parts[1], part_bytes(media, parts, 2))
    assert second.status_code == 200
    wrong = await commit(
        client,
        token,
        slot["upload_id"],
        parts=[
            {"part_number": 1, "etag": first.headers["etag"]},
            {"part_number": 2, "etag": first.headers["etag"]},
        ],
    )
    assert wrong.status_code == 409, wrong.text
    assert wrong.json()["code"] == "upload_parts_missing"
    done = await commit(client, token, slot["upload_id"])
    assert done.status_code == 201, done.text
    assert done.json()["sha256"] == hashlib.sha256(media).hexdigest()


@pytest.mark.postgres
async def test_a_corrupted_part_is_refused_as_a_checksum_mismatch(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, media: bytes, org_a: str
) -> None:
    token = make_token(org_a)
    slot = await issued(client, token, media)
    parts = slot["parts"]
    assert (await put_part(parts[0], part_bytes(media, parts, 1))).status_code == 200
    body = bytearray(part_bytes(media, parts, 2))
    body[1000] ^= 0xFF
    assert (await put_part(parts[1], bytes(body))).status_code == 200
    refused = await commit(client, token, slot["upload_id"])
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "checksum_mismatch"
    again = await commit(client, token, slot["upload_id"])  # no asset, ever
    assert again.status_code == 422
    assert again.json()["code"] == "checksum_mismatch"


@pytest.mark.postgres
async def test_a_part_of_another_size_is_refused(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, media: bytes, org_a: str
) -> None:
    """Real S3 refuses the PUT itself (the URL signs its length); moto takes it, so what
    commit does with it is checked: from the listing 409, with its ETag the object's size."""
    token = make_token(org_a)
    slot = await issued(client, token, media)
    parts = slot["parts"]
    first = await put_part(parts[0], part_bytes(media, parts, 1))
    longer = await put_part(parts[1], part_bytes(media, parts, 2) + b"more")
    listed = await commit(client, token, slot["upload_id"])
    assert listed.status_code == 409, listed.text
    assert listed.json()["code"] == "upload_parts_missing"
    etags = [
        {"part_number": n, "etag": answer.headers["etag"]}
        for n, answer in ((1, first), (2, longer))
    ]
    named = await commit(client, token, slot["upload_id"], parts=etags)
    assert named.status_code == 400, named.text
    assert named.json()["code"] == "length_mismatch"


@pytest.mark.postgres
async def test_each_part_url_binds_its_length_and_expires_with_the_slot(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, media: bytes, org_a: str
) -> None:
    """S3 refuses a part of another length than the signed one (moto does not check
    signatures, so the URLs are read here)."""
    slot = await issued(client, make_token(org_a), media)
    for part in slot["parts"]:
        query = dict(httpx.URL(part["url"]).params)
        assert query["partNumber"] == str(part["part_number"])
        assert set(query["X-Amz-SignedHeaders"].split(";")) == {"content-length", "host"}
        assert 3500 <= int(query["X-Amz-Expires"]) <= 3600  # the upload URL TTL


@pytest.mark.postgres
async def test_another_organisation_cannot_commit_the_slot(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    media: bytes,
    org_a: str,
    org_b: str,
) -> None:
    token = make_token(org_a)
    slot = await issued(client, token, media)
    parts = slot["parts"]
    etags = []
    for part in parts:
        answer = await put_part(part, part_bytes(media, parts, part["part_number"]))
        etags.append({"part_number": part["part_number"], "etag": answer.headers["etag"]})
    for fields in ({}, {"parts": etags}):
        other = await commit(client, make_token(org_b), slot["upload_id"], **fields)
        assert other.status_code == 404, other.text
        assert other.json()["code"] == "not_found"
    assert (await commit(client, token, slot["upload_id"])).status_code == 201


@pytest.mark.postgres
async def test_multipart_with_resumable_and_parts_for_a_plain_slot_are_refused(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    both = await init(client, token, b"x" * 100, resumable=True)
    assert both.status_code == 422, both.text
    assert both.json()["code"] == "multipart_unsupported"
    plain = await init(client, token, b"x" * 100, multipart=False)
    assert plain.status_code == 201
    assert "parts" not in plain.json()
    parts = await commit(
        client, token, plain.json()["upload_id"], parts=[{"part_number": 1, "etag": '"x"'}]
    )
    assert parts.status_code == 400
    assert parts.json()["code"] == "invalid_request"


@pytest.mark.parametrize("backend", ["local"])
async def test_local_storage_refuses_multipart(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    answer = await init(client, make_token(org_a), b"x" * 100)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "multipart_unsupported"


@pytest.mark.postgres
@pytest.mark.parametrize(
    "extra_settings",
    [
        {
            "upload_url_ttl_seconds": 1,
            "upload_abandon_after_seconds": 1,
            "sweep_interval_seconds": 0.2,
        }
    ],
)
async def test_an_expired_slot_is_swept_and_its_multipart_upload_aborted(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    media: bytes,
    org_a: str,
    moto_server: MotoServer,
    s3_bucket: str,
    settings: Settings,
) -> None:
    token = make_token(org_a)
    slot = await issued(client, token, media)
    parts = slot["parts"]
    assert (await put_part(parts[0], part_bytes(media, parts, 1))).status_code == 200
    assert len(open_uploads(moto_server, s3_bucket)) == 1
    # The app's own sweep (in-process jobs) takes it once it has been expired for the grace.
    for _ in range(100):
        if not open_uploads(moto_server, s3_bucket):
            break
        await anyio.sleep(0.1)
    else:
        pytest.fail("the expired slot's multipart upload was not aborted within 10 s")
    gone = await commit(client, token, slot["upload_id"])
    assert gone.status_code == 404
    objects = moto_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert objects == []
