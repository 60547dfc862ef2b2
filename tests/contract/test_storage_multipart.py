"""The ``MultipartUploads`` port on S3 (its one adapter), against a real moto server: parts sent
by plain HTTP PUTs to the presigned URLs, completed from the listing or from the client's ETags,
refused when parts are missing, aborted by ``discard_resumable``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from heimdex.adapters.storage.s3 import DEFAULT_PART_SIZE, S3Storage
from heimdex.domain.errors import UploadNotReceived, UploadPartsMissing
from heimdex.domain.model import Upload
from heimdex.domain.ports import PartETag, PartTarget
from tests.builders import make_upload
from tests.fixtures.s3 import MotoServer, s3_storage

KEY = "uploads/org-a/u1/clip.mp4"
MIB = 1024 * 1024


@pytest.fixture
async def store(
    moto_server: MotoServer, s3_bucket: str, tmp_path: Path
) -> AsyncIterator[S3Storage]:
    storage = s3_storage(moto_server, s3_bucket, tmp_path / "tmp")
    try:
        yield storage
    finally:
        await storage.aclose()


def upload_of(size: int) -> Upload:
    now = datetime.now(UTC)
    return make_upload(
        "org-a",
        at=now,
        key=KEY,
        source_uri="s3://bucket/" + KEY,
        content_length=size,
        expires_at=now + timedelta(hours=1),
    )


async def put(parts: list[PartTarget], data: bytes, numbers: set[int]) -> list[PartETag]:
    sent = []
    start = 0
    async with httpx.AsyncClient() as client:
        for part in parts:
            body = data[start : start + part.size]
            start += part.size
            if part.part_number not in numbers:
                continue
            answer = await client.put(part.url, content=body)
            assert answer.status_code == 200, answer.text
            sent.append(PartETag(part_number=part.part_number, etag=answer.headers["etag"]))
    return sent


def open_uploads(moto: MotoServer, bucket: str) -> list[str]:
    listed = moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [u["UploadId"] for u in listed]


@pytest.mark.parametrize("named", [False, True], ids=["listed", "etags"])
async def test_parts_sent_to_their_urls_complete_into_the_object(
    store: S3Storage, moto_server: MotoServer, s3_bucket: str, named: bool
) -> None:
    data = os.urandom(DEFAULT_PART_SIZE * 2 + 12345)
    upload = upload_of(len(data))
    session = await store.begin_multipart(upload)
    parts = await store.multipart_targets(upload, session)
    assert [p.size for p in parts] == [DEFAULT_PART_SIZE, DEFAULT_PART_SIZE, 12345]
    etags = await put(parts, data, {1, 2, 3})
    assert await store.stat(KEY) is None  # nothing readable before completion
    await store.complete_multipart(KEY, session, len(data), etags if named else None)
    async with store.local_copy(KEY) as copy:
        assert copy.stored.sha256 == hashlib.sha256(data).hexdigest()
    assert open_uploads(moto_server, s3_bucket) == []
    # Completed already (a commit whose answer was lost): completing again is fine.
    await store.complete_multipart(KEY, session, len(data), None)


async def test_a_missing_part_is_refused_and_the_upload_stays_open(
    store: S3Storage, moto_server: MotoServer, s3_bucket: str
) -> None:
    data = os.urandom(DEFAULT_PART_SIZE + 1000)
    upload = upload_of(len(data))
    session = await store.begin_multipart(upload)
    parts = await store.multipart_targets(upload, session)
    sent = await put(parts, data, {2})
    with pytest.raises(UploadPartsMissing, match=r"\[1\]"):
        await store.complete_multipart(KEY, session, len(data), None)
    with pytest.raises(UploadPartsMissing):
        await store.complete_multipart(KEY, session, len(data), sent)
    with pytest.raises(UploadPartsMissing):  # an ETag that is not the part's
        await store.complete_multipart(
            KEY, session, len(data), [PartETag(part_number=1, etag=sent[0].etag), *sent]
        )
    assert len(open_uploads(moto_server, s3_bucket)) == 1
    assert await store.stat(KEY) is None
    await put(parts, data, {1})
    await store.complete_multipart(KEY, session, len(data), None)
    assert (await store.stat(KEY)) is not None


async def test_a_part_of_another_size_is_refused_from_the_listing(store: S3Storage) -> None:
    """Real S3 refuses such a PUT (the URL signs its length); moto does not check signatures,
    so the listing is the check that still holds."""
    data = os.urandom(DEFAULT_PART_SIZE + 1000)
    upload = upload_of(len(data))
    session = await store.begin_multipart(upload)
    parts = await store.multipart_targets(upload, session)
    await put(parts, data, {1})
    async with httpx.AsyncClient() as client:
        assert (await client.put(parts[1].url, content=b"x" * 2000)).status_code == 200
    with pytest.raises(UploadPartsMissing, match=r"\[2\]"):
        await store.complete_multipart(KEY, session, len(data), None)


async def test_discard_aborts_the_upload_and_completing_then_is_not_received(
    store: S3Storage, moto_server: MotoServer, s3_bucket: str
) -> None:
    data = os.urandom(1000)
    upload = upload_of(len(data))
    session = await store.begin_multipart(upload)
    parts = await store.multipart_targets(upload, session)
    await put(parts, data, {1})
    assert len(open_uploads(moto_server, s3_bucket)) == 1
    await store.discard_resumable(KEY, session)
    assert open_uploads(moto_server, s3_bucket) == []
    with pytest.raises(UploadNotReceived):
        await store.complete_multipart(KEY, session, len(data), None)
    # (Completing named parts of an aborted upload: S3 answers NoSuchUpload, the same path; moto
    # answers 500, so that is not checked here.)
    await store.discard_resumable(KEY, session)  # already gone: fine
