"""ResumableUploads' own decisions with in-memory fakes: where the offset goes when a PATCH is
cut off or fails, expiry and the sweep, a PATCH finding its slot busy. The HTTP and storage
parts run for real in tests/integration/test_http_tus.py and the storage contract."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
import msgspec
import pytest

from heimdex.application.abandoned_uploads import AbandonedUploadSweeper
from heimdex.application.ingest import IngestLimits, IngestService, UploadRequest
from heimdex.application.resumable_uploads import ResumableUploads
from heimdex.domain.errors import (
    ChunkChecksumMismatch,
    LengthMismatch,
    NotFound,
    StorageError,
    UploadExpired,
    UploadInProgress,
    UploadOffsetMismatch,
)
from heimdex.domain.model import Principal, Upload, UploadStatus
from heimdex.domain.resumable import ChunkChecksum
from tests.unit.fakes import (
    FakeClock,
    FakeDatabase,
    FakeMetrics,
    FakeProber,
    FakeStorage,
    FakeUploadDirectory,
)

ORG = Principal(org_id="org-a")
DATA = bytes(range(256)) * 40
TTL = timedelta(hours=1)


class World:
    def __init__(self, claim_wait_seconds: float = 0.0) -> None:
        self.database, self.storage, self.clock = FakeDatabase(), FakeStorage(), FakeClock()
        limits = IngestLimits(
            max_upload_size_bytes=1000,
            max_resumable_size_bytes=1 << 20,
            upload_url_ttl=TTL,
            upload_stall=timedelta(minutes=5),
            resumable_ttl=TTL,
        )
        self.ingest = IngestService(
            self.database, self.storage, FakeProber(), self.clock, limits, metrics=FakeMetrics()
        )
        self.resumable = ResumableUploads(
            self.database,
            self.storage,
            self.clock,
            ttl=TTL,
            stall=timedelta(minutes=5),
            metrics=FakeMetrics(),
            claim_wait_seconds=claim_wait_seconds,
        )

    async def slot(self) -> Upload:
        issued = await self.ingest.init_upload(
            ORG,
            UploadRequest(
                source_name="c.mp4",
                content_length=len(DATA),
                content_type="video/mp4",
                resumable=True,
            ),
            "http://api",
        )
        return issued.upload

    async def offset(self, upload: Upload) -> int:
        return (await self.resumable.status(ORG.org_id, upload.id)).received_bytes


async def body(
    *parts: bytes, cut_off: bool = False, error: Exception | None = None
) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if cut_off:
        raise LengthMismatch("the connection closed before the whole body arrived")
    if error is not None:
        raise error


async def test_a_body_cut_off_keeps_what_arrived_and_resumes_there() -> None:
    world = World()
    upload = await world.slot()
    done = await world.resumable.append(ORG.org_id, upload.id, 0, body(DATA[:1000], cut_off=True))
    assert done.received_bytes == 1000
    assert done.status is UploadStatus.PENDING
    assert await world.offset(upload) == 1000
    finished = await world.resumable.append(ORG.org_id, upload.id, 1000, body(DATA[1000:]))
    assert finished.status is UploadStatus.RECEIVED
    assert world.storage.objects[upload.key] == DATA


async def test_a_cut_off_body_with_a_checksum_keeps_nothing() -> None:
    world = World()
    upload = await world.slot()
    declared = ChunkChecksum(algorithm="sha1", digest=hashlib.sha1(DATA).digest())  # noqa: S324
    with pytest.raises(ChunkChecksumMismatch):
        await world.resumable.append(
            ORG.org_id, upload.id, 0, body(DATA[:1000], cut_off=True), declared
        )
    assert await world.offset(upload) == 0
    await world.resumable.append(ORG.org_id, upload.id, 0, body(DATA), declared)
    assert world.storage.objects[upload.key] == DATA


async def test_a_failing_store_leaves_the_offset_and_frees_the_slot() -> None:
    world = World()
    upload = await world.slot()
    with pytest.raises(StorageError):
        await world.resumable.append(
            ORG.org_id, upload.id, 0, body(DATA[:10], error=StorageError("the store went away"))
        )
    assert await world.offset(upload) == 0
    row = world.database.tables.uploads[upload.id]
    assert row.status is UploadStatus.PENDING  # not left "uploading"
    assert row.resumable_session is not None  # kept, so a sweep can discard its bytes


async def test_a_wrong_offset_is_refused_before_any_byte_is_read() -> None:
    world = World()
    upload = await world.slot()
    read = False

    async def watched() -> AsyncIterator[bytes]:
        nonlocal read
        read = True
        yield DATA

    with pytest.raises(UploadOffsetMismatch):
        await world.resumable.append(ORG.org_id, upload.id, 5, watched())
    assert not read


async def test_an_idle_slot_expires_and_the_sweep_discards_its_bytes() -> None:
    world = World()
    upload = await world.slot()
    await world.resumable.append(ORG.org_id, upload.id, 0, body(DATA[:500]))
    world.clock.advance(minutes=50)
    await world.resumable.append(ORG.org_id, upload.id, 500, body(DATA[500:600]))
    world.clock.advance(minutes=50)  # 100 minutes after creation, 50 after the last PATCH
    assert await world.offset(upload) == 600
    world.clock.advance(minutes=11)
    with pytest.raises(UploadExpired):
        await world.resumable.append(ORG.org_id, upload.id, 600, body(DATA[600:]))
    assert world.storage.partials  # expired, not yet swept
    sweeper = AbandonedUploadSweeper(
        world.database,
        FakeUploadDirectory(world.database),
        world.storage,
        world.clock,
        grace=timedelta(hours=1),
    )
    assert await sweeper.sweep() == 0
    world.clock.advance(hours=1)
    assert await sweeper.sweep() == 1
    assert world.storage.partials == {}
    with pytest.raises(NotFound):
        await world.resumable.status(ORG.org_id, upload.id)


async def test_a_patch_finding_the_slot_busy_waits_for_it_then_409() -> None:
    world = World(claim_wait_seconds=0.3)
    upload = await world.slot()
    row = world.database.tables.uploads[upload.id]
    world.database.tables.uploads[upload.id] = msgspec.structs.replace(
        row, status=UploadStatus.UPLOADING, updated_at=world.clock.now()
    )
    with pytest.raises(UploadInProgress):
        await world.resumable.append(ORG.org_id, upload.id, 0, body(DATA))

    async def finish_soon() -> None:  # the PATCH of a killed client ends a moment later
        await anyio.sleep(0.1)
        world.database.tables.uploads[upload.id] = row

    async with anyio.create_task_group() as group:
        group.start_soon(finish_soon)
        done = await world.resumable.append(ORG.org_id, upload.id, 0, body(DATA))
    assert done.status is UploadStatus.RECEIVED


async def test_a_long_patch_keeps_its_claim_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATCH streaming for longer than the stall time is not taken for a dead one."""
    monkeypatch.setattr("heimdex.application.resumable_uploads.HEARTBEAT_SECONDS", 0.05)
    world = World()
    upload = await world.slot()
    seen: list[Upload] = []

    async def slow() -> AsyncIterator[bytes]:
        yield DATA[:100]
        world.clock.advance(minutes=10)  # twice the stall time later…
        await anyio.sleep(0.1)
        yield DATA[100:200]
        seen.append(world.database.tables.uploads[upload.id])
        yield DATA[200:]

    await world.resumable.append(ORG.org_id, upload.id, 0, slow())
    assert seen[0].status is UploadStatus.UPLOADING
    assert seen[0].updated_at == world.clock.now()  # …the claim was renewed
