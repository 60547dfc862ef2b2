"""Abandoned uploads are swept — row and object — on SQLite and PostgreSQL (under row-level
security, across organisations), with local and S3 storage; nothing committed ever is."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from heimdex.adapters.auth.url_signing import HmacUrlSigner
from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.adapters.db.upload_directory import SqlUploadDirectory
from heimdex.adapters.storage.local import LocalStorage
from heimdex.application.abandoned_uploads import AbandonedUploadSweeper
from heimdex.application.ingest import IngestLimits, IngestService, UploadRequest
from heimdex.domain.errors import NotFound
from heimdex.domain.model import Principal, Upload
from heimdex.domain.ports import Storage
from tests.fixtures.probers import shared_pyav_prober
from tests.fixtures.s3 import MotoServer, s3_storage
from tests.unit.fakes import FakeClock, FakeMetrics

# Long before anything other tests create in the shared catalogue, so their rows are never
# old enough for this test's sweeps to take.
START = datetime(2001, 1, 1, tzinfo=UTC)
TTL = timedelta(hours=1)
GRACE = timedelta(hours=24)


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "storage", HmacUrlSigner("abandoned-uploads-secret-32-bytes"))
        return
    moto: MotoServer = request.getfixturevalue("moto_server")
    store = s3_storage(moto, request.getfixturevalue("s3_bucket"), tmp_path / "tmp")
    try:
        yield store
    finally:
        await store.aclose()


class World:
    def __init__(self, database: Database, storage: Storage) -> None:
        self.clock = FakeClock(START)
        self.uow = SqlUnitOfWorkFactory(database)
        self.storage = storage
        limits = IngestLimits(
            max_upload_size_bytes=1 << 30, upload_url_ttl=TTL, upload_stall=timedelta(minutes=30)
        )
        self.ingest = IngestService(
            self.uow, storage, shared_pyav_prober(), self.clock, limits, metrics=FakeMetrics()
        )
        self.sweeper = AbandonedUploadSweeper(
            self.uow, SqlUploadDirectory(database), storage, self.clock, GRACE
        )

    async def slot(self, org: Principal, data: bytes, *, send: bool) -> Upload:
        issued = await self.ingest.init_upload(
            org,
            UploadRequest(source_name="c.mp4", content_length=len(data), content_type="video/mp4"),
            "http://testserver",
        )
        if not send:
            return issued.upload

        async def body() -> AsyncIterator[bytes]:
            yield data

        return await self.ingest.receive_upload(org.org_id, issued.upload.id, body())

    async def row(self, upload: Upload) -> Upload | None:
        async with self.uow(upload.org_id) as uow:
            return await uow.uploads.get(upload.id)


def an_org() -> Principal:
    return Principal(org_id=f"org-{uuid.uuid4().hex[:10]}")


async def test_only_uploads_abandoned_past_the_grace_are_swept(
    database: Database, storage: Storage, h264_aac_mp4: Path
) -> None:
    world = World(database, storage)
    data = h264_aac_mp4.read_bytes()
    acme, other = an_org(), an_org()
    never_sent = await world.slot(acme, data, send=False)
    sent_not_committed = await world.slot(acme, data, send=True)
    elsewhere = await world.slot(other, data, send=True)
    committed_upload = await world.slot(acme, data, send=True)
    asset, _ = await world.ingest.commit_upload(acme, committed_upload.id)

    world.clock.advance(seconds=(TTL + GRACE).total_seconds() - 60)  # expired, not for long
    assert await world.sweeper.sweep() == 0
    assert await storage.stat(sent_not_committed.key) is not None

    world.clock.advance(minutes=2)
    fresh = await world.slot(acme, data, send=True)  # issued now: not expired at all
    assert await world.sweeper.sweep() == 3

    for gone in (never_sent, sent_not_committed, elsewhere):
        assert await world.row(gone) is None
        assert await storage.stat(gone.key) is None
    assert await world.row(fresh) is not None
    assert await storage.stat(fresh.key) is not None
    # The committed one: its row, its asset and its bytes, whole.
    assert await world.row(committed_upload) is not None
    async with world.uow(acme.org_id) as uow:
        assert await uow.assets.get(asset.id) is not None
    async with storage.local_copy(committed_upload.key) as copy:
        assert copy.stored.sha256 == hashlib.sha256(data).hexdigest()

    assert await world.sweeper.sweep() == 0  # nothing left to do, and no harm done twice
    with pytest.raises(NotFound):
        await world.ingest.commit_upload(acme, sent_not_committed.id)


async def test_a_committed_upload_is_never_swept_however_old(
    database: Database, storage: Storage, h264_aac_mp4: Path
) -> None:
    world = World(database, storage)
    data = h264_aac_mp4.read_bytes()
    acme = an_org()
    upload = await world.slot(acme, data, send=True)
    await world.ingest.commit_upload(acme, upload.id)

    world.clock.advance(days=3650)
    await world.sweeper.sweep()  # may take other tests' leftovers in the shared catalogue
    assert await world.row(upload) is not None
    async with storage.local_copy(upload.key) as copy:
        assert copy.stored.sha256 == hashlib.sha256(data).hexdigest()


async def test_an_upload_with_an_asset_is_never_swept_whatever_its_status_says(
    database: Database, storage: Storage, h264_aac_mp4: Path
) -> None:
    """Belt and braces: the asset, not the slot's status, is what makes bytes precious."""
    world = World(database, storage)
    acme = an_org()
    upload = await world.slot(acme, h264_aac_mp4.read_bytes(), send=True)
    await world.ingest.commit_upload(acme, upload.id)
    async with world.uow(acme.org_id) as uow:
        await uow.uploads.save(upload)  # back to "received", as an older version might leave it
        await uow.commit()

    world.clock.advance(days=3650)
    await world.sweeper.sweep()
    assert await world.row(upload) is not None
    assert await storage.stat(upload.key) is not None
