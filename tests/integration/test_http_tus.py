"""Resumable uploads (tus 1.0) through the real app: on SQLite with local storage and on
PostgreSQL (as the runtime role) with S3 on a moto server."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.settings import Settings
from tests.fixtures.app import TokenFactory, bearer
from tests.fixtures.s3 import storage_backend_settings

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


async def create(
    client: AsyncTestClient[Litestar], token: str, data: bytes, **meta: str
) -> httpx.Response:
    meta = {"filename": "clip.mp4", "filetype": "video/mp4"} | meta
    return await client.post(
        "/v1/uploads",
        headers=TUS
        | bearer(token)
        | {"Upload-Length": str(len(data)), "Upload-Metadata": metadata(**meta)},
    )


async def created(client: AsyncTestClient[Litestar], token: str, data: bytes, **meta: str) -> str:
    """The new slot's path, /v1/uploads/{id}."""
    response = await create(client, token, data, **meta)
    assert response.status_code == 201, response.text
    assert response.headers["tus-resumable"] == "1.0.0"
    assert "upload-expires" in response.headers
    path = httpx.URL(response.headers["location"]).path
    assert path.startswith("/v1/uploads/")
    return path


async def send(
    client: AsyncTestClient[Litestar],
    path: str,
    token: str,
    offset: int,
    body: bytes,
    **headers: str,
) -> httpx.Response:
    return await client.patch(
        path,
        content=body,
        headers=TUS | CHUNK | bearer(token) | {"Upload-Offset": str(offset)} | headers,
    )


async def offset_of(client: AsyncTestClient[Litestar], path: str, token: str) -> int:
    response = await client.head(path, headers=TUS | bearer(token))
    assert response.status_code == 200, response.headers
    assert response.headers["cache-control"] == "no-store"
    return int(response.headers["upload-offset"])


def checksum(algorithm: str, body: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, body).digest()).decode()}"


async def test_a_file_sent_in_pieces_with_checksums_commits_with_its_sha256(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, h264_aac_mp4: Path, org_a: str
) -> None:
    token = make_token(org_a)
    data = h264_aac_mp4.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    path = await created(client, token, data, sha256=sha256)
    assert await offset_of(client, path, token) == 0
    cuts = [0, 1000, len(data) // 2, len(data)]
    for number, (start, end) in enumerate(itertools.pairwise(cuts)):
        body = data[start:end]
        algorithm = ("sha1", "sha256", "sha512")[number]
        patch = await send(
            client, path, token, start, body, **{"Upload-Checksum": checksum(algorithm, body)}
        )
        assert patch.status_code == 204, patch.text
        assert patch.headers["upload-offset"] == str(end)
        assert patch.headers["tus-resumable"] == "1.0.0"
        assert await offset_of(client, path, token) == end
    upload_id = path.rsplit("/", 1)[1]
    commit = await client.post(
        "/v1/ingest/commit", json={"upload_id": upload_id}, headers=bearer(token)
    )
    assert commit.status_code == 201, commit.text
    assert commit.json()["sha256"] == sha256
    assert commit.json()["size_bytes"] == len(data)
    # Complete: another PATCH is refused, HEAD still tells the whole length.
    again = await send(client, path, token, len(data), b"x")
    assert again.status_code == 409
    assert await offset_of(client, path, token) == len(data)


async def test_a_declared_sha256_the_bytes_do_not_have_is_refused_at_commit(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    data = os.urandom(4096)
    path = await created(client, token, data, sha256="0" * 64)
    assert (await send(client, path, token, 0, data)).status_code == 204
    commit = await client.post(
        "/v1/ingest/commit", json={"upload_id": path.rsplit("/", 1)[1]}, headers=bearer(token)
    )
    assert commit.status_code == 422
    assert commit.json()["code"] == "checksum_mismatch"


async def test_a_wrong_offset_is_409_and_changes_nothing(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    data = os.urandom(10_000)
    path = await created(client, token, data)
    assert (await send(client, path, token, 0, data[:4000])).status_code == 204
    for wrong in (0, 3999, 4001):
        refused = await send(client, path, token, wrong, data[wrong : wrong + 10])
        assert refused.status_code == 409
        assert refused.json()["code"] == "upload_offset_mismatch"
        assert refused.headers["tus-resumable"] == "1.0.0"
    assert await offset_of(client, path, token) == 4000


async def test_a_corrupted_chunk_is_460_and_discarded(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, h264_aac_mp4: Path, org_a: str
) -> None:
    token = make_token(org_a)
    data = h264_aac_mp4.read_bytes()
    path = await created(client, token, data)
    first = data[:5000]
    assert (await send(client, path, token, 0, first)).status_code == 204
    rest = data[5000:]
    corrupted = bytearray(rest)
    corrupted[len(rest) // 2] ^= 0x01
    for algorithm in ("sha1", "sha256"):
        refused = await send(
            client,
            path,
            token,
            5000,
            bytes(corrupted),
            **{"Upload-Checksum": checksum(algorithm, rest)},
        )
        assert refused.status_code == 460, refused.text
        assert refused.json()["code"] == "chunk_checksum_mismatch"
        assert await offset_of(client, path, token) == 5000
    unknown = await send(client, path, token, 5000, rest, **{"Upload-Checksum": "crc32 AAAA"})
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "checksum_algorithm_unsupported"
    good = await send(
        client, path, token, 5000, rest, **{"Upload-Checksum": checksum("sha1", rest)}
    )
    assert good.status_code == 204
    commit = await client.post(
        "/v1/ingest/commit", json={"upload_id": path.rsplit("/", 1)[1]}, headers=bearer(token)
    )
    assert commit.status_code == 201, commit.text
    assert commit.json()["sha256"] == hashlib.sha256(data).hexdigest()


async def test_another_organisation_sees_404_everywhere(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, org_b: str
) -> None:
    mine, theirs = make_token(org_a), make_token(org_b)
    data = os.urandom(1000)
    path = await created(client, mine, data)
    assert (await send(client, path, mine, 0, data[:10])).status_code == 204
    head = await client.head(path, headers=TUS | bearer(theirs))
    assert head.status_code == 404
    patch = await send(client, path, theirs, 10, data[10:])
    assert patch.status_code == 404
    assert patch.json()["code"] == "not_found"
    assert (await client.delete(path, headers=TUS | bearer(theirs))).status_code == 404
    commit = await client.post(
        "/v1/ingest/commit", json={"upload_id": path.rsplit("/", 1)[1]}, headers=bearer(theirs)
    )
    assert commit.status_code == 404
    assert await offset_of(client, path, mine) == 10  # untouched
    missing = f"/v1/uploads/{uuid.uuid4()}"
    assert (await client.head(missing, headers=TUS | bearer(mine))).status_code == 404


async def test_termination_removes_the_slot_and_its_bytes(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, settings: Settings, org_a: str
) -> None:
    token = make_token(org_a)
    data = os.urandom(50_000)
    path = await created(client, token, data)
    assert (await send(client, path, token, 0, data[:20_000])).status_code == 204
    deleted = await client.delete(path, headers=TUS | bearer(token))
    assert deleted.status_code == 204
    assert deleted.headers["tus-resumable"] == "1.0.0"
    assert (await client.head(path, headers=TUS | bearer(token))).status_code == 404
    assert (await send(client, path, token, 20_000, data[20_000:])).status_code == 404
    if settings.storage.backend == "local":
        partials = settings.resolved_storage_root / ".resumable"
        assert list(partials.iterdir()) == []


async def test_protocol_errors_answer_tus_problems(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    data = os.urandom(100)
    path = await created(client, token, data)
    old = await client.head(path, headers=bearer(token) | {"Tus-Resumable": "0.2.2"})
    assert old.status_code == 412
    assert old.headers["tus-version"] == "1.0.0"
    missing = await client.post("/v1/uploads", headers=bearer(token) | {"Upload-Length": "5"})
    assert missing.status_code == 412
    wrong_type = await client.patch(
        path,
        content=data,
        headers=TUS | bearer(token) | {"Upload-Offset": "0", "Content-Type": "video/mp4"},
    )
    assert wrong_type.status_code == 415
    assert wrong_type.json()["code"] == "patch_content_type_invalid"
    no_offset = await client.patch(path, content=data, headers=TUS | CHUNK | bearer(token))
    assert no_offset.status_code == 400
    assert no_offset.json()["code"] == "invalid_tus_header"
    too_long = await send(client, path, token, 0, data + b"!")
    assert too_long.status_code == 413
    assert too_long.json()["code"] == "upload_too_large"
    assert await offset_of(client, path, token) == 0
    unauthenticated = await client.head(path, headers=TUS)
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["tus-resumable"] == "1.0.0"
    not_media = await create(client, token, data, filename="notes.txt", filetype="text/plain")
    assert not_media.status_code == 415
    assert not_media.json()["code"] == "unsupported_media_type"
    options = await client.options("/v1/uploads")
    assert options.status_code == 204
    assert options.headers["tus-version"] == "1.0.0"
    assert set(options.headers["tus-extension"].split(",")) == {
        "creation",
        "termination",
        "checksum",
        "expiration",
    }
    assert {"sha1", "sha256"} <= set(options.headers["tus-checksum-algorithm"].split(","))
    assert int(options.headers["tus-max-size"]) > 0


async def test_init_with_resumable_answers_a_tus_url(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    data = os.urandom(3000)
    init = await client.post(
        "/v1/ingest/init",
        json={
            "source_name": "c.mp4",
            "content_length": len(data),
            "content_type": "video/mp4",
            "resumable": True,
        },
        headers=bearer(token),
    )
    assert init.status_code == 201, init.text
    target = init.json()
    assert target["method"] == "PATCH"
    # A wrong type is the client's error (found by fuzzing: once a 500, as the field's name was
    # also a dependency's).
    wrong = await client.post(
        "/v1/ingest/init",
        json={
            "source_name": "c.mp4",
            "content_length": 1,
            "content_type": "video/mp4",
            "resumable": "yes",
        },
        headers=bearer(token),
    )
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_request"
    path = httpx.URL(target["upload_url"]).path
    assert path == f"/v1/uploads/{target['upload_id']}"
    assert (await send(client, path, token, 0, data[:1000])).status_code == 204
    # A resumable slot takes no single PUT, and a single-PUT slot no PATCH.
    put = await client.put(path, content=data, headers=bearer(token))
    assert put.status_code == 409
    assert put.json()["code"] == "upload_not_resumable"
    assert (await send(client, path, token, 1000, data[1000:])).status_code == 204
    single = await client.post(
        "/v1/ingest/init",
        json={"source_name": "d.mp4", "content_length": 10, "content_type": "video/mp4"},
        headers=bearer(token),
    )
    refused = await send(client, f"/v1/uploads/{single.json()['upload_id']}", token, 0, b"x")
    assert refused.status_code == 409
    assert refused.json()["code"] == "upload_not_resumable"


@pytest.mark.parametrize("extra_settings", [{"org_max_resumable_uploads": 2}])
async def test_unfinished_resumable_uploads_per_organisation_are_capped(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, org_b: str
) -> None:
    token = make_token(org_a)
    data = os.urandom(100)
    first = await created(client, token, data)
    second = await created(client, token, data)
    refused = await create(client, token, data)
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_resumable_uploads"
    assert refused.headers["tus-resumable"] == "1.0.0"
    assert (await create(client, make_token(org_b), data)).status_code == 201  # per organisation
    # A finished upload and a terminated one no longer count.
    assert (await send(client, first, token, 0, data)).status_code == 204
    await created(client, token, data)
    assert (await create(client, token, data)).status_code == 429
    assert (await client.delete(second, headers=TUS | bearer(token))).status_code == 204
    await created(client, token, data)


@pytest.mark.parametrize(
    "extra_settings",
    [
        {
            "upload_resumable_ttl_seconds": 1,
            "upload_abandon_after_seconds": 1,
            "sweep_interval_seconds": 0.2,
        }
    ],
)
async def test_an_idle_slot_expires_then_is_swept_with_its_bytes(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, settings: Settings, org_a: str
) -> None:
    token = make_token(org_a)
    data = os.urandom(20_000)
    path = await created(client, token, data)
    sent = await send(client, path, token, 0, data[:5000])
    assert sent.status_code == 204
    assert "upload-expires" in sent.headers
    await anyio.sleep(1.2)
    expired = await send(client, path, token, 5000, data[5000:])
    assert expired.status_code == 410
    assert expired.json()["code"] == "upload_expired"
    # The app's own sweep (in-process jobs) takes it once it has been expired for the grace.
    for _ in range(100):
        if (await client.head(path, headers=TUS | bearer(token))).status_code == 404:
            break
        await anyio.sleep(0.1)
    else:
        pytest.fail("the expired slot was not swept within 10 s")
    if settings.storage.backend == "local":
        assert list((settings.resolved_storage_root / ".resumable").iterdir()) == []
