"""The abandoned-upload sweep's own decisions, with in-memory fakes (the SQL and storage parts
are tested for real in tests/integration/test_abandoned_uploads.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from heimdex.application.abandoned_uploads import AbandonedUploadSweeper
from heimdex.application.ingest import IngestLimits, IngestService, UploadRequest
from heimdex.domain.errors import StorageError
from heimdex.domain.model import Principal, Upload
from tests.unit.fakes import (
    FakeClock,
    FakeDatabase,
    FakeMetrics,
    FakeProber,
    FakeStorage,
    FakeUploadDirectory,
)

ORG = Principal(org_id="org-a")
BODY = b"x" * 100


class FailingDeletes(FakeStorage):
    """A store that cannot delete one key (an outage, a permission missing)."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: str | None = None

    async def delete(self, key: str) -> None:
        if key == self.refuse:
            raise StorageError("the store refused the delete")
        await super().delete(key)


async def slot(service: IngestService) -> Upload:
    issued = await service.init_upload(
        ORG,
        UploadRequest(source_name="c.mp4", content_length=len(BODY), content_type="video/mp4"),
        "http://api",
    )

    async def body() -> AsyncIterator[bytes]:
        yield BODY

    return await service.receive_upload(ORG.org_id, issued.upload.id, body())


async def test_an_object_that_cannot_be_deleted_does_not_stop_the_sweep() -> None:
    database, storage, clock = FakeDatabase(), FailingDeletes(), FakeClock()
    limits = IngestLimits(
        max_upload_size_bytes=1000,
        upload_url_ttl=timedelta(hours=1),
        upload_stall=timedelta(minutes=5),
    )
    ingest = IngestService(database, storage, FakeProber(), clock, limits, metrics=FakeMetrics())
    first, second = await slot(ingest), await slot(ingest)
    storage.refuse = first.key
    sweeper = AbandonedUploadSweeper(
        database, FakeUploadDirectory(database), storage, clock, grace=timedelta(hours=2)
    )

    clock.advance(hours=3, seconds=1)
    assert await sweeper.sweep() == 2

    assert database.tables.uploads == {}  # both rows: nothing can commit either object now
    assert first.key in storage.objects  # an orphan, logged, never a lost asset
    assert second.key not in storage.objects
