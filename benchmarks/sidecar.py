"""Sidecar jobs end to end: one whole job on the embedded default, and jobs per minute with one
and two `heimdex worker` processes (Redis + PostgreSQL), on a generated 1080p30 10 s clip.

    uv run python benchmarks/sidecar.py [--jobs 120] [--skip-workers]

Targets (issue 4, issue 11): a whole sidecar job on the embedded default — 10 thumbnails, the
storyboard and the poster — under 0.3 s for a 60 s 1080p30 2 s-GOP clip (the 10 s clip beside
it), with the distinct pictures counted; two workers at least
1.8x the jobs per minute of one. The jobs are requested before the workers start and timed from
the first job's start to the last one's end, as the job rows record them, so neither worker
start-up nor the rate one client posts requests at is in the figure. Beside each figure: how
many of the machine's CPUs were busy meanwhile. A second worker can add at most what the first
left idle: on a 2-CPU machine that also runs PostgreSQL and Redis, a worker with its decode
process already keeps about 1.6 CPUs busy, so two can reach about 1.25x at best.

The thumbnailers' own figures against the bare PyAV loop and a single-pass ffmpeg are in
benchmarks/thumbnails.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import msgspec

from _local_services import free_port, wait_http
from _machine_cpu import busy_cpus, cpu_times
from heimdex.application.ingest import UploadRequest
from heimdex.bootstrap import build
from heimdex.domain.model import Principal, ThumbnailSpec
from heimdex.domain.sidecar import SidecarDocument
from heimdex.settings import Settings

SECRET = "benchmark-secret-that-is-at-least-32-bytes"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def make_clip(directory: Path, seconds: int = 10) -> Path:
    clip = directory / f"clip_1080p_{seconds}s.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=30",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
    )
    return clip


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


@dataclass
class Made:
    """What the last job made: distinct thumbnails (by their bytes), distinct storyboard
    pictures (tiles by the frame they show) of all tiles, and the poster's time."""

    thumbnails: int
    distinct_thumbnails: int
    tiles: int
    distinct_tiles: int
    poster: float | None


async def embedded_job_seconds(workdir: Path, data: bytes, runs: int) -> tuple[list[float], Made]:
    """Whole jobs (enqueue, claim, thumbnails, storyboard, poster, writes, sidecar, finish) on
    the embedded default."""
    services = build(Settings.from_flat(data_dir=workdir / "embedded", jwt_secret=SECRET))
    await services.startup()
    principal = Principal(org_id="bench")
    try:
        issued = await services.ingest.init_upload(
            principal,
            UploadRequest(
                source_name="clip.mp4", content_length=len(data), content_type="video/mp4"
            ),
            "http://bench",
        )
        await services.ingest.receive_upload("bench", issued.upload.id, one_chunk(data))
        asset, _ = await services.ingest.commit_upload(principal, issued.upload.id)
        timings = []
        for _ in range(runs):
            # Request to finished job, through the in-process queue as the API runs it.
            started = time.perf_counter()
            job, _ = await services.jobs.request_sidecar(
                principal, asset.id, ThumbnailSpec(), force=True
            )
            while (done := await services.jobs.get(principal, job.id)).is_active:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            timings.append(time.perf_counter() - started)
            assert done.status.value == "succeeded", done
        raw = await services.sidecars.document(principal, asset.id)
        document = msgspec.json.decode(raw, type=SidecarDocument)
        images = set()
        storage = services.adapters.storage
        for thumbnail in document.thumbnails:
            images.add(b"".join([c async for c in storage.read_chunks(thumbnail.key)]))
        tiles = document.storyboard.tiles if document.storyboard else []
        made = Made(
            thumbnails=len(document.thumbnails),
            distinct_thumbnails=len(images),
            tiles=len(tiles),
            distinct_tiles=len({t.time for t in tiles}),
            poster=document.poster.time if document.poster else None,
        )
        return timings, made
    finally:
        await services.aclose()


def jobs_per_minute(workdir: Path, clip: Path, workers: int, jobs: int) -> tuple[float, float]:
    """Jobs per minute with ``workers`` worker processes, and how many of the machine's CPUs
    were busy meanwhile."""
    database = f"heimdex_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    redis_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    env.update(
        HEIMDEX_DATA_DIR=str(workdir / f"workers-{workers}"),
        HEIMDEX_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
        HEIMDEX_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        HEIMDEX_JOB_QUEUE_BACKEND="redis",
        HEIMDEX_JWT_SECRET=SECRET,
        HEIMDEX_LOG_LEVEL="warning",
        HEIMDEX_DECODE_WORKERS="1",
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
        )
        heimdex = [sys.executable, "-m", "heimdex"]
        subprocess.run([*heimdex, "db", "upgrade"], env=env, check=True, capture_output=True)
        processes.append(
            subprocess.Popen(
                [*heimdex, "serve", "--port", str(api_port)],
                env=env,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        base = f"http://127.0.0.1:{api_port}"
        wait_http(base + "/health")
        token = subprocess.run(
            [*heimdex, "token", "--org", "bench"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        data = clip.read_bytes()
        asset_ids = []
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
            for _ in range(jobs):
                slot = client.post(
                    "/v1/ingest/init",
                    json={
                        "source_name": "c.mp4",
                        "content_type": "video/mp4",
                        "content_length": len(data),
                    },
                ).json()
                httpx.put(slot["upload_url"], content=data, headers=slot["headers"])
                asset = client.post("/v1/ingest/commit", json={"upload_id": slot["upload_id"]})
                asset_ids.append(asset.json()["asset_id"])
            # A backlog, requested before any worker runs: the figure is the workers' own, not
            # the rate one client can post requests at while they compete for the same CPUs.
            for asset_id in asset_ids:
                client.post(f"/v1/assets/{asset_id}/sidecar", json={}).raise_for_status()
        for _ in range(workers):
            processes.append(
                subprocess.Popen(
                    [*heimdex, "worker"],
                    env=env,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        elapsed, busy, failed = asyncio.run(_drain(database, jobs))
        if failed:  # a failed job is quick: counting it would flatter the figure
            raise SystemExit(f"{failed} of {jobs} jobs failed")
        return jobs / elapsed * 60, busy
    finally:
        for process in reversed(processes):
            try:
                os.killpg(process.pid, 15)
            except (ProcessLookupError, PermissionError):
                process.terminate()
            process.wait(timeout=15)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


async def _drain(database: str, jobs: int) -> tuple[float, float, int]:
    """Wait until ``jobs`` jobs are finished. Answers the seconds from the first job's start to
    the last one's end (worker start-up left out), the CPUs busy meanwhile, and how many
    failed. Progress is read from the database, not by polling every job over HTTP: on a small
    machine that polling would compete with the workers for the same CPUs."""
    connection = await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + database)
    try:
        while not await connection.fetchval("SELECT count(started_at) FROM jobs"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        cpu_before = cpu_times()
        while True:
            finished = await connection.fetchval(
                "SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')"
            )
            if finished >= jobs:
                break
            await asyncio.sleep(0.05)
        busy = busy_cpus(cpu_before, cpu_times())
        row = await connection.fetchrow(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at)),"
            " count(*) FILTER (WHERE status = 'failed') FROM jobs"
        )
        assert row is not None  # an aggregate without GROUP BY always answers one row
        elapsed, failed = row
        return float(elapsed), busy, int(failed)
    finally:
        await connection.close()


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=120, help="jobs per worker-count run")
    parser.add_argument("--runs", type=int, default=15, help="embedded whole-job runs")
    parser.add_argument("--skip-workers", action="store_true", help="only the embedded figure")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="heimdex-bench-sidecar-"))
    try:
        clip = make_clip(workdir)
        long_clip = make_clip(workdir, 60)
        for name, path in (("10 s", clip), ("60 s", long_clip)):
            timings, made = asyncio.run(
                embedded_job_seconds(workdir / name.replace(" ", ""), path.read_bytes(), args.runs)
            )
            print(
                f"whole sidecar job, embedded default (1080p30 {name}, 2 s GOP: "
                f"{made.thumbnails} thumbnails, {made.distinct_thumbnails} distinct; storyboard "
                f"{made.tiles} tiles, {made.distinct_tiles} distinct pictures; poster at "
                f"{made.poster} s): median {statistics.median(timings):.3f} s, min "
                f"{min(timings):.3f} s (target < 0.3 s) over {len(timings)} runs"
            )
        if not args.skip_workers:
            one, one_busy = jobs_per_minute(workdir, clip, 1, args.jobs)
            two, two_busy = jobs_per_minute(workdir, clip, 2, args.jobs)
            print(
                f"jobs per minute: 1 worker {one:.0f} ({one_busy:.2f} CPUs busy), "
                f"2 workers {two:.0f} ({two_busy:.2f} CPUs busy), ratio {two / one:.2f} "
                f"(target >= 1.8) on {os.cpu_count()} CPUs shared with the API, PostgreSQL "
                "and Redis"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
