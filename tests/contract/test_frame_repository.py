"""The frame search: one contract on SQLite, PostgreSQL (as the runtime role, under row-level
security) and the in-memory fake, each held to a brute-force scan of the same fingerprints —
so SQLite and PostgreSQL answer identically, frame for frame, in the same order."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from uuid import UUID

import msgspec
import pytest

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.frame_directory import SqlFrameDirectory
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.domain.errors import InvalidInput
from heimdex.domain.frames import (
    BAND_BITS,
    FINGERPRINT_BITS,
    MAX_DISTANCE,
    FrameFingerprint,
    FrameMatch,
    FramePair,
    distance,
    order_key,
)
from heimdex.domain.model import Asset, AssetStatus
from heimdex.domain.ports import UnitOfWorkFactory
from tests.builders import make_media
from tests.contract.test_repositories import new_org, stored_asset
from tests.fixtures.db import migrated_database_url


def flip(fingerprint: int, count: int, rng: random.Random) -> int:
    """``fingerprint`` with ``count`` bits flipped, spread over the bands as evenly as possible
    (the hard case for the probes: at distance 7, three bands 2 bits off and one band 1 bit)."""
    bands = FINGERPRINT_BITS // BAND_BITS
    order = rng.sample(range(bands), bands)
    bits: list[int] = []
    for n in range(count):
        band = order[n % bands]
        bit = band * BAND_BITS + rng.randrange(BAND_BITS)
        while bit in bits:
            bit = band * BAND_BITS + rng.randrange(BAND_BITS)
        bits.append(bit)
    for bit in bits:
        fingerprint ^= 1 << bit
    return fingerprint


class Library(msgspec.Struct):
    org: str
    assets: list[Asset]
    frames: dict[UUID, list[FrameFingerprint]]
    query: int


# Asset ids are primary keys in a database the tests share: a library is the same on every
# backend of one run (``seed``), never the same as another run's.
_RUN = uuid.uuid4().hex


async def library(uow: UnitOfWorkFactory, seed: int) -> Library:
    """Six assets of one organisation: random frames, and frames at every distance 0…12 of a
    query fingerprint, one and the same for every backend (``seed``)."""
    rng = random.Random(f"{_RUN}-{seed}")
    org = new_org()
    query = rng.getrandbits(64)
    # Ids from the seed too (version 4, as uuid4 makes them): the same library on every backend.
    assets = [
        await stored_asset(
            uow, org, status=AssetStatus.READY, id=uuid.UUID(int=rng.getrandbits(128), version=4)
        )
        for _ in range(6)
    ]
    frames: dict[UUID, list[FrameFingerprint]] = {}
    for number, asset in enumerate(assets):
        own = [FrameFingerprint(time=float(t), fingerprint=rng.getrandbits(64)) for t in range(40)]
        for d in range(number, 13, 2):  # the near ones, spread over the assets
            own.append(FrameFingerprint(time=100.0 + d, fingerprint=flip(query, d, rng)))
        frames[asset.id] = own
    # A repeated fingerprint in two assets: a tie broken by asset id, then time.
    twin = flip(query, 1, rng)
    frames[assets[4].id].append(FrameFingerprint(time=7.5, fingerprint=twin))
    frames[assets[5].id].append(FrameFingerprint(time=7.5, fingerprint=twin))
    async with uow(org) as unit:
        for asset_id, own in frames.items():
            await unit.frames.replace(asset_id, own)
        await unit.commit()
    return Library(org=org, assets=assets, frames=frames, query=query)


def brute_force(lib: Library, fingerprint: int, max_distance: int) -> list[FrameMatch]:
    matches = [
        FrameMatch(asset_id=a, time=f.time, distance=distance(fingerprint, f.fingerprint))
        for a, own in lib.frames.items()
        for f in own
    ]
    return sorted((m for m in matches if m.distance <= max_distance), key=order_key)


async def test_nearest_finds_exactly_every_frame_within_the_distance_best_first(
    uow: UnitOfWorkFactory,
) -> None:
    lib = await library(uow, seed=1)
    async with uow(lib.org) as unit:
        for max_distance in range(MAX_DISTANCE + 1):
            found = await unit.frames.nearest(lib.query, max_distance=max_distance, limit=1000)
            assert found == brute_force(lib, lib.query, max_distance)
        top = await unit.frames.nearest(lib.query, max_distance=MAX_DISTANCE, limit=3)
    expected = brute_force(lib, lib.query, MAX_DISTANCE)
    assert top == expected[:3]
    assert {m.distance for m in expected} == set(range(MAX_DISTANCE + 1))  # every distance tried


async def test_shared_pairs_every_frame_of_the_asset_with_the_near_frames_of_the_others(
    uow: UnitOfWorkFactory,
) -> None:
    lib = await library(uow, seed=2)
    mine = lib.assets[4]
    expected = sorted(
        (
            FramePair(
                time=f.time,
                other_asset_id=b,
                other_time=g.time,
                distance=distance(f.fingerprint, g.fingerprint),
            )
            for f in lib.frames[mine.id]
            for b, own in lib.frames.items()
            if b != mine.id
            for g in own
            if distance(f.fingerprint, g.fingerprint) <= 5
        ),
        key=lambda p: (p.time, str(p.other_asset_id), p.other_time),
    )
    async with uow(lib.org) as unit:
        assert await unit.frames.shared(mine.id, max_distance=5) == expected
    assert any(p.other_asset_id == lib.assets[5].id and p.distance == 0 for p in expected)


async def test_another_organisations_frames_never_appear(uow: UnitOfWorkFactory) -> None:
    lib = await library(uow, seed=3)
    stranger = new_org()
    theirs = await stored_asset(uow, stranger, status=AssetStatus.READY)
    async with uow(stranger) as unit:
        await unit.frames.replace(theirs.id, [FrameFingerprint(time=1.0, fingerprint=lib.query)])
        await unit.commit()
    async with uow(lib.org) as unit:
        found = await unit.frames.nearest(lib.query, max_distance=MAX_DISTANCE, limit=1000)
        assert theirs.id not in {m.asset_id for m in found}
        assert await unit.frames.of_asset(theirs.id) == []
        shared = await unit.frames.shared(lib.assets[0].id, max_distance=MAX_DISTANCE)
        assert theirs.id not in {p.other_asset_id for p in shared}
    async with uow(stranger) as unit:
        found = await unit.frames.nearest(lib.query, max_distance=MAX_DISTANCE, limit=1000)
        assert [m.asset_id for m in found] == [theirs.id]


async def test_replace_replaces_and_frames_go_with_their_asset(uow: UnitOfWorkFactory) -> None:
    org = new_org()
    asset = await stored_asset(uow, org, status=AssetStatus.READY)
    first = [FrameFingerprint(time=2.0, fingerprint=5), FrameFingerprint(time=1.0, fingerprint=3)]
    async with uow(org) as unit:
        await unit.frames.replace(asset.id, first)
        await unit.frames.replace(asset.id, first[:1])
        await unit.commit()
    async with uow(org) as unit:
        assert await unit.frames.of_asset(asset.id) == first[:1]
        assert await unit.frames.unindexed_assets(after=None, limit=10) == []
        await unit.assets.delete(asset.id)
        await unit.commit()
    async with uow(org) as unit:
        assert await unit.frames.nearest(5, max_distance=0, limit=10) == []


async def test_unindexed_assets_are_the_ready_videos_without_frames_in_id_order(
    uow: UnitOfWorkFactory,
) -> None:
    org = new_org()
    ready = [await stored_asset(uow, org, status=AssetStatus.READY) for _ in range(3)]
    await stored_asset(uow, org, status=AssetStatus.PROCESSING)
    await stored_asset(uow, org, status=AssetStatus.READY, media=make_media(video=None))
    indexed = await stored_asset(uow, org, status=AssetStatus.READY)
    async with uow(org) as unit:
        await unit.frames.replace(indexed.id, [FrameFingerprint(time=0.0, fingerprint=1)])
        await unit.commit()
    ids = sorted((a.id for a in ready), key=lambda i: i.bytes)
    async with uow(org) as unit:
        assert await unit.frames.unindexed_assets(after=None, limit=10) == ids
        assert await unit.frames.unindexed_assets(after=ids[0], limit=1) == ids[1:2]


async def test_a_distance_the_bands_cannot_answer_exactly_is_refused(
    uow: UnitOfWorkFactory,
) -> None:
    async with uow(new_org()) as unit:
        with pytest.raises(InvalidInput):
            await unit.frames.nearest(1, max_distance=MAX_DISTANCE + 1, limit=10)
        with pytest.raises(InvalidInput):
            await unit.frames.shared(uuid.uuid4(), max_distance=-1)


@pytest.fixture
def both_urls(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    return [migrated_database_url(request, b, tmp_path) for b in ("sqlite", "postgres")]


@pytest.mark.postgres
async def test_sqlite_and_postgres_answer_identically(both_urls: list[str]) -> None:
    answers = []
    for url in both_urls:
        database = Database(url)
        try:
            uow = SqlUnitOfWorkFactory(database)
            lib = await library(uow, seed=11)
            async with uow(lib.org) as unit:
                found = await unit.frames.nearest(lib.query, max_distance=MAX_DISTANCE, limit=500)
                shared = await unit.frames.shared(lib.assets[2].id, max_distance=MAX_DISTANCE)
            answers.append((found, shared))
        finally:
            await database.dispose()
    assert answers[0] == answers[1]
    assert len(answers[0][0]) > 10


async def test_the_directory_lists_unindexed_assets_of_every_organisation(backend: str) -> None:
    if backend == "fake":
        pytest.skip("the directory has no fake: the use case's tests go through SQLite")
    database = Database(backend)
    try:
        uow = SqlUnitOfWorkFactory(database)
        mine, theirs = new_org(), new_org()
        todo = [await stored_asset(uow, org, status=AssetStatus.READY) for org in (mine, theirs)]
        done = await stored_asset(uow, mine, status=AssetStatus.READY)
        async with uow(mine) as unit:
            await unit.frames.replace(done.id, [FrameFingerprint(time=0.0, fingerprint=1)])
            await unit.commit()
        directory = SqlFrameDirectory(database)
        listed: list[tuple[str, UUID]] = []
        after = None
        while page := await directory.unindexed(after=after, limit=1):  # one per page
            listed.extend(page)
            after = page[-1]
        ours = [entry for entry in listed if entry[0] in (mine, theirs)]
        assert sorted(ours) == sorted((a.org_id, a.id) for a in todo)
        assert (mine, done.id) not in listed
        assert len(set(listed)) == len(listed)  # each once across the pages
    finally:
        await database.dispose()
