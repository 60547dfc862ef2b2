"""The repositories, unit of work and idempotency store: one contract, on SQLite and PostgreSQL
(and the unit of work's in-memory fake of the application tests).

Every test uses organisations of its own, so the PostgreSQL tests can share the session's
database. On PostgreSQL they connect as the runtime role, under row-level security.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.idempotency import SqlIdempotencyStore
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.domain.errors import Conflict, DatabaseUnavailable, NotFound
from heimdex.domain.idempotency import ClaimOutcome, ClaimWindow, IdempotencyScope, StoredResponse
from heimdex.domain.model import (
    Asset,
    AssetFilter,
    AssetStatus,
    JobError,
    JobStatus,
    PageCursor,
    Upload,
    UploadStatus,
)
from heimdex.domain.ports import UnitOfWorkFactory
from tests.builders import T0, make_asset, make_job, make_media, make_upload

UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:1/none"


def new_org() -> str:
    return f"org-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(database: Database) -> SqlIdempotencyStore:
    return SqlIdempotencyStore(database)


async def stored_upload(uow: UnitOfWorkFactory, org_id: str, **changes: Any) -> Upload:
    upload = make_upload(org_id, **changes)
    async with uow(org_id) as unit:
        await unit.uploads.add(upload)
        await unit.commit()
    return upload


async def stored_asset(uow: UnitOfWorkFactory, org_id: str, **changes: Any) -> Asset:
    upload = await stored_upload(uow, org_id)
    asset = make_asset(upload, **changes)
    async with uow(org_id) as unit:
        await unit.assets.add(asset)
        await unit.commit()
    return asset


# -- round trips ---------------------------------------------------------------------------------
async def test_upload_round_trips_every_field(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    upload = await stored_upload(uow, org)
    async with uow(org) as unit:
        assert await unit.uploads.get(upload.id) == upload
        assert await unit.uploads.get_by_source_uri(upload.source_uri) == upload

    received = msgspec.structs.replace(
        upload,
        status=UploadStatus.RECEIVED,
        received_sha256="ef" * 32,
        received_at=T0 + timedelta(minutes=3, microseconds=7),
        updated_at=T0 + timedelta(minutes=3),
    )
    async with uow(org) as unit:
        await unit.uploads.save(received)
        await unit.commit()
    async with uow(org) as unit:
        loaded = await unit.uploads.get(upload.id)
    assert loaded == received
    assert loaded is not None
    assert loaded.received_at is not None
    assert loaded.created_at.tzinfo is not None
    assert loaded.received_at.tzinfo is not None


async def test_asset_round_trips_every_field_with_its_media(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    asset = await stored_asset(uow, org)
    async with uow(org) as unit:
        loaded = await unit.assets.get(asset.id)
        assert await unit.assets.get_by_upload(asset.upload_id) == asset
    assert loaded == asset
    assert loaded.media.streams[0].color == asset.media.streams[0].color

    changed = msgspec.structs.replace(
        asset,
        status=AssetStatus.READY,
        media=make_media(duration=None, video=None, audio="opus"),
        updated_at=T0 + timedelta(seconds=1),
    )
    async with uow(org) as unit:
        await unit.assets.save(changed)
        await unit.commit()
    async with uow(org) as unit:
        assert await unit.assets.get(asset.id) == changed


async def test_job_round_trips_every_field(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    asset = await stored_asset(uow, org)
    job = make_job(asset)
    async with uow(org) as unit:
        await unit.jobs.add(job)
        await unit.commit()
    async with uow(org) as unit:
        assert await unit.jobs.get(job.id) == job

    failed = msgspec.structs.replace(
        job,
        status=JobStatus.FAILED,
        progress=0.5,
        attempts=2,
        lease_expires_at=T0 + timedelta(minutes=5),
        next_attempt_at=T0 + timedelta(minutes=10),
        error=JobError(code="invalid_media", message="not a video"),
        updated_at=T0 + timedelta(minutes=1),
    )
    async with uow(org) as unit:
        await unit.jobs.save(failed)
        await unit.commit()
    async with uow(org) as unit:
        assert await unit.jobs.get(job.id) == failed


async def test_saving_a_missing_row_is_not_found(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    async with uow(org) as unit:
        with pytest.raises(NotFound):
            await unit.uploads.save(make_upload(org))


# -- tenancy -------------------------------------------------------------------------------------
async def test_another_organisations_rows_are_invisible_and_untouchable(
    uow: UnitOfWorkFactory,
) -> None:
    org_a, org_b = new_org(), new_org()
    asset = await stored_asset(uow, org_a)
    job = make_job(asset)
    async with uow(org_a) as unit:
        await unit.jobs.add(job)
        upload = await unit.uploads.get(asset.upload_id)
        await unit.commit()
    assert upload is not None

    async with uow(org_b) as unit:
        assert await unit.uploads.get(upload.id) is None
        assert await unit.uploads.get_by_source_uri(upload.source_uri) is None
        assert await unit.assets.get(asset.id) is None
        assert await unit.assets.get_by_upload(upload.id) is None
        assert await unit.jobs.get(job.id) is None
        assert (await unit.assets.list(AssetFilter(), limit=10, after=None)).items == []
        assert not await unit.uploads.claim_for_upload(upload.id, T0, T0)
        assert not await unit.assets.delete(asset.id)
        assert not await unit.uploads.delete(upload.id)
        # Org B's copy of A's row, saved through B: there is no such row in B.
        with pytest.raises(NotFound):
            await unit.assets.save(msgspec.structs.replace(asset, org_id=org_b))
        # A's row through B's unit of work is a programming error, refused before SQL.
        with pytest.raises(ValueError, match="another organisation"):
            await unit.assets.save(asset)
        await unit.commit()

    async with uow(org_a) as unit:
        assert await unit.assets.get(asset.id) == asset
        assert await unit.jobs.get(job.id) == job


# -- listing -------------------------------------------------------------------------------------
async def catalogue_for_filters(uow: UnitOfWorkFactory, org: str) -> dict[str, Asset]:
    """Six assets an hour apart (``a`` oldest), each with something to filter on."""
    specs: dict[str, dict[str, Any]] = {
        "a": {"media": make_media(duration=2.0, video="h264", audio="aac", display_height=360)},
        "b": {"media": make_media(duration=10.0, video="hevc", audio="opus", display_height=1080)},
        "c": {
            "media": make_media(duration=30.0, video="vp9", audio=None, display_height=2160),
            "status": AssetStatus.READY,
        },
        "d": {"media": make_media(duration=None, video=None, audio="mp3")},
        "e": {
            "media": make_media(duration=60.0, video="h264", audio="aac", display_height=720),
            "status": AssetStatus.FAILED,
        },
        "f": {"media": make_media(duration=5.0, video="av1", audio="aac", display_height=None)},
    }
    assets = {}
    for hour, (name, spec) in enumerate(specs.items()):
        assets[name] = await stored_asset(uow, org, created_at=T0 + timedelta(hours=hour), **spec)
    return assets


async def names(uow: UnitOfWorkFactory, org: str, assets: dict[str, Asset], **filters: Any) -> str:
    by_id = {asset.id: name for name, asset in assets.items()}
    async with uow(org) as unit:
        page = await unit.assets.list(AssetFilter(**filters), limit=50, after=None)
    return "".join(by_id[asset.id] for asset in page.items)


async def test_list_filters_alone_and_combined(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    assets = await catalogue_for_filters(uow, org)
    await stored_asset(uow, new_org())  # another org's asset never shows

    assert await names(uow, org, assets) == "fedcba"  # newest first
    assert await names(uow, org, assets, status=AssetStatus.COMMITTED) == "fdba"
    assert await names(uow, org, assets, status=AssetStatus.READY) == "c"
    assert await names(uow, org, assets, min_duration=10.0) == "ecb"  # inclusive
    assert await names(uow, org, assets, max_duration=10.0) == "fba"  # unknown never matches
    assert await names(uow, org, assets, min_duration=5.0, max_duration=30.0) == "fcb"
    assert await names(uow, org, assets, codec="h264") == "ea"
    assert await names(uow, org, assets, codec="aac") == "fea"  # the audio codec counts too
    assert await names(uow, org, assets, codec="MP3") == "d"  # case-insensitive
    assert await names(uow, org, assets, codec="theora") == ""
    assert await names(uow, org, assets, min_height=1080) == "cb"
    assert await names(uow, org, assets, min_height=361) == "ecb"
    after_b = assets["b"].created_at
    assert await names(uow, org, assets, created_after=after_b) == "fedc"  # exclusive
    assert await names(uow, org, assets, created_before=after_b) == "a"  # exclusive
    assert (
        await names(
            uow,
            org,
            assets,
            status=AssetStatus.COMMITTED,
            codec="aac",
            min_duration=1.0,
            min_height=300,
            created_after=assets["a"].created_at.astimezone(UTC) - timedelta(seconds=1),
            created_before=assets["f"].created_at,
        )
        == "a"
    )


async def test_list_filters_by_sha256_within_the_organisation(uow: UnitOfWorkFactory) -> None:
    org, other = new_org(), new_org()
    mine = await stored_asset(uow, org, sha256="ab" * 32)
    await stored_asset(uow, org, sha256="cd" * 32)
    await stored_asset(uow, other, sha256="ab" * 32)  # the same file elsewhere never shows
    async with uow(org) as unit:
        page = await unit.assets.list(AssetFilter(sha256="ab" * 32), limit=50, after=None)
        absent = await unit.assets.list(AssetFilter(sha256="ef" * 32), limit=50, after=None)
    assert [a.id for a in page.items] == [mine.id]
    assert absent.items == []


async def test_list_pages_newest_first_across_ties(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    # Seven assets, four sharing one creation time: the id breaks the tie, and the cursor too.
    times = [T0, T0 + timedelta(seconds=1), *[T0 + timedelta(seconds=2)] * 4, T0 + timedelta(3)]
    created = [await stored_asset(uow, org, created_at=moment) for moment in times]
    expected = sorted(created, key=lambda a: (a.created_at, a.id), reverse=True)

    seen: list[Asset] = []
    after: PageCursor | None = None
    pages = 0
    while True:
        async with uow(org) as unit:
            page = await unit.assets.list(AssetFilter(), limit=2, after=after)
        pages += 1
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        assert page.next_cursor == PageCursor(
            created_at=page.items[-1].created_at, id=page.items[-1].id
        )
        after = page.next_cursor
    assert [a.id for a in seen] == [a.id for a in expected]
    assert pages == 4

    async with uow(org) as unit:
        everything = await unit.assets.list(AssetFilter(), limit=7, after=None)
        one = await unit.assets.list(AssetFilter(), limit=1, after=None)
    assert len(everything.items) == 7
    assert everything.next_cursor is None
    assert [a.id for a in one.items] == [expected[0].id]
    assert one.next_cursor is not None


# -- uploads: the claim --------------------------------------------------------------------------
async def test_claim_for_upload_wins_once_among_concurrent_callers(
    uow: UnitOfWorkFactory,
) -> None:
    org = new_org()
    upload = await stored_upload(uow, org)
    now = T0 + timedelta(minutes=1)

    async def claim() -> bool:
        async with uow(org) as unit:
            won = await unit.uploads.claim_for_upload(upload.id, now, now - timedelta(minutes=5))
            await unit.commit()
            return won

    results = await asyncio.gather(*(claim() for _ in range(10)))
    assert results.count(True) == 1
    async with uow(org) as unit:
        claimed = await unit.uploads.get(upload.id)
    assert claimed is not None
    assert claimed.status is UploadStatus.UPLOADING
    assert claimed.updated_at == now


async def test_claim_for_upload_takes_over_a_stalled_upload_only(
    uow: UnitOfWorkFactory,
) -> None:
    org = new_org()
    stalled_since = T0 + timedelta(minutes=1)
    upload = await stored_upload(uow, org, status=UploadStatus.UPLOADING, updated_at=stalled_since)
    received = await stored_upload(uow, org, status=UploadStatus.RECEIVED)
    later = T0 + timedelta(minutes=30)
    async with uow(org) as unit:
        # Still within the stall window: held by the running upload.
        assert not await unit.uploads.claim_for_upload(upload.id, later, stalled_since)
        # Stalled before stale_before: taken over.
        assert await unit.uploads.claim_for_upload(upload.id, later, later - timedelta(minutes=5))
        assert not await unit.uploads.claim_for_upload(received.id, later, later)
        assert not await unit.uploads.claim_for_upload(uuid.uuid4(), later, later)
        await unit.commit()
    async with uow(org) as unit:
        taken = await unit.uploads.get(upload.id)
    assert taken is not None
    assert taken.updated_at == later


# -- assets: conflicts, deletes, transactions ----------------------------------------------------
async def test_a_second_asset_for_one_upload_is_a_conflict(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    first = await stored_asset(uow, org)
    async with uow(org) as unit:
        with pytest.raises(Conflict):
            await unit.assets.add(msgspec.structs.replace(first, id=uuid.uuid4()))
        # The unit of work is still usable after the conflict (the insert ran in a savepoint).
        assert await unit.assets.get_by_upload(first.upload_id) == first
        await unit.jobs.add(make_job(first))
        await unit.commit()


async def test_delete_removes_the_asset_its_jobs_and_then_its_upload(
    uow: UnitOfWorkFactory,
) -> None:
    org = new_org()
    asset = await stored_asset(uow, org)
    job = make_job(asset)
    async with uow(org) as unit:
        await unit.jobs.add(job)
        await unit.commit()
    async with uow(org) as unit:
        assert await unit.assets.delete(asset.id)
        assert await unit.uploads.delete(asset.upload_id)
        await unit.commit()
    async with uow(org) as unit:
        assert await unit.assets.get(asset.id) is None
        assert await unit.jobs.get(job.id) is None
        assert await unit.uploads.get(asset.upload_id) is None
        assert not await unit.assets.delete(asset.id)


async def test_existing_answers_which_ids_are_the_organisations_assets(
    uow: UnitOfWorkFactory,
) -> None:
    org, other = new_org(), new_org()
    mine = [await stored_asset(uow, org) for _ in range(2)]
    theirs = await stored_asset(uow, other)
    never = uuid.uuid4()
    async with uow(org) as unit:
        asked = [mine[0].id, mine[1].id, theirs.id, never]
        assert await unit.assets.existing(asked) == {mine[0].id, mine[1].id}
        assert await unit.assets.existing([]) == set()
        await unit.assets.delete(mine[1].id)
        assert await unit.assets.existing(asked) == {mine[0].id}


async def test_leaving_without_commit_rolls_back(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    upload = make_upload(org)
    async with uow(org) as unit:
        await unit.uploads.add(upload)
        assert await unit.uploads.get(upload.id) == upload  # visible inside

    async def fail_halfway() -> None:
        async with uow(org) as unit:
            await unit.uploads.add(make_upload(org, source_uri="local://other"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_halfway()
    async with uow(org) as unit:
        assert await unit.uploads.get(upload.id) is None
        assert await unit.uploads.get_by_source_uri("local://other") is None


async def test_a_unit_of_work_is_used_once(uow: UnitOfWorkFactory) -> None:
    unit = uow(new_org())
    async with unit:
        pass
    with pytest.raises(RuntimeError, match="used once"):
        async with unit:
            pass


async def test_an_unreachable_database_is_unavailable_not_a_crash() -> None:
    database = Database(UNREACHABLE)
    try:
        with pytest.raises(DatabaseUnavailable):
            async with SqlUnitOfWorkFactory(database)(new_org()):
                pass
        with pytest.raises(DatabaseUnavailable):
            await SqlIdempotencyStore(database).claim(
                scope(new_org()), "f", ClaimWindow(now=T0, lease_until=T0, expires_at=T0)
            )
    finally:
        await database.dispose()


# -- idempotency ---------------------------------------------------------------------------------
def scope(org_id: str, key: str = "key-1", route: str = "/v1/ingest/init") -> IdempotencyScope:
    return IdempotencyScope(org_id=org_id, method="POST", route=route, key=key)


LEASE = timedelta(seconds=30)
TTL = timedelta(hours=24)


async def claim(
    store: SqlIdempotencyStore, key: IdempotencyScope, fingerprint: str, now: datetime
) -> Any:
    window = ClaimWindow(now=now, lease_until=now + LEASE, expires_at=now + TTL)
    return await store.claim(key, fingerprint, window)


async def test_idempotency_claim_in_flight_mismatch_replay(store: SqlIdempotencyStore) -> None:
    key = scope(new_org())
    assert (await claim(store, key, "fp", T0)).outcome is ClaimOutcome.CLAIMED
    assert (await claim(store, key, "fp", T0)).outcome is ClaimOutcome.IN_FLIGHT
    assert (await claim(store, key, "other", T0)).outcome is ClaimOutcome.MISMATCH

    response = StoredResponse(
        status=201,
        headers={"content-type": "application/json", "location": "/v1/assets/1"},
        body=b'{"id": 1}\x00\xff',  # bytes, not text
    )
    await store.complete(key, response)
    replay = await claim(store, key, "fp", T0 + timedelta(hours=1))
    assert replay.outcome is ClaimOutcome.REPLAY
    assert replay.response == response
    assert (await claim(store, key, "other", T0)).outcome is ClaimOutcome.MISMATCH

    # The first answer stays: a second completion changes nothing.
    await store.complete(key, msgspec.structs.replace(response, status=500))
    assert (await claim(store, key, "fp", T0)).response == response
    # A completed record is never released.
    await store.release(key)
    assert (await claim(store, key, "fp", T0)).outcome is ClaimOutcome.REPLAY


async def test_idempotency_keys_are_per_org_method_and_route(store: SqlIdempotencyStore) -> None:
    org = new_org()
    key = scope(org)
    assert (await claim(store, key, "fp", T0)).outcome is ClaimOutcome.CLAIMED
    for other in (
        scope(new_org()),
        scope(org, route="/v1/ingest/commit"),
        msgspec.structs.replace(key, method="DELETE"),
        scope(org, key="key-2"),
    ):
        assert (await claim(store, other, "fp", T0)).outcome is ClaimOutcome.CLAIMED


async def test_idempotency_expired_lease_is_taken_over(store: SqlIdempotencyStore) -> None:
    key = scope(new_org())
    assert (await claim(store, key, "fp", T0)).outcome is ClaimOutcome.CLAIMED
    just_before = T0 + LEASE - timedelta(microseconds=1)
    assert (await claim(store, key, "fp", just_before)).outcome is ClaimOutcome.IN_FLIGHT
    after_lease = T0 + LEASE + timedelta(seconds=1)
    assert (await claim(store, key, "fp", after_lease)).outcome is ClaimOutcome.CLAIMED
    # The new holder has a fresh lease.
    assert (await claim(store, key, "fp", after_lease)).outcome is ClaimOutcome.IN_FLIGHT
    # Another body is still another request, lease or not.
    later = after_lease + 2 * LEASE
    assert (await claim(store, key, "other", later)).outcome is ClaimOutcome.MISMATCH


async def test_idempotency_release_frees_the_key(store: SqlIdempotencyStore) -> None:
    key = scope(new_org())
    assert (await claim(store, key, "fp", T0)).outcome is ClaimOutcome.CLAIMED
    await store.release(key)
    # Released: even another body may use the key now (the first was never answered).
    assert (await claim(store, key, "other", T0)).outcome is ClaimOutcome.CLAIMED


async def test_idempotency_expired_records_are_absent_and_purged(
    store: SqlIdempotencyStore,
) -> None:
    org_a, org_b = new_org(), new_org()
    done = scope(org_a)
    assert (await claim(store, done, "fp", T0)).outcome is ClaimOutcome.CLAIMED
    await store.complete(done, StoredResponse(status=200, headers={}, body=b"{}"))
    expired_at = T0 + TTL
    assert (await claim(store, done, "new", expired_at)).outcome is ClaimOutcome.CLAIMED

    # purge_expired: every organisation's expired records, nobody's live ones.
    old = [scope(org_a, key="old-a"), scope(org_b, key="old-b")]
    for key in old:
        await claim(store, key, "fp", T0 - TTL)
    live = scope(org_b, key="live")
    await claim(store, live, "fp", T0)
    purged = await store.purge_expired(T0)
    assert purged >= 2  # other tests' records in the shared PostgreSQL database may go too
    for key in old:  # gone: a new claim with another body is a first claim
        assert (await claim(store, key, "other", T0)).outcome is ClaimOutcome.CLAIMED
    assert (await claim(store, live, "fp", T0)).outcome is ClaimOutcome.IN_FLIGHT
    assert await store.purge_expired(T0 - 2 * TTL) == 0


async def test_idempotency_twenty_concurrent_claims_make_one_winner(
    database_url: str,
) -> None:
    # A pool as big as the crowd: every claim runs on a connection of its own, at once.
    database = Database(database_url, pool_size=20, max_overflow=0)
    try:
        store = SqlIdempotencyStore(database)
        key = scope(new_org())
        results = await asyncio.gather(*(claim(store, key, "fp", T0) for _ in range(20)))
    finally:
        await database.dispose()
    outcomes = [result.outcome for result in results]
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert outcomes.count(ClaimOutcome.IN_FLIGHT) == 19
