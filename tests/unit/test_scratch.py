"""The scratch sweep's own decisions, with a fake store: which cutoff it asks for, what it logs.
The adapters' removal of real files is in tests/contract/test_storage.py."""

from __future__ import annotations

from datetime import timedelta

from structlog.testing import capture_logs

from heimdex.application.scratch import ScratchSweeper
from heimdex.domain.ports import ScratchFile
from tests.unit.fakes import FakeClock, FakeStorage


def scratch(path: str, size_bytes: int, age: timedelta, clock: FakeClock) -> ScratchFile:
    return ScratchFile(path=path, size_bytes=size_bytes, modified_at=clock.now() - age)


async def test_only_scratch_older_than_the_max_age_is_removed_and_logged() -> None:
    clock, storage = FakeClock(), FakeStorage()
    old = scratch("/s/.scratch/a.part", 1000, timedelta(hours=25), clock)
    older = scratch("/s/.scratch/b.part", 24, timedelta(days=30), clock)
    fresh = scratch("/s/.scratch/c.part", 7, timedelta(hours=23), clock)
    storage.scratch = [old, older, fresh]
    sweeper = ScratchSweeper(storage, clock, max_age=timedelta(hours=24))

    with capture_logs() as logs:
        assert await sweeper.sweep() == 2
    assert storage.scratch == [fresh]
    removed = [e for e in logs if e["event"] == "scratch_removed"]
    assert sorted(e["path"] for e in removed) == [old.path, older.path]
    (summary,) = [e for e in logs if e["event"] == "scratch_swept"]
    assert (summary["count"], summary["size_bytes"]) == (2, 1024)


async def test_a_sweep_with_nothing_to_remove_says_nothing() -> None:
    clock, storage = FakeClock(), FakeStorage()
    storage.scratch = [scratch("/s/.scratch/c.part", 7, timedelta(minutes=1), clock)]
    with capture_logs() as logs:
        assert await ScratchSweeper(storage, clock, timedelta(hours=1)).sweep() == 0
    assert logs == []
    assert len(storage.scratch) == 1
    clock.advance(hours=1)  # the same file, now old enough
    assert await ScratchSweeper(storage, clock, timedelta(hours=1)).sweep() == 1
