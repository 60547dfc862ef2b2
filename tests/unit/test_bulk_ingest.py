"""BulkIngest orchestration on in-memory ports: what becomes of each file, and which calls it
makes to the Heimdex it talks to."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from heimdex.application.bulk_ingest import (
    BulkIngest,
    Candidate,
    FileOutcome,
    FileStatus,
    IngestFailure,
    IngestOptions,
    KnownAsset,
    UploadSlot,
    exit_status,
)


class MemoryFiles:
    def __init__(self, contents: dict[str, bytes]) -> None:
        self.contents = contents

    def discover(
        self, paths: Sequence[Path], *, recursive: bool
    ) -> tuple[list[Candidate], list[FileOutcome]]:
        raise NotImplementedError

    async def sha256(self, path: Path, size: int) -> str:
        return hashlib.sha256(self.contents[path.name]).hexdigest()

    async def chunks(
        self, path: Path, size: int, on_bytes: Callable[[int], None]
    ) -> AsyncIterator[bytes]:
        data = self.contents[path.name]
        on_bytes(len(data))
        yield data


class MemoryHeimdex:
    def __init__(
        self, *, fail_upload_of: str | None = None, max_put: int = 1 << 40, max_tus: int = 1 << 40
    ) -> None:
        self.assets: dict[str, str] = {}  # sha256 → asset id
        self.slots: dict[str, tuple[str, str]] = {}
        self.received: dict[str, bytes] = {}
        self.calls: list[str] = []
        self.fail_upload_of = fail_upload_of
        self.max_put, self.max_tus = max_put, max_tus
        self.sidecars: set[str] = set()  # assets whose sidecar was asked for
        self.sidecar_refusal: IngestFailure | None = None  # what request_sidecar raises
        self.job_error: str | None = None  # the error code every sidecar job ends with

    async def find_asset(self, sha256: str) -> KnownAsset | None:
        self.calls.append("find")
        asset_id = self.assets.get(sha256)
        if asset_id is None:
            return None
        return KnownAsset(asset_id=asset_id, needs_sidecar=asset_id not in self.sidecars)

    async def init_upload(
        self, name: str, size: int, content_type: str, sha256: str, *, resumable: bool = False
    ) -> UploadSlot:
        self.calls.append("init resumable" if resumable else "init")
        if size > (self.max_tus if resumable else self.max_put):
            raise IngestFailure("upload_too_large", f"{size} is over the limit")
        upload_id = f"u{len(self.slots)}"
        self.slots[upload_id] = (name, sha256)
        method = "PATCH" if resumable else "PUT"
        return UploadSlot(
            upload_id=upload_id, url=f"/{upload_id}", method=method, headers={}, resumable=resumable
        )

    async def upload(self, slot: UploadSlot, size: int, chunks: AsyncIterator[bytes]) -> None:
        self.calls.append("upload")
        if self.slots[slot.upload_id][0] == self.fail_upload_of:
            raise IngestFailure("checksum_mismatch", "the bytes are not the declared ones")
        self.received[slot.upload_id] = b"".join([c async for c in chunks])

    async def commit(self, upload_id: str) -> str:
        self.calls.append("commit")
        asset_id = f"a{len(self.assets)}"
        self.assets[self.slots[upload_id][1]] = asset_id
        return asset_id

    async def request_sidecar(self, asset_id: str) -> str:
        self.calls.append("sidecar")
        if self.sidecar_refusal is not None:
            raise self.sidecar_refusal
        self.sidecars.add(asset_id)
        return f"j-{asset_id}"

    async def wait_for_job(self, job_id: str) -> str | None:
        self.calls.append("wait")
        return self.job_error


class Quiet:
    def started(self, name: str) -> None: ...
    def advance_bytes(self, count: int) -> None: ...
    def finished(self, name: str) -> None: ...


def media(name: str, size: int = 3, *, named: bool = False) -> Candidate:
    return Candidate(path=Path(name), size=size, content_type="video/mp4", named=named)


async def run(
    files: MemoryFiles, target: MemoryHeimdex, candidates: list[Candidate], **options: bool
) -> dict[str, FileOutcome]:
    outcomes: list[FileOutcome] = []
    await BulkIngest(files, target, IngestOptions(jobs=3, **options)).run(
        candidates, Quiet(), outcomes.append
    )
    return {o.file: o for o in outcomes}


async def test_identical_files_in_one_run_become_one_asset() -> None:
    files = MemoryFiles({"a.mp4": b"abc", "b.mp4": b"abc", "c.mp4": b"xyz"})
    target = MemoryHeimdex()
    out = await run(files, target, [media("a.mp4"), media("b.mp4"), media("c.mp4")])
    assert sorted(o.status for o in (out["a.mp4"], out["b.mp4"])) == ["duplicate", "ingested"]
    assert out["a.mp4"].asset_id == out["b.mp4"].asset_id
    assert out["c.mp4"].status is FileStatus.INGESTED
    assert target.calls.count("init") == 2
    assert target.calls.count("sidecar") == 2


async def test_what_the_organisation_has_is_a_duplicate_without_an_upload() -> None:
    files = MemoryFiles({"a.mp4": b"abc"})
    target = MemoryHeimdex()
    target.assets[hashlib.sha256(b"abc").hexdigest()] = "existing"
    target.sidecars.add("existing")
    out = await run(files, target, [media("a.mp4")])
    assert out["a.mp4"].status is FileStatus.DUPLICATE
    assert out["a.mp4"].asset_id == "existing"
    assert target.calls == ["find"]


async def test_one_failure_leaves_the_others_and_the_exit_status_says_so() -> None:
    files = MemoryFiles({"bad.mp4": b"bad", "good.mp4": b"good"})
    target = MemoryHeimdex(fail_upload_of="bad.mp4")
    out = await run(files, target, [media("bad.mp4"), media("good.mp4")], sidecar=False)
    assert out["bad.mp4"].status is FileStatus.FAILED
    assert out["bad.mp4"].error == "checksum_mismatch"
    assert out["good.mp4"].status is FileStatus.INGESTED
    assert "sidecar" not in target.calls
    assert exit_status(list(out.values())) == 1


async def test_non_media_is_skipped_in_a_folder_and_fails_when_named_empty_fails() -> None:
    files = MemoryFiles({})
    target = MemoryHeimdex()
    found = Candidate(path=Path("notes.txt"), size=5, content_type=None, named=False)
    named = Candidate(path=Path("named.txt"), size=5, content_type=None, named=True)
    out = await run(files, target, [found, named, media("empty.mp4", size=0)])
    assert out["notes.txt"].status is FileStatus.SKIPPED
    assert (out["named.txt"].status, out["named.txt"].error) == (FileStatus.FAILED, "not_media")
    assert (out["empty.mp4"].status, out["empty.mp4"].error) == (FileStatus.FAILED, "empty_file")
    assert target.calls == []
    assert exit_status([out["notes.txt"]]) == 0


async def test_wait_waits_for_each_sidecar() -> None:
    files = MemoryFiles({"a.mp4": b"abc"})
    target = MemoryHeimdex()
    out = await run(files, target, [media("a.mp4")], wait=True)
    assert out["a.mp4"].status is FileStatus.INGESTED
    assert target.calls[-2:] == ["sidecar", "wait"]


async def test_a_file_over_the_one_put_limit_goes_as_a_resumable_upload() -> None:
    files = MemoryFiles({"small.mp4": b"abc", "large.mp4": b"abcdefgh", "huge.mp4": b"x" * 20})
    target = MemoryHeimdex(max_put=5, max_tus=10)
    out = await run(
        files,
        target,
        [media("small.mp4", 3), media("large.mp4", 8), media("huge.mp4", 20)],
        sidecar=False,
    )
    assert out["small.mp4"].status is FileStatus.INGESTED
    assert out["large.mp4"].status is FileStatus.INGESTED
    assert (out["huge.mp4"].status, out["huge.mp4"].error) == (
        FileStatus.FAILED,
        "upload_too_large",
    )  # over both limits
    assert sorted(target.calls).count("init resumable") == 2  # large and huge, not small
    assert sorted(target.received.values()) == [b"abc", b"abcdefgh"]


async def test_a_duplicate_whose_sidecar_was_never_asked_for_gets_it() -> None:
    # A run stopped between commit and sidecar request (or run with --no-sidecar) left the
    # asset without one; the re-run finds it a duplicate and asks for its sidecar.
    files = MemoryFiles({"a.mp4": b"abc", "b.mp4": b"xyz"})
    target = MemoryHeimdex()
    target.assets[hashlib.sha256(b"abc").hexdigest()] = "bare"
    target.assets[hashlib.sha256(b"xyz").hexdigest()] = "done"
    target.sidecars.add("done")
    out = await run(files, target, [media("a.mp4"), media("b.mp4")], wait=True)
    assert (out["a.mp4"].status, out["a.mp4"].asset_id) == (FileStatus.DUPLICATE, "bare")
    assert out["b.mp4"].status is FileStatus.DUPLICATE
    assert sorted(target.calls) == ["find", "find", "sidecar", "wait"]  # for "bare" only

    untouched = MemoryHeimdex()
    untouched.assets[hashlib.sha256(b"abc").hexdigest()] = "bare"
    await run(files, untouched, [media("a.mp4")], sidecar=False)
    assert untouched.calls == ["find"]  # --no-sidecar: none asked for


@pytest.mark.parametrize("fails", ["request", "job"])
async def test_a_file_whose_sidecar_fails_names_the_asset_it_made(fails: str) -> None:
    files = MemoryFiles({"a.mp4": b"abc"})
    target = MemoryHeimdex()
    if fails == "request":
        target.sidecar_refusal = IngestFailure("job_quota_exceeded", "too many active jobs")
    else:
        target.job_error = "invalid_media"
    out = await run(files, target, [media("a.mp4")], wait=True)
    assert out["a.mp4"].status is FileStatus.FAILED
    assert out["a.mp4"].error == ("job_quota_exceeded" if fails == "request" else "invalid_media")
    assert out["a.mp4"].asset_id == target.assets[hashlib.sha256(b"abc").hexdigest()]
