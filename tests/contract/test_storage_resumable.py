"""The resumable-write part of the Storage contract (what tus PATCHes use): local files, S3 on a
real moto server with the smallest part S3 allows, and the in-memory fake all pass it."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from heimdex.adapters.auth.url_signing import HmacUrlSigner
from heimdex.adapters.storage.local import LocalStorage
from heimdex.adapters.storage.s3 import MIN_PART_SIZE
from heimdex.domain.errors import ChunkChecksumMismatch, UploadTooLarge
from heimdex.domain.ports import Storage
from heimdex.domain.resumable import ChunkChecksum
from tests.contract.test_storage import KEY, chunks_of
from tests.fixtures.s3 import MotoServer, s3_storage
from tests.unit.fakes import FakeStorage

MIB = 1024 * 1024


@pytest.fixture(params=["local", "s3", "fake"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "fake":
        yield FakeStorage()
    elif request.param == "local":
        yield LocalStorage(
            tmp_path / "storage", HmacUrlSigner("resumable-contract-secret-32-bytes")
        )
    else:
        moto: MotoServer = request.getfixturevalue("moto_server")
        # The smallest part S3 allows, so a few MiB already make several parts.
        store = s3_storage(
            moto, request.getfixturevalue("s3_bucket"), tmp_path / "tmp", part_size=MIN_PART_SIZE
        )
        try:
            yield store
        finally:
            await store.aclose()


async def broken_after(data: bytes) -> AsyncIterator[bytes]:
    yield data
    raise ConnectionResetError("client went away")


async def whole_object(storage: Storage) -> bytes:
    return b"".join([chunk async for chunk in storage.read_chunks(KEY)])


async def test_appends_of_any_size_make_the_object_on_the_last_byte(storage: Storage) -> None:
    """Pieces that straddle part boundaries, a single byte, an exact part: one object."""
    data = os.urandom(2 * MIN_PART_SIZE + 3 * MIB + 7)
    cuts = [0, 3 * MIB, 3 * MIB + 1, MIN_PART_SIZE + 2 * MIB, 2 * MIN_PART_SIZE, len(data)]
    session = await storage.begin_resumable(KEY)
    offset = 0
    for start, end in itertools.pairwise(cuts):
        assert await storage.stat(KEY) is None  # nothing visible before the last byte
        offset = await storage.append_resumable(
            KEY, session, offset=offset, total=len(data), chunks=chunks_of(data[start:end])
        )
        assert offset == end
    stat = await storage.stat(KEY)
    assert stat is not None
    assert stat.size_bytes == len(data)
    async with storage.local_copy(KEY) as copy:
        assert copy.stored.sha256 == hashlib.sha256(data).hexdigest()


async def test_a_failed_append_counts_nothing_and_the_next_resumes(storage: Storage) -> None:
    data = os.urandom(MIN_PART_SIZE + 2 * MIB)
    session = await storage.begin_resumable(KEY)
    offset = await storage.append_resumable(
        KEY, session, offset=0, total=len(data), chunks=chunks_of(data[: 1 * MIB])
    )
    with pytest.raises(ConnectionResetError):
        await storage.append_resumable(
            KEY,
            session,
            offset=offset,
            total=len(data),
            chunks=broken_after(b"\xff" * (MIN_PART_SIZE + 1)),  # wrong bytes, a whole part
        )
    # The offset recorded is still 1 MiB: resuming there sends the right bytes over the wrong.
    offset = await storage.append_resumable(
        KEY, session, offset=offset, total=len(data), chunks=chunks_of(data[offset:])
    )
    assert offset == len(data)
    assert await whole_object(storage) == data


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
async def test_a_chunk_failing_its_checksum_is_discarded(storage: Storage, algorithm: str) -> None:
    data = os.urandom(MIN_PART_SIZE + MIB)
    session = await storage.begin_resumable(KEY)
    corrupt = bytearray(data)
    corrupt[123] ^= 0xFF
    declared = ChunkChecksum(algorithm=algorithm, digest=hashlib.new(algorithm, data).digest())
    with pytest.raises(ChunkChecksumMismatch):
        await storage.append_resumable(
            KEY,
            session,
            offset=0,
            total=len(data),
            chunks=chunks_of(bytes(corrupt)),
            checksum=declared,
        )
    assert await storage.stat(KEY) is None
    offset = await storage.append_resumable(
        KEY, session, offset=0, total=len(data), chunks=chunks_of(data), checksum=declared
    )
    assert offset == len(data)
    assert await whole_object(storage) == data


async def test_bytes_past_the_total_are_refused(storage: Storage) -> None:
    session = await storage.begin_resumable(KEY)
    with pytest.raises(UploadTooLarge):
        await storage.append_resumable(
            KEY, session, offset=0, total=10, chunks=chunks_of(b"x" * 11)
        )
    assert (
        await storage.append_resumable(
            KEY, session, offset=0, total=10, chunks=chunks_of(b"0123456789")
        )
        == 10
    )
    assert await whole_object(storage) == b"0123456789"


async def test_a_discarded_write_leaves_nothing(storage: Storage) -> None:
    session = await storage.begin_resumable(KEY)
    await storage.append_resumable(KEY, session, offset=0, total=100, chunks=chunks_of(b"x" * 60))
    await storage.discard_resumable(KEY, session)
    await storage.discard_resumable(KEY, session)  # already gone is fine
    assert await storage.stat(KEY) is None
    assert [name async for name in storage.list_names("uploads/org-a/")] == []


async def test_local_bytes_left_past_the_offset_by_a_killed_append_are_cut_off(
    storage: Storage,
) -> None:
    """A process killed mid-append leaves bytes past the recorded offset in the partial file;
    the next append starts at the recorded offset."""
    if not isinstance(storage, LocalStorage):
        pytest.skip("the partial file is the local store's own")
    data = os.urandom(3 * MIB)
    session = await storage.begin_resumable(KEY)
    offset = await storage.append_resumable(
        KEY, session, offset=0, total=len(data), chunks=chunks_of(data[:MIB])
    )
    partial = storage.root / ".resumable" / session
    with partial.open("ab") as handle:
        handle.write(b"garbage a killed append wrote")
    await storage.append_resumable(
        KEY, session, offset=offset, total=len(data), chunks=chunks_of(data[offset:])
    )
    assert await whole_object(storage) == data
    assert not partial.exists()
