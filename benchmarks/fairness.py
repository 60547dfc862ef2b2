"""Fairness between organisations at the job queue: org B's light sidecar job alone, then asked
for right after org A asked for a backlog of heavy ones, in one run, on real processes.

    uv run python benchmarks/fairness.py [--backlog 16] [--heavy-count 24] [--skip-workers]

Two deployments: the embedded default (`heimdex serve`, in-process queue, SQLite) and
PostgreSQL + a private Redis + `heimdex serve` + one `heimdex worker` (default concurrency).
Reported: B's latency alone (request → succeeded, as a client polling every 20 ms sees it), B's
latency behind A's backlog, their ratio, where B's job came in the order jobs started, and what
A's heavy jobs cost. First in, first out, B would wait for the whole backlog (about its summed
cost divided by the jobs run at once); taking turns, B waits for the jobs already running when
it came at most (issue 10).

Measured on a shared 2-CPU machine (16 heavy jobs of 24 thumbnails): first in, first out (before
issue 10), B took 0.24 s alone and 10.6 s behind the backlog embedded (x44, started 17th of 17),
0.39 s and 10.1 s with Redis and a worker (x26, 17th); taking turns, 0.29 s and 0.83 s embedded
(x2.8, 3rd), 0.28 s and 1.86 s with Redis and a worker (x6.7, 5th: the worker runs four jobs at
once on two decode processes).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the test suite's process fixtures, reused as they are

from tests.e2e.test_walkthrough import commit_upload  # noqa: E402
from tests.fixtures.postgres_cluster import ThrowawayPostgres  # noqa: E402
from tests.fixtures.processes import Heimdex, PrivateRedis  # noqa: E402


def make_clip(path: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(path)], check=True)
    return path


def clips(directory: Path) -> tuple[bytes, bytes]:
    light = make_clip(
        directory / "light.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "4"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
    )
    # One keyframe in 10 s: each thumbnail decodes the frames before it.
    heavy = make_clip(
        directory / "heavy.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "10"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p"),
    )
    return light.read_bytes(), heavy.read_bytes()


def finished(client: httpx.Client, location: str, seconds: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(location).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.02)
    raise RuntimeError(f"job {location} not finished within {seconds} s")


def measure(deployment: Heimdex, light: bytes, heavy: bytes, args: argparse.Namespace) -> str:
    def client(org: str) -> httpx.Client:
        token = deployment.token(org)
        return httpx.Client(
            base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    with client("org-a") as org_a, client("org-b") as org_b:
        light_assets = [commit_upload(org_b, light, "light.mp4") for _ in range(3)]
        heavy_assets = [commit_upload(org_a, heavy, "heavy.mp4") for _ in range(args.backlog)]

        def ask(http: httpx.Client, asset: str, body: dict[str, Any]) -> str:
            answer = http.post(f"/v1/assets/{asset}/sidecar", json=body)
            answer.raise_for_status()
            return answer.headers["location"]

        alone = []
        for asset in light_assets[:2]:  # the first starts the decode processes
            started = time.perf_counter()
            finished(org_b, ask(org_b, asset, {}))
            alone.append(time.perf_counter() - started)
        body = {"thumbnails": {"count": args.heavy_count, "width": 960}}
        backlog = [ask(org_a, asset, body) for asset in heavy_assets]
        started = time.perf_counter()
        late = finished(org_b, ask(org_b, light_assets[2], {}))
        loaded = time.perf_counter() - started
        heavy_jobs = [finished(org_a, location) for location in backlog]

    def at(job: dict[str, Any], field: str) -> datetime:
        return datetime.fromisoformat(job[field])

    starts = sorted(at(job, "started_at") for job in [*heavy_jobs, late])
    place = starts.index(at(late, "started_at")) + 1
    costs = [(at(j, "finished_at") - at(j, "started_at")).total_seconds() for j in heavy_jobs]
    span = (max(at(j, "finished_at") for j in heavy_jobs) - starts[0]).total_seconds()
    failed = sum(job["status"] != "succeeded" for job in [*heavy_jobs, late])
    return (
        f"org B alone {alone[-1]:.2f} s; behind org A's {args.backlog} heavy jobs "
        f"{loaded:.2f} s (x{loaded / alone[-1]:.1f}); B started {place} of {len(starts)}; "
        f"a heavy job {statistics.median(costs):.2f} s (median, as it ran), the backlog "
        f"{span:.1f} s in all; jobs failed: {failed}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=16, help="org A's heavy jobs")
    parser.add_argument("--heavy-count", type=int, default=24, help="thumbnails per heavy job")
    parser.add_argument("--skip-workers", action="store_true", help="only the embedded default")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="heimdex-fairness-"))
    light, heavy = clips(workdir)
    redis = PrivateRedis(workdir / "redis")
    (workdir / "redis").mkdir()
    postgres: ThrowawayPostgres | None = None
    deployment: Heimdex | None = None
    try:
        embedded_dir = workdir / "embedded"
        embedded_dir.mkdir()
        deployment = Heimdex(embedded_dir, "", redis)
        deployment.env.pop("HEIMDEX_DATABASE_URL")  # the embedded SQLite file
        deployment.env.update(HEIMDEX_JOB_QUEUE_BACKEND="immediate", HEIMDEX_LOG_LEVEL="warning")
        deployment.serve()
        print("embedded default:", measure(deployment, light, heavy, args), flush=True)
        deployment.stop_all()
        deployment = None
        if args.skip_workers:
            return
        postgres = ThrowawayPostgres()
        postgres.create()
        redis.start()
        workers_dir = workdir / "workers"
        workers_dir.mkdir()
        deployment = Heimdex(workers_dir, postgres.runtime_url, redis)
        deployment.env.update(HEIMDEX_LOG_LEVEL="warning")
        deployment.serve()
        deployment.worker("worker-1")
        print("Redis + one worker:", measure(deployment, light, heavy, args), flush=True)
    finally:
        if deployment is not None:
            deployment.stop_all()
        redis.stop()
        if postgres is not None:
            postgres.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
