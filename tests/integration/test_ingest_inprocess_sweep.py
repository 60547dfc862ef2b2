"""``heimdex ingest`` on the embedded default runs the sidecar jobs in its own process, so it
runs their sweep too: a job left queued with no message (a retry after its back-off, a message
lost) is handed over again and ``--wait`` ends, instead of waiting for ever. And it waits out
the organisation's caps (probes, active jobs) as the HTTP client waits out a 429."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from heimdex.bootstrap_ingest import in_process_target


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_job_left_queued_without_a_message_is_run_by_the_ingest_process_s_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, h264_aac_mp4: Path
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("HEIMDEX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HEIMDEX_SWEEP_INTERVAL_SECONDS", "0.2")
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    # The command configures logging for its process; here that process is the test run's, whose
    # later tests capture log lines (structlog caches its loggers on first use).
    monkeypatch.setattr("heimdex.logs.configure_logging", lambda *args, **kwargs: None)
    clip = h264_aac_mp4.read_bytes()
    async with in_process_target("acme", run_jobs=True) as target:
        slot = await target.init_upload(
            "clip.mp4", len(clip), "video/mp4", hashlib.sha256(clip).hexdigest()
        )
        await target.upload(slot, len(clip), chunks_of(clip))
        asset_id = await target.commit(slot.upload_id)
        job_id = await target.request_sidecar(asset_id)
        assert await asyncio.wait_for(target.wait_for_job(job_id), 60) is None
        # As a failed attempt's retry, or a lost message, leaves it: queued, handed to no queue.
        with sqlite3.connect(data_dir / "heimdex.db") as connection:
            changed = connection.execute(
                "UPDATE jobs SET status = 'queued', enqueued_at = NULL, next_attempt_at = NULL, "
                "lease_owner = NULL, lease_expires_at = NULL, finished_at = NULL WHERE id = ?",
                (uuid.UUID(job_id).bytes,),  # stored as 16 bytes
            ).rowcount
        assert changed == 1
        assert await asyncio.wait_for(target.wait_for_job(job_id), 60) is None


async def test_in_process_ingest_waits_out_the_organisation_s_job_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, h264_aac_mp4: Path
) -> None:
    # One active job at a time: the second file's sidecar request meets the cap while the
    # first's job runs, and waits for it (as --api waits out the 429) instead of failing.
    monkeypatch.setenv("HEIMDEX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HEIMDEX_ORG_MAX_ACTIVE_JOBS", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("heimdex.logs.configure_logging", lambda *args, **kwargs: None)
    clips = [h264_aac_mp4.read_bytes() + salt for salt in (b"one", b"two")]
    async with in_process_target("acme", run_jobs=True) as target:
        assets = []
        for clip in clips:
            slot = await target.init_upload(
                "clip.mp4", len(clip), "video/mp4", hashlib.sha256(clip).hexdigest()
            )
            await target.upload(slot, len(clip), chunks_of(clip))
            assets.append(await target.commit(slot.upload_id))
        first = await target.request_sidecar(assets[0])
        second = await asyncio.wait_for(target.request_sidecar(assets[1]), 90)
        assert await asyncio.wait_for(target.wait_for_job(first), 60) is None
        assert await asyncio.wait_for(target.wait_for_job(second), 60) is None
