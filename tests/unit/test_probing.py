from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from heimdex.application.probing import ProbeService
from heimdex.domain.errors import InvalidMedia, NotFound, SourceUriForbidden
from heimdex.domain.model import Principal, Upload, UploadStatus
from tests.builders import make_asset, make_upload, short_media
from tests.unit.fakes import FakeDatabase, FakeProber, FakeStorage

ORG_A = Principal(org_id="org-a")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def upload(org: str, name: str) -> Upload:
    upload_id = uuid.uuid4()
    key = f"uploads/{org}/{upload_id}/{name}"
    return make_upload(
        org,
        at=NOW,
        id=upload_id,
        key=key,
        source_uri="mem://" + key,
        source_name=name,
        content_length=1,
        declared_sha256=None,
        status=UploadStatus.RECEIVED,
        expires_at=NOW,
    )


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def prober() -> FakeProber:
    return FakeProber()


@pytest.fixture
def service(database: FakeDatabase, storage: FakeStorage, prober: FakeProber) -> ProbeService:
    return ProbeService(database, storage, prober)


async def stored(database: FakeDatabase, storage: FakeStorage, item: Upload) -> Upload:
    async with database(item.org_id) as uow:
        await uow.uploads.add(item)
        await uow.commit()
    await storage.write_bytes(item.key, b"x")
    return item


async def test_probes_the_object_on_record_for_an_issued_uri(
    service: ProbeService, database: FakeDatabase, storage: FakeStorage
) -> None:
    own = await stored(database, storage, upload("org-a", "clip.mp4"))
    media = await service.probe_source(ORG_A, own.source_uri)
    assert media.format_name == "mov,mp4"
    assert storage.opened == [own.key]


async def test_refuses_another_orgs_issued_uri_before_touching_anything(
    service: ProbeService, database: FakeDatabase, storage: FakeStorage, prober: FakeProber
) -> None:
    foreign = await stored(database, storage, upload("org-b", "clip.mp4"))
    with pytest.raises(SourceUriForbidden) as caught:
        await service.probe_source(ORG_A, foreign.source_uri)
    assert caught.value.code == "source_uri_forbidden"
    assert storage.opened == []
    assert prober.probed == []


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data",
        "concat:mem://uploads/org-a/x/clip.mp4",
        "mem://uploads/org-a/../org-b/clip.mp4",
    ],
)
async def test_refuses_uris_that_were_never_issued(
    service: ProbeService, storage: FakeStorage, prober: FakeProber, uri: str
) -> None:
    with pytest.raises(SourceUriForbidden):
        await service.probe_source(ORG_A, uri)
    assert storage.opened == []
    assert prober.probed == []


async def test_invalid_media_propagates_with_its_code(
    service: ProbeService, database: FakeDatabase, storage: FakeStorage
) -> None:
    notes = await stored(database, storage, upload("org-a", "notes.txt"))
    with pytest.raises(InvalidMedia) as caught:
        await service.probe_source(ORG_A, notes.source_uri)
    assert caught.value.code == "invalid_media"


async def test_an_unknown_asset_is_not_found(service: ProbeService) -> None:
    with pytest.raises(NotFound):
        await service.probe_asset(ORG_A, uuid.uuid4())


async def test_an_asset_answers_its_stored_description_without_probing(
    service: ProbeService, database: FakeDatabase, storage: FakeStorage, prober: FakeProber
) -> None:
    own = await stored(database, storage, upload("org-a", "clip.mp4"))
    media = short_media(size_bytes=1, format_name="matroska,webm")
    asset = make_asset(own, size_bytes=1, media=media)
    async with database("org-a") as uow:
        await uow.assets.add(asset)
        await uow.commit()
    assert await service.probe_asset(ORG_A, asset.id) == media
    assert prober.probed == []
    assert storage.opened == []
