"""S3-only checks on a real moto server: what presigned URLs bind, direct uploads, memory.

moto does not verify every signed condition real S3 does (it ignores a wrong body checksum and
most signed headers), so the URL itself is checked for what it binds; commit re-hashes the
bytes whatever the store said (``tests/unit/test_ingest.py``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from heimdex.adapters.storage.s3 import MIN_PART_SIZE, S3Storage, _full_object_sha256
from heimdex.application.ingest import IngestLimits, IngestService, UploadRequest
from heimdex.domain.declared import Declared
from heimdex.domain.errors import StorageError, UploadTooLarge
from heimdex.domain.model import Principal, Upload
from tests.builders import make_upload
from tests.fixtures.s3 import MotoServer, s3_session, s3_storage
from tests.unit.fakes import FakeClock, FakeDatabase, FakeMetrics, FakeProber

KEY = "uploads/org-a/u1/clip.mp4"


@pytest.fixture
async def store(
    moto_server: MotoServer, s3_bucket: str, tmp_path: Path
) -> AsyncIterator[S3Storage]:
    storage = s3_storage(moto_server, s3_bucket, tmp_path / "tmp", part_size=MIN_PART_SIZE)
    try:
        yield storage
    finally:
        await storage.aclose()


def upload_of(data: bytes, *, sha256: bool, ttl: timedelta = timedelta(hours=1)) -> Upload:
    now = datetime.now(UTC)
    return make_upload(
        "org-a",
        at=now,
        key=KEY,
        source_uri="s3://bucket/" + KEY,
        content_length=len(data),
        declared_sha256=hashlib.sha256(data).hexdigest() if sha256 else None,
        expires_at=now + ttl,
    )


async def http(method: str, url: str, **options: Any) -> httpx.Response:
    """A client's request to the bucket (no token, just the presigned URL)."""
    async with httpx.AsyncClient() as client:
        return await client.request(method, url, **options)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.mark.parametrize("declared", [False, True])
async def test_the_presigned_put_signs_length_type_checksum_and_write_once(
    store: S3Storage, declared: bool
) -> None:
    data = b"video bytes"
    upload = upload_of(data, sha256=declared, ttl=timedelta(minutes=10))
    target = await store.upload_target(upload, "https://api.example")
    query = query_of(target.url)
    signed = set(query["X-Amz-SignedHeaders"].split(";"))
    expected = {"host", "content-length", "content-type", "if-none-match"}
    if declared:
        expected.add("x-amz-checksum-sha256")
    assert signed == expected
    # Every header the client is told to send is signed, and nothing signed is left out.
    assert {name.lower() for name in target.headers} | {"host"} == signed
    assert target.headers["Content-Length"] == str(len(data))
    assert target.headers["Content-Type"] == "video/mp4"
    assert target.headers["If-None-Match"] == "*"
    if declared:
        raw = base64.b64decode(target.headers["x-amz-checksum-sha256"])
        assert raw == hashlib.sha256(data).digest()
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert 590 <= int(query["X-Amz-Expires"]) <= 600
    assert urlsplit(target.url).path == f"/{store.bucket}/{KEY}"


async def test_a_client_puts_straight_to_the_bucket_once(store: S3Storage) -> None:
    data = os.urandom(70_000)
    target = await store.upload_target(upload_of(data, sha256=True), "https://api.example")
    put = await http("PUT", target.url, content=data, headers=target.headers)
    assert put.status_code == 200, put.text
    stat = await store.stat(KEY)
    assert stat is not None
    assert stat.size_bytes == len(data)
    async with store.local_copy(KEY) as copy:
        assert copy.stored.sha256 == hashlib.sha256(data).hexdigest()
    # If-None-Match: * — the same URL cannot replace the object once it exists.
    again = await http("PUT", target.url, content=data[::-1], headers=target.headers)
    assert again.status_code == 412, again.text
    async with store.local_copy(KEY) as copy:
        assert copy.stored.sha256 == hashlib.sha256(data).hexdigest()


async def test_a_commit_reads_the_object_from_the_bucket_once(
    moto_server: MotoServer, s3_bucket: str, tmp_path: Path
) -> None:
    """A HEAD, then one GET whose bytes are hashed and probed: never a second download."""
    session = s3_session()
    requests: list[str] = []

    def record(model: Any, **_: Any) -> None:
        requests.append(model.name)

    session.events.register("before-call.s3", record)  # every S3 request the storage sends
    storage = s3_storage(moto_server, s3_bucket, tmp_path / "tmp", session=session)
    prober = FakeProber()
    limits = IngestLimits(
        max_upload_size_bytes=1 << 30,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=30),
    )
    service = IngestService(
        FakeDatabase(), storage, prober, FakeClock(datetime.now(UTC)), limits, FakeMetrics()
    )
    data = os.urandom(3_000_000)  # several read chunks
    principal = Principal(org_id="org-a")
    try:
        issued = await service.init_upload(
            principal,
            UploadRequest(
                source_name="clip.mp4", content_length=len(data), content_type="video/mp4"
            ),
            "https://api.example",
        )
        put = await http("PUT", issued.target.url, content=data, headers=issued.target.headers)
        assert put.status_code == 200, put.text
        requests.clear()
        asset, created = await service.commit_upload(principal, issued.upload.id)
    finally:
        await storage.aclose()
    assert created
    assert asset.sha256 == hashlib.sha256(data).hexdigest()
    assert requests == ["HeadObject", "GetObject"]
    assert len(prober.probed) == 1
    assert not prober.probed[0].exists()  # the copy it probed is gone


async def test_download_urls_are_presigned_gets_with_the_right_type(store: S3Storage) -> None:
    key = "derived/org-a/a1/thumbs/0000.jpg"
    await store.write_bytes(key, b"\xff\xd8\xff jpeg")
    url = await store.download_url(key, "https://ignored.example", int(time.time()) + 300)
    query = query_of(url)
    assert 290 <= int(query["X-Amz-Expires"]) <= 300
    assert query["X-Amz-SignedHeaders"] == "host"
    got = await http("GET", url)
    assert got.status_code == 200
    assert got.content == b"\xff\xd8\xff jpeg"
    assert got.headers["content-type"] == "image/jpeg"
    sidecar = "derived/org-a/sidecars/a1.json"
    await store.write_bytes(sidecar, b"{}")
    got = await http("GET", await store.download_url(sidecar, "", int(time.time()) + 60))
    assert (got.content, got.headers["content-type"]) == (b"{}", "application/json")


async def test_presigned_urls_use_the_public_endpoint_when_set(
    moto_server: MotoServer, s3_bucket: str, tmp_path: Path
) -> None:
    storage = s3_storage(
        moto_server, s3_bucket, tmp_path, public_endpoint_url="https://s3.public.example"
    )
    try:
        await storage.write_bytes(KEY, b"x")  # requests still go to the private endpoint
        url = await storage.download_url(KEY, "", int(time.time()) + 60)
        target = await storage.upload_target(upload_of(b"x", sha256=False), "")
    finally:
        await storage.aclose()
    assert url.startswith("https://s3.public.example/")
    assert target.url.startswith("https://s3.public.example/")


async def test_a_failed_multipart_write_is_aborted(
    store: S3Storage, moto_server: MotoServer
) -> None:
    part = b"z" * (1024 * 1024)

    async def too_long() -> AsyncIterator[bytes]:
        for _ in range(MIN_PART_SIZE // len(part) + 4):
            yield part

    with pytest.raises(UploadTooLarge):
        await store.write_stream(
            KEY, too_long(), declared=Declared(size=MIN_PART_SIZE + 2 * len(part))
        )
    assert await store.stat(KEY) is None
    leftovers = moto_server.client().list_multipart_uploads(Bucket=store.bucket)
    assert leftovers.get("Uploads", []) == []


async def test_memory_stays_bounded_by_a_part_not_the_object(store: S3Storage) -> None:
    """A 32 MiB object through a store with 5 MiB parts: no step holds it whole."""
    chunk = os.urandom(1024 * 1024)
    total = 32 * len(chunk)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // len(chunk)):
            yield chunk

    await store.write_bytes("uploads/org-a/u0/warm.bin", b"x")  # open the client first
    tracemalloc.start()
    try:
        await store.write_stream(KEY, body(), declared=Declared(size=total))
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        async with store.local_copy(KEY) as copy:
            assert copy.stored.size_bytes == total
        checked_copy_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        async with store.local_path(KEY) as path:
            assert path.stat().st_size == total
        copy_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A part and its joined copy are in memory while it is sent; reads hold about a chunk.
    assert write_peak < 3 * MIN_PART_SIZE < total / 2
    assert checked_copy_peak < total / 4
    assert copy_peak < total / 4


async def test_the_scratch_sweep_takes_only_the_stores_own_copies(
    store: S3Storage, tmp_path: Path
) -> None:
    """``temp_dir`` is shared (the legacy endpoint streams its uploads there): only the
    ``s3-…`` directories copies are made in are swept, and a link is never followed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.mp4").write_bytes(b"not scratch")
    store.temp_dir.mkdir(parents=True)
    others = [store.temp_dir / "legacy-abc.upload", store.temp_dir / "s3-but-a-file"]
    for other in others:
        other.write_bytes(b"someone else's")
    (store.temp_dir / "another-tool").mkdir()
    others.append(store.temp_dir / "another-tool" / "its.tmp")
    others[-1].write_bytes(b"someone else's")
    link = store.temp_dir / "s3-a-link"
    link.symlink_to(elsewhere, target_is_directory=True)
    left = store.temp_dir / "s3-left-by-a-crash"
    left.mkdir()
    (left / "clip.mp4").write_bytes(b"x" * 1000)
    then = time.time() - 3 * 86400
    for path in [*others, left, left / "clip.mp4", link, elsewhere, elsewhere / "precious.mp4"]:
        os.utime(path, (then, then), follow_symlinks=False)

    removed = await store.sweep_scratch(datetime.now(UTC) - timedelta(days=1))

    assert [(Path(r.path), r.size_bytes) for r in removed] == [(left, 1000)]
    assert not left.exists()
    assert all(other.exists() for other in others)
    assert (elsewhere / "precious.mp4").read_bytes() == b"not scratch"


async def test_a_copy_written_to_lately_is_kept_however_old_its_directory(
    store: S3Storage,
) -> None:
    """A copy's directory is made when its download starts; the file in it is what a long
    download keeps writing."""
    copy = store.temp_dir / "s3-long-download"
    copy.mkdir(parents=True)
    (copy / "clip.mp4").write_bytes(b"still arriving")
    then = time.time() - 3 * 86400
    os.utime(copy, (then, then))
    assert await store.sweep_scratch(datetime.now(UTC) - timedelta(days=1)) == []
    assert (copy / "clip.mp4").exists()


async def test_check_fails_on_a_missing_bucket(moto_server: MotoServer, tmp_path: Path) -> None:
    storage = s3_storage(moto_server, "heimdex-no-such-bucket", tmp_path)
    try:
        with pytest.raises(StorageError, match="heimdex-no-such-bucket"):
            await storage.check()
    finally:
        await storage.aclose()


def test_only_a_full_object_sha256_is_taken_from_the_store() -> None:
    digest = hashlib.sha256(b"x").digest()
    encoded = base64.b64encode(digest).decode()
    assert _full_object_sha256(encoded, "FULL_OBJECT") == digest.hex()
    assert _full_object_sha256(encoded, None) == digest.hex()
    assert _full_object_sha256(encoded + "-3", "COMPOSITE") is None
    assert _full_object_sha256(encoded, "COMPOSITE") is None
    assert _full_object_sha256(None, None) is None
    assert _full_object_sha256("not base64!", None) is None
