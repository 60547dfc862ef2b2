"""The Storage contract: every adapter passes the same suite (local files, S3 on a real moto
server, and the application tests' in-memory fake). S3-only checks — what a presigned URL binds,
memory — are in ``test_storage_s3``."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from heimdex.adapters.auth.url_signing import HmacUrlSigner
from heimdex.adapters.storage.local import LocalStorage
from heimdex.adapters.storage.s3 import MIN_PART_SIZE, S3Storage
from heimdex.domain.declared import Declared
from heimdex.domain.errors import (
    ChecksumMismatch,
    InvalidStorageKey,
    LengthMismatch,
    SourceNotFound,
    StorageError,
    UploadTooLarge,
)
from heimdex.domain.model import Upload
from heimdex.domain.ports import Storage, StoredObject
from tests.builders import make_upload
from tests.fixtures.killed_storage import COPIED_KEY, WRITTEN_KEY, kill_mid_work, spec_of
from tests.fixtures.s3 import MotoServer, s3_storage
from tests.unit.fakes import FakeStorage

SIGNER = HmacUrlSigner("storage-contract-secret-of-32-bytes!")

KEY = "uploads/org-a/u1/clip.mp4"


@pytest.fixture(params=["local", "s3", "fake"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "fake":
        yield FakeStorage()
    elif request.param == "local":
        yield LocalStorage(tmp_path / "storage", SIGNER)
    elif request.param == "s3":
        moto: MotoServer = request.getfixturevalue("moto_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        # The smallest part S3 allows, so a few MiB already take the multipart path.
        store = s3_storage(moto, bucket, tmp_path / "tmp", part_size=MIN_PART_SIZE)
        try:
            yield store
        finally:
            await store.aclose()
    else:
        raise AssertionError(request.param)


def scratch_left(storage: Storage) -> list[Path]:
    """What an S3 store's temporary copies left in its ``temp_dir`` (local storage makes none)."""
    if isinstance(storage, S3Storage) and storage.temp_dir.exists():
        return list(storage.temp_dir.iterdir())
    return []


def pending_upload(key: str = KEY, sha256: str | None = None, length: int = 123) -> Upload:
    return make_upload(
        "org-a",
        at=datetime(2029, 12, 31, tzinfo=UTC),
        key=key,
        source_uri="x://" + key,
        content_length=length,
        declared_sha256=sha256,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_write_stream_stores_hashes_and_reads_back(storage: Storage) -> None:
    parts = [os.urandom(300_000), os.urandom(1_500_000), b"tail"]
    stored = await storage.write_stream(KEY, chunks_of(*parts))
    whole = b"".join(parts)
    assert stored.size_bytes == len(whole)
    assert stored.sha256 == hashlib.sha256(whole).hexdigest()
    assert (await storage.stat(KEY)) is not None
    assert b"".join([c async for c in storage.read_chunks(KEY)]) == whole
    async with storage.local_path(KEY) as path:
        assert path.read_bytes() == whole


async def test_a_failed_write_leaves_nothing_behind(storage: Storage) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"first half"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await storage.write_stream(KEY, broken())
    assert await storage.stat(KEY) is None
    assert await storage.delete_prefix("uploads/org-a/") == 0


async def test_a_failed_overwrite_keeps_the_old_object_whole(storage: Storage) -> None:
    await storage.write_bytes(KEY, b"original")

    async def broken() -> AsyncIterator[bytes]:
        yield b"replacement that never finishes"
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await storage.write_stream(KEY, broken())
    assert b"".join([c async for c in storage.read_chunks(KEY)]) == b"original"


async def test_stat_of_a_missing_object_is_none(storage: Storage) -> None:
    assert await storage.stat("uploads/org-a/none/clip.mp4") is None


async def test_local_path_of_a_missing_object_is_source_not_found(storage: Storage) -> None:
    with pytest.raises(SourceNotFound):
        async with storage.local_path("uploads/org-a/none/clip.mp4"):
            pass


async def test_delete_and_delete_prefix(storage: Storage) -> None:
    await storage.write_bytes("derived/org-a/a1/thumbs/0000.jpg", b"1")
    await storage.write_bytes("derived/org-a/a1/thumbs/0001.jpg", b"2")
    await storage.write_bytes("derived/org-a/a2/thumbs/0000.jpg", b"3")
    await storage.write_bytes(KEY, b"4")
    assert await storage.delete_prefix("derived/org-a/a1/") == 2
    assert await storage.stat("derived/org-a/a1/thumbs/0000.jpg") is None
    assert await storage.stat("derived/org-a/a2/thumbs/0000.jpg") is not None
    await storage.delete(KEY)
    await storage.delete(KEY)  # deleting twice is fine
    assert await storage.stat(KEY) is None


async def test_a_delete_the_filesystem_refuses_is_a_storage_error(tmp_path: Path) -> None:
    # What the port promises its callers (the sweeps, a job discarding its outputs), rather
    # than the filesystem's own OSError.
    storage = LocalStorage(tmp_path / "storage", SIGNER)
    await storage.write_bytes("derived/org-a/sidecars/a1.json", b"x")
    with pytest.raises(StorageError):
        await storage.delete("derived/org-a/sidecars/a1.json/inside")  # under a file


async def names(storage: Storage, prefix: str) -> list[str]:
    return sorted([name async for name in storage.list_names(prefix)])


async def test_list_names_lists_one_level_like_ls(storage: Storage) -> None:
    for key in (
        "derived/org-a/a1/thumbs/0000.jpg",
        "derived/org-a/a1/thumbs/0001.jpg",
        "derived/org-a/sidecars/a1.json",
        "derived/org-b/x.json",
        KEY,
    ):
        await storage.write_bytes(key, b"x")
    assert await names(storage, "derived/") == ["org-a/", "org-b/"]
    assert await names(storage, "derived/org-a/") == ["a1/", "sidecars/"]
    assert await names(storage, "derived/org-a/sidecars/") == ["a1.json"]
    assert await names(storage, "derived/org-b/") == ["x.json"]
    assert await names(storage, "derived/org-c/") == []
    await storage.delete_prefix("derived/org-a/a1/")
    assert await names(storage, "derived/org-a/") == ["sidecars/"]


async def test_list_names_never_shows_scratch_files(tmp_path: Path) -> None:
    # A derived root of its own keeps its own .scratch directory at the top of it.
    storage = LocalStorage(tmp_path / "storage", SIGNER, derived_root=tmp_path / "derived")
    await storage.write_bytes("derived/org-a/a1/thumbs/0000.jpg", b"x")
    (tmp_path / "derived" / ".scratch" / "left.part").write_bytes(b"half")
    assert await names(storage, "derived/") == ["org-a/"]


async def test_uris_are_distinct_per_key(storage: Storage) -> None:
    assert storage.uri_for(KEY) != storage.uri_for(KEY + "x")
    assert KEY in storage.uri_for(KEY)


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"x" * 11, UploadTooLarge), (b"x" * 9, LengthMismatch)],
)
async def test_write_stream_enforces_the_expected_size_and_keeps_nothing(
    storage: Storage, data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await storage.write_stream(KEY, chunks_of(data[:5], data[5:]), declared=Declared(size=10))
    assert await storage.stat(KEY) is None


async def test_a_longer_body_is_refused_before_it_is_all_read(storage: Storage) -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 1
            yield b"x" * 1024

    with pytest.raises(UploadTooLarge):
        await storage.write_stream(KEY, endless(), declared=Declared(size=4096))
    assert consumed <= 6


async def test_write_stream_enforces_the_expected_sha256(storage: Storage) -> None:
    data = b"payload"
    with pytest.raises(ChecksumMismatch):
        await storage.write_stream(KEY, chunks_of(data), declared=Declared(sha256="0" * 64))
    assert await storage.stat(KEY) is None
    good = hashlib.sha256(data).hexdigest()
    stored = await storage.write_stream(
        KEY, chunks_of(data), declared=Declared(sha256=good.upper())
    )
    assert stored.sha256 == good


async def test_local_copy_holds_the_bytes_with_their_size_and_sha256(storage: Storage) -> None:
    data = os.urandom(3_000_000)  # several read chunks
    await storage.write_bytes(KEY, data)
    async with storage.local_copy(KEY) as copy:
        assert copy.path.read_bytes() == data
        assert copy.path.name == "clip.mp4"  # the extension stays for the prober
        assert copy.stored == StoredObject(
            key=KEY, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )


async def test_local_copy_of_a_missing_object_is_source_not_found_and_leaves_nothing(
    storage: Storage,
) -> None:
    with pytest.raises(SourceNotFound):
        async with storage.local_copy("uploads/org-a/none/clip.mp4"):
            pass
    assert scratch_left(storage) == []


@pytest.mark.parametrize("exit_by", ["return", "error", "cancel"])
async def test_local_copy_is_removed_however_the_context_exits(
    storage: Storage, exit_by: str
) -> None:
    await storage.write_bytes(KEY, b"bytes")
    with anyio.CancelScope() as scope:
        with contextlib.suppress(RuntimeError):
            async with storage.local_copy(KEY) as copy:
                assert copy.path.read_bytes() == b"bytes"
                if exit_by == "error":
                    raise RuntimeError("the probe failed")
                if exit_by == "cancel":
                    scope.cancel()
                    await anyio.sleep(5)
    assert scope.cancel_called is (exit_by == "cancel")
    assert scratch_left(storage) == []
    if isinstance(storage, S3Storage):  # a temporary copy; local storage hands its own file
        assert not copy.path.exists()
    # Whatever happened to the copy, the object itself is whole.
    assert b"".join([c async for c in storage.read_chunks(KEY)]) == b"bytes"


@pytest.mark.parametrize("key", ["../escape", "uploads/../../etc/passwd", "/etc/passwd", ""])
async def test_keys_that_escape_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidStorageKey):
        await storage.write_bytes(key, b"x")


async def test_health_check_passes_on_a_usable_store(storage: Storage) -> None:
    await storage.check()


async def test_a_body_of_many_parts_streams_through_and_back(storage: Storage) -> None:
    """Longer than one S3 part (and one buffer of any kind): written, read and copied in
    chunks, never whole."""
    part = os.urandom(1024 * 1024)
    count = (2 * MIN_PART_SIZE) // len(part) + 3
    stored = await storage.write_stream(KEY, chunks_of(*[part] * count))
    whole = hashlib.sha256(part * count).hexdigest()
    assert (stored.size_bytes, stored.sha256) == (len(part) * count, whole)
    stat = await storage.stat(KEY)
    assert stat is not None
    assert stat.size_bytes == len(part) * count
    async with storage.local_copy(KEY) as copy:
        assert (copy.stored.size_bytes, copy.stored.sha256) == (len(part) * count, whole)
        assert copy.path.stat().st_size == len(part) * count
    sizes = [len(c) async for c in storage.read_chunks(KEY)]
    assert sum(sizes) == len(part) * count
    assert max(sizes) <= 1024 * 1024
    async with storage.local_path(KEY) as path:
        assert path.stat().st_size == len(part) * count


async def test_a_many_part_body_that_fails_its_checks_keeps_nothing(storage: Storage) -> None:
    part = b"y" * (1024 * 1024)
    count = MIN_PART_SIZE // len(part) + 2
    with pytest.raises(ChecksumMismatch):
        await storage.write_stream(
            KEY, chunks_of(*[part] * count), declared=Declared(sha256="0" * 64)
        )
    with pytest.raises(LengthMismatch):
        await storage.write_stream(
            KEY, chunks_of(*[part] * count), declared=Declared(size=len(part) * (count + 1))
        )
    assert await storage.stat(KEY) is None


async def test_local_path_is_removed_on_exit(storage: Storage) -> None:
    await storage.write_bytes(KEY, b"bytes")
    async with storage.local_path(KEY) as path:
        assert path.read_bytes() == b"bytes"
        assert path.name == "clip.mp4"  # the extension stays for the prober
    if isinstance(storage, S3Storage):  # a temporary copy; local storage hands its own file
        assert not path.exists()


async def test_delete_prefix_without_a_slash_is_a_name_prefix(storage: Storage) -> None:
    await storage.write_bytes("derived/org-a/a1/thumbs/0000.jpg", b"1")
    await storage.write_bytes("derived/org-a/a10/thumbs/0000.jpg", b"2")
    await storage.write_bytes("derived/org-a/b1/thumbs/0000.jpg", b"3")
    assert await storage.delete_prefix("derived/org-a/a1") == 2
    assert await storage.stat("derived/org-a/b1/thumbs/0000.jpg") is not None


@pytest.mark.parametrize("sha256", [None, "ab" * 32])
async def test_upload_target_is_a_put_bound_to_the_declared_type_and_length(
    storage: Storage, sha256: str | None
) -> None:
    upload = pending_upload(sha256=sha256)
    target = await storage.upload_target(upload, "https://api.example")
    assert target.method == "PUT"
    assert target.headers["Content-Type"] == "video/mp4"
    assert target.headers["Content-Length"] == "123"
    assert target.url.startswith(("http://", "https://"))


async def test_download_urls_differ_per_key(storage: Storage) -> None:
    first = await storage.download_url("derived/org-a/a1/thumbs/0000.jpg", "https://api", 2**31)
    second = await storage.download_url("derived/org-a/a1/thumbs/0001.jpg", "https://api", 2**31)
    assert first.startswith(("http://", "https://"))
    assert first != second


# -- scratch files ------------------------------------------------------------------------------
def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def age_everything_under(root: Path, age: timedelta) -> None:
    """As if nothing under ``root`` had been written for ``age`` (files and directories)."""
    then = (datetime.now(UTC) - age).timestamp()
    for path in [root, *root.rglob("*")]:
        os.utime(path, (then, then), follow_symlinks=False)


def spec_for(storage: Storage, request: pytest.FixtureRequest) -> dict[str, str]:
    if isinstance(storage, S3Storage):
        moto: MotoServer = request.getfixturevalue("moto_server")
        return spec_of(storage, moto.endpoint_url)
    return spec_of(storage)


async def test_scratch_a_killed_process_left_is_swept_once_old(
    storage: Storage, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if isinstance(storage, FakeStorage):
        pytest.skip("the in-memory fake has no process to kill and no disk to leave files on")
    data = os.urandom(100_000)
    await storage.write_bytes(COPIED_KEY, data)
    before = files_under(tmp_path)
    kill_mid_work(spec_for(storage, request))  # a copy open, a write under way
    assert files_under(tmp_path) > before, "the killed process left no scratch file to sweep"

    now = datetime.now(UTC)
    assert await storage.sweep_scratch(now - timedelta(hours=1)) == []  # not old yet
    age_everything_under(tmp_path, timedelta(days=2))
    removed = await storage.sweep_scratch(now - timedelta(days=1))

    assert removed, "nothing was swept"
    for item in removed:
        assert not Path(item.path).exists()
        assert Path(item.path).is_relative_to(tmp_path)
        assert item.modified_at < now - timedelta(days=1)
    assert sum(item.size_bytes for item in removed) >= len(data)  # at least the copy went
    assert files_under(tmp_path) == before  # everything it left, and only that
    assert b"".join([c async for c in storage.read_chunks(COPIED_KEY)]) == data
    assert await storage.stat(WRITTEN_KEY) is None
    assert await storage.sweep_scratch(now) == []


async def test_scratch_of_a_live_write_and_copy_is_kept(storage: Storage) -> None:
    data = os.urandom(100_000)
    await storage.write_bytes(COPIED_KEY, data)
    more = anyio.Event()
    asked = anyio.Event()

    async def a_put_in_flight() -> AsyncIterator[bytes]:
        yield b"first half, "
        asked.set()
        await more.wait()
        yield b"second half"

    async with anyio.create_task_group() as group:
        group.start_soon(storage.write_stream, WRITTEN_KEY, a_put_in_flight())
        async with storage.local_copy(COPIED_KEY) as copy:
            await asked.wait()
            assert await storage.sweep_scratch(datetime.now(UTC) - timedelta(seconds=30)) == []
            assert copy.path.read_bytes() == data
            more.set()
    assert b"".join([c async for c in storage.read_chunks(WRITTEN_KEY)]) == (
        b"first half, second half"
    )


async def test_stored_objects_are_never_swept_however_old(storage: Storage, tmp_path: Path) -> None:
    keys = [
        COPIED_KEY,
        "uploads/org-a/u9/.clip.mp4.0123456789abcdef.part",  # an object, whatever its name
        "derived/org-a/sidecars/a1.json",
        "derived/org-a/a1/thumbs/0000.jpg",
    ]
    for key in keys:
        await storage.write_bytes(key, key.encode())
    age_everything_under(tmp_path, timedelta(days=3650))
    await storage.sweep_scratch(datetime.now(UTC) + timedelta(days=1))  # all scratch is old
    for key in keys:
        assert b"".join([c async for c in storage.read_chunks(key)]) == key.encode()


# -- local only ---------------------------------------------------------------------------------
@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage", SIGNER)


async def test_local_refuses_an_object_reached_through_a_symlink(
    local: LocalStorage, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    link = local.root / "uploads/org-a/u1/clip.mp4"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    with pytest.raises(InvalidStorageKey):
        async with local.local_path(KEY):
            pass
    with pytest.raises(InvalidStorageKey):
        [c async for c in local.read_chunks(KEY)]


async def test_local_derived_root_keeps_derived_keys_apart(tmp_path: Path) -> None:
    storage = LocalStorage(
        tmp_path / "storage", SIGNER, derived_root=tmp_path / "derived-elsewhere"
    )
    await storage.write_bytes("derived/org-a/sidecars/a1.json", b"{}")
    assert (tmp_path / "derived-elsewhere/org-a/sidecars/a1.json").read_bytes() == b"{}"
    assert not (tmp_path / "storage/derived").exists()


async def test_local_scratch_is_no_key(local: LocalStorage) -> None:
    with pytest.raises(InvalidStorageKey):
        await local.write_bytes(".scratch/clip.mp4.0123.part", b"x")
    with pytest.raises(InvalidStorageKey):
        await local.delete(".scratch/clip.mp4.0123.part")


async def test_local_scratch_is_swept_under_the_derived_root_too(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage", SIGNER, derived_root=tmp_path / "derived")
    await storage.write_bytes("derived/org-a/sidecars/a1.json", b"{}")
    await storage.write_bytes(KEY, b"source")  # each base has its own scratch directory
    left = [tmp_path / "storage/.scratch/clip.mp4.1.part", tmp_path / "derived/.scratch/a1.2.part"]
    for path in left:
        path.write_bytes(b"half")
    age_everything_under(tmp_path, timedelta(days=2))
    removed = await storage.sweep_scratch(datetime.now(UTC) - timedelta(days=1))
    assert sorted(Path(r.path) for r in removed) == sorted(left)
    assert (tmp_path / "derived/org-a/sidecars/a1.json").read_bytes() == b"{}"
    assert (tmp_path / "storage" / KEY).read_bytes() == b"source"


async def test_local_writes_leave_no_temporary_files(local: LocalStorage) -> None:
    await local.write_bytes(KEY, b"x" * 10)
    names = [p.name for p in local.root.rglob("*")]
    assert not [n for n in names if n.endswith(".part")]


async def test_local_check_fails_when_the_root_is_not_writable(local: LocalStorage) -> None:
    if os.geteuid() == 0:
        local.root.rmdir()
        local.root.write_text("not a directory")  # even root cannot create files in a file
    else:
        local.root.chmod(0o500)
    with pytest.raises(Exception, match="not writable"):
        await local.check()


async def test_local_upload_target_is_the_api_signed_for_the_org(local: LocalStorage) -> None:
    upload = pending_upload()
    target = await local.upload_target(upload, "https://api.example/")
    url = urlsplit(target.url)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert target.method == "PUT"
    assert (url.scheme, url.netloc, url.path) == (
        "https",
        "api.example",
        f"/v1/uploads/{upload.id}",
    )
    assert target.headers == {"Content-Type": "video/mp4", "Content-Length": "123"}
    assert query["org"] == "org-a"
    assert int(query["expires"]) == int(upload.expires_at.timestamp())
    assert SIGNER.verify("PUT", url.path, "org-a", int(query["expires"]), query["signature"])
    assert not SIGNER.verify("PUT", url.path, "org-b", int(query["expires"]), query["signature"])
