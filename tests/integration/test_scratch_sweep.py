"""The API process sweeps its own scratch files, whichever process sweeps the database: each
container of a deployment has its own disk, and the API's PUTs and commits leave scratch there.
(What counts as scratch, and what never does, is the storage contract's: test_storage.py.)"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from litestar.testing import AsyncTestClient

from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.app import TEST_SECRET
from tests.fixtures.processes import PrivateRedis


def scratch_files(data_dir: Path) -> tuple[Path, Path]:
    """A part file a killed PUT left two days ago, and one a PUT is writing now."""
    scratch = data_dir / "storage" / ".scratch"
    scratch.mkdir(parents=True)
    old, fresh = scratch / "clip.mp4.0.part", scratch / "clip.mp4.1.part"
    old.write_bytes(b"left by a crash")
    fresh.write_bytes(b"still arriving")
    then = time.time() - 2 * 86400
    os.utime(old, (then, then))
    return old, fresh


async def serve_until_swept(settings: Settings, old: Path) -> None:
    async with AsyncTestClient(app=create_app(settings=settings)) as client:
        assert (await client.get("/health")).status_code == 200
        for _ in range(200):  # ten seconds at most
            if not old.exists():
                return
            await anyio.sleep(0.05)
    raise AssertionError(f"{old} was not swept")


@pytest.mark.parametrize("backend", ["immediate", pytest.param("redis", marks=pytest.mark.redis)])
async def test_the_api_sweeps_its_own_scratch(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "data"
    old, fresh = scratch_files(data_dir)
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "jwt_secret": TEST_SECRET,
        "sweep_interval_seconds": 0.05,
        "job_queue_backend": backend,
    }
    if backend == "redis":  # the workers sweep the database; nothing here runs a worker
        redis: PrivateRedis = request.getfixturevalue("private_redis")
        values["redis_url"] = redis.url
    await serve_until_swept(Settings.from_flat(**values), old)
    assert fresh.read_bytes() == b"still arriving"


async def test_the_api_sweeps_request_bodies_a_killed_process_spooled(tmp_path: Path) -> None:
    """The legacy endpoint spools each upload to <data>/tmp; a process killed mid-request
    leaves it there. Only those old spool files go: a fresh one, and anything else in tmp
    (an S3 copy's directory, an operator's file), stay."""
    data_dir = tmp_path / "data"
    spool = data_dir / "tmp"
    spool.mkdir(parents=True)
    old, fresh = spool / "body-abc123.upload", spool / "body-def456.upload"
    unrelated, copy_dir = spool / "notes.txt", spool / "s3-xyz"
    for path in (old, fresh, unrelated):
        path.write_bytes(b"spooled")
    copy_dir.mkdir()
    then = time.time() - 2 * 86400
    for path in (old, unrelated, copy_dir):
        os.utime(path, (then, then))
    settings = Settings.from_flat(
        data_dir=data_dir, jwt_secret=TEST_SECRET, sweep_interval_seconds=0.05
    )
    await serve_until_swept(settings, old)
    assert fresh.exists()
    assert unrelated.exists()
    assert copy_dir.is_dir()
