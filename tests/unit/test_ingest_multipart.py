"""Multipart slots in the ingest use cases, with in-memory fakes: the session recorded at init,
completion at commit (once), refusals. The S3 side is tested for real in
``tests/contract/test_storage_multipart.py`` and ``tests/integration/test_http_multipart.py``."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest

from heimdex.application.ingest import IngestLimits, IngestService, UploadRequest
from heimdex.domain.errors import (
    InvalidInput,
    MultipartUnsupported,
    NotFound,
    NotResumable,
    UploadPartsMissing,
)
from heimdex.domain.model import Principal, Upload
from heimdex.domain.ports import PartETag, PartTarget
from tests.unit.fakes import FakeClock, FakeDatabase, FakeMetrics, FakeProber, FakeStorage

ORG_A = Principal(org_id="org-a")
ORG_B = Principal(org_id="org-b")
BODY = bytes(range(256)) * 4  # 1024 bytes: parts of 300, the last 124
PART = 300


class FakeMultipart:
    """Parts kept by session; completing joins them into the storage's object."""

    def __init__(self, storage: FakeStorage) -> None:
        self.storage = storage
        self.parts: dict[str, dict[int, bytes]] = {}
        self.completed: list[str] = []

    async def begin_multipart(self, upload: Upload) -> str:
        session = f"{PART}:{upload.id}"
        self.parts[session] = {}
        return session

    async def multipart_targets(self, upload: Upload, session: str) -> list[PartTarget]:
        count = -(-upload.content_length // PART)
        return [
            PartTarget(
                part_number=n,
                url=f"https://store/{upload.key}?part={n}",
                size=min(PART, upload.content_length - (n - 1) * PART),
            )
            for n in range(1, count + 1)
        ]

    def put(self, session: str, number: int, data: bytes) -> PartETag:
        self.parts[session][number] = data
        return PartETag(part_number=number, etag=hashlib.sha256(data).hexdigest())

    async def complete_multipart(
        self, key: str, session: str, total: int, parts: Sequence[PartETag] | None
    ) -> None:
        stored = self.parts[session]
        count = -(-total // PART)
        if any(n not in stored for n in range(1, count + 1)):
            raise UploadPartsMissing("a part is missing")
        if parts is not None and any(
            hashlib.sha256(stored[p.part_number]).hexdigest() != p.etag for p in parts
        ):
            raise UploadPartsMissing("an ETag is not the part's")
        self.storage.objects[key] = b"".join(stored[n] for n in range(1, count + 1))
        self.completed.append(session)


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def multipart(storage: FakeStorage) -> FakeMultipart:
    return FakeMultipart(storage)


def make_service(storage: FakeStorage, multipart: FakeMultipart | None) -> IngestService:
    limits = IngestLimits(
        max_upload_size_bytes=10_000,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=30),
    )
    return IngestService(
        FakeDatabase(),
        storage,
        FakeProber(),
        FakeClock(),
        limits,
        metrics=FakeMetrics(),
        multipart=multipart,
    )


@pytest.fixture
def service(storage: FakeStorage, multipart: FakeMultipart) -> IngestService:
    return make_service(storage, multipart)


def request(**overrides: object) -> UploadRequest:
    values: dict[str, object] = {
        "source_name": "clip.mp4",
        "content_length": len(BODY),
        "content_type": "video/mp4",
        "sha256": hashlib.sha256(BODY).hexdigest(),
        "multipart": True,
    }
    return UploadRequest(**(values | overrides))  # type: ignore[arg-type]


async def test_multipart_needs_a_store_that_has_it_and_excludes_resumable(
    storage: FakeStorage,
) -> None:
    with pytest.raises(MultipartUnsupported):
        await make_service(storage, None).init_upload(ORG_A, request(), "http://api")
    with pytest.raises(MultipartUnsupported):
        await make_service(storage, FakeMultipart(storage)).init_upload(
            ORG_A, request(resumable=True), "http://api"
        )


async def test_init_records_the_session_and_commit_completes_it_once(
    service: IngestService, multipart: FakeMultipart
) -> None:
    issued = await service.init_upload(ORG_A, request(), "http://api")
    upload = issued.upload
    assert upload.multipart
    assert not upload.resumable
    assert upload.resumable_session in multipart.parts
    assert issued.parts is not None
    assert [p.size for p in issued.parts] == [300, 300, 300, 124]
    assert issued.target.url == issued.parts[0].url
    session = upload.resumable_session
    etags = [
        multipart.put(session, p.part_number, BODY[(p.part_number - 1) * PART :][: p.size])
        for p in issued.parts
    ]
    asset, created = await service.commit_upload(ORG_A, upload.id, parts=etags)
    assert created
    assert asset.sha256 == hashlib.sha256(BODY).hexdigest()
    again, created = await service.commit_upload(ORG_A, upload.id)
    assert (again.id, created) == (asset.id, False)
    assert multipart.completed == [session]


async def test_a_missing_part_is_refused_until_it_is_sent(
    service: IngestService, multipart: FakeMultipart
) -> None:
    issued = await service.init_upload(ORG_A, request(), "http://api")
    session = issued.upload.resumable_session
    assert session is not None
    assert issued.parts is not None
    for part in issued.parts[:-1]:
        multipart.put(session, part.part_number, BODY[(part.part_number - 1) * PART :][:PART])
    with pytest.raises(UploadPartsMissing):
        await service.commit_upload(ORG_A, issued.upload.id)
    multipart.put(session, len(issued.parts), BODY[(len(issued.parts) - 1) * PART :])
    asset, created = await service.commit_upload(ORG_A, issued.upload.id)
    assert created
    assert asset.size_bytes == len(BODY)


async def test_another_organisation_and_the_wrong_ways_in_are_refused(
    service: IngestService, multipart: FakeMultipart
) -> None:
    issued = await service.init_upload(ORG_A, request(), "http://api")
    with pytest.raises(NotFound):
        await service.commit_upload(ORG_B, issued.upload.id)

    async def chunks() -> AsyncIterator[bytes]:
        yield BODY

    with pytest.raises(NotResumable):  # its bytes go to the parts' URLs, not the API's PUT
        await service.receive_upload("org-a", issued.upload.id, chunks())
    plain = await service.init_upload(ORG_A, request(multipart=False), "http://api")
    assert not plain.upload.multipart
    assert plain.parts is None
    with pytest.raises(InvalidInput):
        await service.commit_upload(
            ORG_A, plain.upload.id, parts=[PartETag(part_number=1, etag="x")]
        )
    assert multipart.completed == []
