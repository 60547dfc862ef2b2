"""The ingest use cases with in-memory fakes: state rules, limits, tenancy."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import msgspec
import pytest

from heimdex.application.ingest import IngestLimits, IngestService, UploadRequest
from heimdex.domain.errors import (
    ChecksumMismatch,
    InvalidInput,
    InvalidMedia,
    LengthMismatch,
    NotFound,
    SourceUriForbidden,
    UnsupportedMediaType,
    UploadAlreadyReceived,
    UploadExpired,
    UploadInProgress,
    UploadNotReceived,
    UploadTooLarge,
)
from heimdex.domain.model import Principal, UploadStatus
from heimdex.domain.ports import LocalCopy, StoredObject
from tests.unit.fakes import FakeClock, FakeDatabase, FakeMetrics, FakeProber, FakeStorage

ORG_A = Principal(org_id="org-a")
ORG_B = Principal(org_id="org-b")
BODY = b"0123456789" * 100


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def metrics() -> FakeMetrics:
    return FakeMetrics()


@pytest.fixture
def service(
    database: FakeDatabase, storage: FakeStorage, clock: FakeClock, metrics: FakeMetrics
) -> IngestService:
    limits = IngestLimits(
        max_upload_size_bytes=10_000,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=30),
    )
    return IngestService(database, storage, FakeProber(), clock, limits, metrics=metrics)


def request(**overrides: object) -> UploadRequest:
    values: dict[str, object] = {
        "source_name": "../My Clip.mp4",
        "content_length": len(BODY),
        "content_type": "video/mp4",
    }
    values.update(overrides)
    return UploadRequest(**values)  # type: ignore[arg-type]


async def body(data: bytes = BODY) -> AsyncIterator[bytes]:
    yield data[:300]
    yield data[300:]


async def test_init_issues_a_pending_slot_with_a_safe_name(service: IngestService) -> None:
    issued = await service.init_upload(ORG_A, request(), "http://api")
    upload = issued.upload
    assert upload.status is UploadStatus.PENDING
    assert upload.source_name == "My_Clip.mp4"
    assert upload.key == f"uploads/org-a/{upload.id}/My_Clip.mp4"
    assert upload.source_uri == "mem://" + upload.key
    assert issued.target.url == f"http://api/put/{upload.id}"


async def test_init_enforces_size_type_and_checksum_format(service: IngestService) -> None:
    with pytest.raises(UploadTooLarge):
        await service.init_upload(ORG_A, request(content_length=10_001), "http://api")
    for bad in ("text/plain", "application/octet-stream", "video", "image/png"):
        with pytest.raises(UnsupportedMediaType):
            await service.init_upload(ORG_A, request(content_type=bad), "http://api")
    with pytest.raises(InvalidInput):
        await service.init_upload(ORG_A, request(sha256="abc"), "http://api")
    issued = await service.init_upload(ORG_A, request(content_type="Audio/MPEG"), "http://api")
    assert issued.upload.content_type == "audio/mpeg"


async def test_receive_then_commit_makes_one_asset(
    service: IngestService, storage: FakeStorage
) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    received = await service.receive_upload("org-a", upload.id, body())
    assert received.status is UploadStatus.RECEIVED
    assert received.received_sha256 == hashlib.sha256(BODY).hexdigest()
    asset, created = await service.commit_upload(ORG_A, upload.id)
    assert created
    assert asset.sha256 == received.received_sha256
    again, created_again = await service.commit_upload(ORG_A, upload.id)
    assert (again.id, created_again) == (asset.id, False)


async def test_a_second_upload_into_a_received_slot_is_refused(service: IngestService) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    await service.receive_upload("org-a", upload.id, body())
    with pytest.raises(UploadAlreadyReceived):
        await service.receive_upload("org-a", upload.id, body())


async def test_an_expired_slot_is_gone(service: IngestService, clock: FakeClock) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    clock.advance(hours=2)
    with pytest.raises(UploadExpired):
        await service.receive_upload("org-a", upload.id, body())


@pytest.mark.parametrize(
    ("data", "error"),
    [(BODY + b"x", UploadTooLarge), (BODY[:-1], LengthMismatch)],
)
async def test_a_failed_upload_keeps_nothing_and_reopens_the_slot(
    service: IngestService, storage: FakeStorage, data: bytes, error: type[Exception]
) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    with pytest.raises(error):
        await service.receive_upload("org-a", upload.id, body(data))
    assert storage.objects == {}
    retried = await service.receive_upload("org-a", upload.id, body())
    assert retried.status is UploadStatus.RECEIVED


async def test_a_declared_checksum_must_match(service: IngestService) -> None:
    upload = (await service.init_upload(ORG_A, request(sha256="0" * 64), "http://api")).upload
    with pytest.raises(ChecksumMismatch):
        await service.receive_upload("org-a", upload.id, body())


async def test_an_upload_in_progress_blocks_another_until_it_stalls(
    service: IngestService, database: FakeDatabase, clock: FakeClock
) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    async with database("org-a") as uow:
        assert await uow.uploads.claim_for_upload(upload.id, clock.now(), clock.now())
        await uow.commit()
    with pytest.raises(UploadInProgress):
        await service.receive_upload("org-a", upload.id, body())
    clock.advance(minutes=31)
    assert (
        await service.receive_upload("org-a", upload.id, body())
    ).status is UploadStatus.RECEIVED


async def test_another_org_cannot_upload_commit_or_see_the_slot(service: IngestService) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    with pytest.raises(NotFound):
        await service.receive_upload("org-b", upload.id, body())
    await service.receive_upload("org-a", upload.id, body())
    with pytest.raises(NotFound):
        await service.commit_upload(ORG_B, upload.id)


async def test_commit_before_upload_is_refused(service: IngestService) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    with pytest.raises(UploadNotReceived):
        await service.commit_upload(ORG_A, upload.id)


async def test_commit_checks_the_source_uri_when_given(service: IngestService) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    await service.receive_upload("org-a", upload.id, body())
    with pytest.raises(SourceUriForbidden):
        await service.commit_upload(ORG_A, upload.id, "file:///etc/passwd")
    asset, _ = await service.commit_upload(ORG_A, upload.id, upload.source_uri)
    assert asset.source_uri == upload.source_uri


async def test_commit_rechecks_the_stored_bytes(
    service: IngestService, storage: FakeStorage
) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    await service.receive_upload("org-a", upload.id, body())
    storage.objects[upload.key] = BODY[::-1]  # same size, other bytes
    with pytest.raises(ChecksumMismatch):
        await service.commit_upload(ORG_A, upload.id)
    storage.objects[upload.key] = BODY[:10]
    with pytest.raises(LengthMismatch):
        await service.commit_upload(ORG_A, upload.id)


async def test_not_media_makes_no_asset(service: IngestService, database: FakeDatabase) -> None:
    upload = (
        await service.init_upload(ORG_A, request(source_name="notes.txt"), "http://api")
    ).upload
    await service.receive_upload("org-a", upload.id, body())
    with pytest.raises(InvalidMedia):
        await service.commit_upload(ORG_A, upload.id)
    assert database.tables.assets == {}


async def test_a_direct_upload_to_the_store_commits_once_its_object_is_verified(
    service: IngestService, storage: FakeStorage, database: FakeDatabase
) -> None:
    """With S3 the client PUTs straight to the bucket: the slot is still pending at commit
    and the stored object is the only evidence, so it is checked in full."""
    sha256 = hashlib.sha256(BODY).hexdigest()
    upload = (await service.init_upload(ORG_A, request(sha256=sha256), "http://api")).upload
    with pytest.raises(UploadNotReceived):
        await service.commit_upload(ORG_A, upload.id)
    storage.objects[upload.key] = BODY[:-1] + b"!"  # right size, other bytes
    with pytest.raises(ChecksumMismatch):
        await service.commit_upload(ORG_A, upload.id)
    storage.objects[upload.key] = BODY + b"!"
    with pytest.raises(LengthMismatch):
        await service.commit_upload(ORG_A, upload.id)
    storage.objects[upload.key] = BODY
    asset, created = await service.commit_upload(ORG_A, upload.id)
    assert created
    assert asset.sha256 == sha256
    saved = database.tables.uploads[upload.id]
    assert (saved.status, saved.received_sha256) == (UploadStatus.COMMITTED, sha256)
    assert saved.received_at is not None


async def test_a_direct_upload_without_a_declared_sha256_records_the_one_read_back(
    service: IngestService, storage: FakeStorage
) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    storage.objects[upload.key] = BODY
    asset, _ = await service.commit_upload(ORG_A, upload.id)
    assert asset.sha256 == hashlib.sha256(BODY).hexdigest()


async def test_metrics_count_stored_and_committed_bytes_once(
    service: IngestService, storage: FakeStorage, metrics: FakeMetrics
) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    with pytest.raises(LengthMismatch):  # nothing kept: nothing counted
        await service.receive_upload("org-a", upload.id, body(BODY[:-1]))
    assert metrics.received_bytes == []
    await service.receive_upload("org-a", upload.id, body())
    assert metrics.received_bytes == [len(BODY)]
    await service.commit_upload(ORG_A, upload.id)
    await service.commit_upload(ORG_A, upload.id)  # the same asset again: not counted twice
    assert metrics.committed_bytes == [len(BODY)]
    # A direct upload to the store never passes through the API: committed, never received.
    direct = (await service.init_upload(ORG_A, request(), "http://api")).upload
    storage.objects[direct.key] = BODY
    await service.commit_upload(ORG_A, direct.id)
    assert metrics.received_bytes == [len(BODY)]
    assert metrics.committed_bytes == [len(BODY), len(BODY)]


class ChecksumReportingStorage(FakeStorage):
    """A store that reports a checksum on HEAD (as S3 does); ``opened`` counts full reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reported: dict[str, str] = {}

    async def stat(self, key: str) -> StoredObject | None:
        found = await super().stat(key)
        if found is None:
            return None
        return StoredObject(key=key, size_bytes=found.size_bytes, sha256=self.reported.get(key))


async def test_a_wrong_size_or_store_checksum_fails_before_reading_the_object_back(
    database: FakeDatabase, clock: FakeClock
) -> None:
    storage = ChecksumReportingStorage()
    limits = IngestLimits(
        max_upload_size_bytes=10_000,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=30),
    )
    service = IngestService(database, storage, FakeProber(), clock, limits, metrics=FakeMetrics())
    sha256 = hashlib.sha256(BODY).hexdigest()
    upload = (await service.init_upload(ORG_A, request(sha256=sha256), "http://api")).upload
    storage.objects[upload.key] = BODY[:10]
    with pytest.raises(LengthMismatch):
        await service.commit_upload(ORG_A, upload.id)
    storage.objects[upload.key] = BODY
    storage.reported[upload.key] = "0" * 64
    with pytest.raises(ChecksumMismatch):
        await service.commit_upload(ORG_A, upload.id)
    assert storage.opened == []
    # The store's word is never enough: a matching report is still re-hashed.
    storage.reported[upload.key] = sha256
    await service.commit_upload(ORG_A, upload.id)
    assert storage.opened == [upload.key]


async def test_commit_probes_the_very_copy_it_hashed(
    database: FakeDatabase, clock: FakeClock
) -> None:
    """One read of the object: the file the prober opens is the one whose bytes were checked."""

    class OneRead(FakeStorage):
        def __init__(self) -> None:
            super().__init__()
            self.copies: list[Path] = []

        @asynccontextmanager
        async def local_copy(self, key: str) -> AsyncIterator[LocalCopy]:
            async with super().local_copy(key) as copy:
                self.copies.append(copy.path)
                yield copy

        def local_path(self, key: str) -> NoReturn:
            raise AssertionError("commit read the object a second time")

    storage, prober = OneRead(), FakeProber()
    limits = IngestLimits(
        max_upload_size_bytes=10_000,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=30),
    )
    service = IngestService(database, storage, prober, clock, limits, metrics=FakeMetrics())
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    await service.receive_upload("org-a", upload.id, body())
    await service.commit_upload(ORG_A, upload.id)
    assert prober.probed == storage.copies
    assert len(storage.copies) == 1


async def test_an_object_gone_between_head_and_read_is_not_received(
    database: FakeDatabase, clock: FakeClock
) -> None:
    class GoneBeforeRead(FakeStorage):
        @asynccontextmanager
        async def local_copy(self, key: str) -> AsyncIterator[LocalCopy]:
            del self.objects[key]  # deleted after the HEAD answered
            async with super().local_copy(key) as copy:
                yield copy

    limits = IngestLimits(
        max_upload_size_bytes=10_000,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=30),
    )
    service = IngestService(
        database, GoneBeforeRead(), FakeProber(), clock, limits, metrics=FakeMetrics()
    )
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    await service.receive_upload("org-a", upload.id, body())
    with pytest.raises(UploadNotReceived, match="missing"):
        await service.commit_upload(ORG_A, upload.id)
    assert database.tables.assets == {}


async def test_a_slot_swept_while_its_commit_verifies_is_expired_and_makes_no_asset(
    database: FakeDatabase, clock: FakeClock
) -> None:
    """The sweep deletes the row before the object; a commit that had already started finds
    its slot gone when it records the asset, and records nothing."""

    class SweptDuringRead(FakeStorage):
        @asynccontextmanager
        async def local_copy(self, key: str) -> AsyncIterator[LocalCopy]:
            async with super().local_copy(key) as copy:
                for upload_id, upload in list(database.tables.uploads.items()):
                    if upload.key == key:
                        del database.tables.uploads[upload_id]
                yield copy

    limits = IngestLimits(
        max_upload_size_bytes=10_000,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=30),
    )
    service = IngestService(
        database, SweptDuringRead(), FakeProber(), clock, limits, metrics=FakeMetrics()
    )
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    await service.receive_upload("org-a", upload.id, body())

    with pytest.raises(UploadExpired):
        await service.commit_upload(ORG_A, upload.id)
    assert database.tables.assets == {}


async def test_commit_waits_for_a_put_still_running(
    service: IngestService, database: FakeDatabase
) -> None:
    upload = (await service.init_upload(ORG_A, request(), "http://api")).upload
    await service.receive_upload("org-a", upload.id, body())
    database.tables.uploads[upload.id] = msgspec.structs.replace(
        database.tables.uploads[upload.id], status=UploadStatus.UPLOADING
    )  # as it is between the file landing and the PUT recording it

    with pytest.raises(UploadInProgress):
        await service.commit_upload(ORG_A, upload.id)
    assert database.tables.assets == {}


async def test_a_sha256_with_a_trailing_newline_is_refused(service: IngestService) -> None:
    with pytest.raises(InvalidInput):  # "$" in a match() lets "…\n" through
        await service.init_upload(ORG_A, request(sha256="ab" * 32 + "\n"), "http://api")
