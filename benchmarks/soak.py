"""Soak: concurrent clients walk the whole API for a few minutes while the deployment is hurt.

    uv run python benchmarks/soak.py [--clients 4] [--seconds 180]

`heimdex serve` and two `heimdex worker` processes run on a PostgreSQL cluster of the soak's own
(initdb on a free port, so it can be stopped the hard way) and a private redis-server. Each
client loops over the README walkthrough: init → PUT → commit → request a sidecar → poll the
job → read the sidecar → list the thumbnails (clients of two organisations, so jobs take turns),
retrying a step the way a client should (on 503 after its Retry-After, on a refused
connection). Three faults are injected, one after another:

1. a worker is SIGKILLed (with its decode processes) and a fresh one started;
2. Redis is restarted *empty* (no persistence): every queued message is lost;
3. PostgreSQL is stopped immediately, kept down a few seconds, and started again.

Afterwards the soak waits for every job to settle and checks the database and the files: every
committed asset whose sidecar was asked for has a succeeded job with its sidecar and thumbnails
on disk, or a failed job with a code; no job is lost (still active, or a 202 answered for a job
that does not exist) and none is duplicated (two jobs for one request, or outputs that are not
exactly one sidecar and the thumbnails asked for). A write the SIGKILLed worker never finished
stays in its storage's ``.scratch`` directory, as designed; once every process has stopped the
soak runs the product's scratch sweep on it, and any ``.part`` file left after that is a problem.
5xx answers are counted inside and outside the outage windows. The figures to watch: lost = 0,
duplicated = 0, 5xx outside outages = 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the test suite's process fixtures, reused as they are

from tests.fixtures.postgres_cluster import ThrowawayPostgres  # noqa: E402
from tests.fixtures.processes import Heimdex, PrivateRedis  # noqa: E402

THUMBNAILS = 10
RETRYABLE = {502, 503, 504}
OUTAGE_GRACE = 5.0  # seconds after a fault during which errors are put down to it


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: list[tuple[float, int]] = field(default_factory=list)
    flows: collections.Counter[str] = field(default_factory=collections.Counter)
    failed_codes: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted_jobs: dict[str, str] = field(default_factory=dict)  # job id → asset id
    requests_per_asset: collections.Counter[str] = field(default_factory=collections.Counter)

    def status(self, code: int) -> None:
        with self.lock:
            self.statuses.append((time.monotonic(), code))


class Client:
    """One simulated client: the walkthrough, with retries a well-behaved client makes."""

    def __init__(self, base_url: str, token: str, data: bytes, tally: Tally) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.tally = tally

    def call(self, method: str, url: str, *, ok: set[int], **kwargs: Any) -> httpx.Response:
        """The request, retried on 5xx and connection errors for up to a minute."""
        deadline = time.monotonic() + 60
        while True:
            try:
                response = self.http.request(method, url, **kwargs)
                self.tally.status(response.status_code)
                if response.status_code in ok:
                    return response
                if response.status_code not in RETRYABLE and response.status_code < 500:
                    raise FlowAborted(f"{method} {url}: {response.status_code} {response.text}")
                wait = float(response.headers.get("retry-after", "1"))
            except httpx.TransportError:
                self.tally.status(0)
                wait = 0.5
            if time.monotonic() > deadline:
                raise FlowAborted(f"{method} {url}: still failing after a minute")
            time.sleep(min(wait, 5.0))

    def flow(self) -> None:
        slot = self.call(
            "POST",
            "/v1/ingest/init",
            ok={201},
            json={
                "source_name": "soak.mp4",
                "content_type": "video/mp4",
                "content_length": len(self.data),
                "sha256": self.sha256,
            },
        ).json()
        # 409 upload_already_received: an earlier try stored it and its answer was lost.
        self.call(
            "PUT", slot["upload_url"], ok={200, 409}, content=self.data, headers=slot["headers"]
        )
        asset_id = self.call(
            "POST", "/v1/ingest/commit", ok={200, 201}, json={"upload_id": slot["upload_id"]}
        ).json()["asset_id"]
        accepted = self.call("POST", f"/v1/assets/{asset_id}/sidecar", ok={200, 202}, json={})
        job_id = accepted.headers["location"].rsplit("/", 1)[1]
        with self.tally.lock:
            self.tally.accepted_jobs[job_id] = asset_id
            self.tally.requests_per_asset[asset_id] += 1
        deadline = time.monotonic() + 240
        while True:
            job = self.call("GET", f"/v1/jobs/{job_id}", ok={200}).json()
            if job["status"] in ("succeeded", "failed"):
                break
            if time.monotonic() > deadline:
                raise FlowAborted(f"job {job_id} not finished after 4 minutes")
            time.sleep(0.3)
        if job["status"] == "failed":
            with self.tally.lock:
                self.tally.flows["job failed"] += 1
                self.tally.failed_codes[job["error"]["code"]] += 1
            return
        self.call("GET", f"/v1/assets/{asset_id}/sidecar", ok={200})
        items = self.call("GET", f"/v1/assets/{asset_id}/thumbnails", ok={200}).json()["items"]
        with self.tally.lock:
            self.tally.flows["completed" if len(items) == THUMBNAILS else "short"] += 1

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.flow()
            except FlowAborted as exc:
                with self.tally.lock:
                    self.tally.flows["aborted"] += 1
                print(f"  flow aborted: {exc}", file=sys.stderr)


class FlowAborted(Exception):
    pass


def make_clip(directory: Path) -> bytes:
    clip = directory / "soak.mp4"
    source = "testsrc2=size=640x360:rate=25"
    encode = ["-c:v", "libx264", "-preset", "veryfast", "-g", "25", str(clip)]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", "4", *encode],
        check=True,
    )
    return clip.read_bytes()


async def settle(admin_url: str, seconds: float) -> dict[str, Any]:
    """Wait for no active job, then read what the database holds."""
    connection = await asyncpg.connect(admin_url)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            active = await connection.fetchval(
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
            )
            if active == 0:
                break
            await asyncio.sleep(1)
        jobs = await connection.fetch(
            "SELECT id, asset_id, org_id, status, error_code, attempts, enqueued_at, "
            "next_attempt_at, lease_expires_at, created_at, updated_at FROM jobs"
        )
        assets = await connection.fetch("SELECT id, org_id FROM assets")
        return {"jobs": [dict(j) for j in jobs], "assets": [dict(a) for a in assets]}
    finally:
        await connection.close()


def stream_state(redis: PrivateRedis, stream: str) -> dict[str, Any]:
    """What the job stream holds at the end: its first entry and its groups' pending counts
    (an entry nobody reads keeps the sweep from handing newer lost jobs over again)."""
    import redis as redis_client

    client = redis_client.Redis(host="127.0.0.1", port=redis.port)
    try:
        return {
            "first": client.xrange(stream, count=1),
            "length": client.xlen(stream),
            "groups": client.xinfo_groups(stream) if client.exists(stream) else [],
        }
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=180, help="how long clients run")
    args = parser.parse_args()
    for binary in ("ffmpeg", "redis-server"):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} is needed")

    workdir = Path(tempfile.mkdtemp(prefix="heimdex-soak-"))
    postgres = ThrowawayPostgres()
    redis = PrivateRedis(workdir)
    deployment: Heimdex | None = None
    tally = Tally()
    outages: list[tuple[str, float, float]] = []
    try:
        postgres.create()
        redis.start()
        deployment = Heimdex(workdir, postgres.runtime_url, redis)
        deployment.env.update(
            HEIMDEX_UPLOAD_STALL_SECONDS="5",  # a PUT cut off by an outage may be retried soon
            HEIMDEX_JOB_REDELIVER_SECONDS="5",  # ids Redis lost come back quickly
            # info: a problem found is then explained by the kept logs (job_started, …)
            HEIMDEX_LOG_LEVEL="info",
        )
        deployment.serve()
        workers = [deployment.worker("worker-1"), deployment.worker("worker-2")]
        # Two organisations, so workers take turns between them (and spend messages on each
        # other's jobs) throughout the faults.
        tokens = [deployment.token("soak-a"), deployment.token("soak-b")]
        data = make_clip(workdir)

        stop = threading.Event()
        clients = [
            Client(deployment.base_url, tokens[i % len(tokens)], data, tally)
            for i in range(args.clients)
        ]
        threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
        started = time.monotonic()
        for thread in threads:
            thread.start()

        def at(share: float) -> None:
            time.sleep(max(0.0, started + args.seconds * share - time.monotonic()))

        at(0.25)
        begin = time.monotonic()
        deployment.kill(workers[0])  # SIGKILL, with its decode processes
        workers.append(deployment.worker("worker-3"))
        outages.append(("worker SIGKILLed", begin, time.monotonic()))
        print(f"[{begin - started:6.1f} s] worker-1 SIGKILLed, worker-3 started")

        at(0.5)
        begin = time.monotonic()
        redis.stop()
        time.sleep(3)
        redis.restart(keep_data=False)
        outages.append(("Redis restarted empty", begin, time.monotonic()))
        print(f"[{begin - started:6.1f} s] Redis down 3 s, back empty")

        at(0.75)
        begin = time.monotonic()
        postgres.stop()
        time.sleep(5)
        postgres.start()
        outages.append(("PostgreSQL restarted", begin, time.monotonic()))
        print(f"[{begin - started:6.1f} s] PostgreSQL down 5 s (immediate stop), back")

        at(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
        state = asyncio.run(
            settle(postgres.url("postgres").replace("postgresql+asyncpg", "postgresql"), 180)
        )
        state["stream"] = stream_state(redis, deployment.env["HEIMDEX_REDIS_QUEUE_NAME"])
    finally:
        if deployment is not None:
            deployment.stop_all()
        redis.stop()
        postgres.destroy()

    scratch = sweep_dead_scratch(workdir / "data/storage")
    if report(tally, outages, state, workdir / "data/storage/derived", scratch):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept for a look: {workdir} (the processes' logs are its *.log files)")


def sweep_dead_scratch(storage_root: Path) -> int:
    """Every process has stopped, so whatever is left in a ``.scratch`` directory is a write a
    killed process never finished: run the product's own scratch sweep on it (as every process
    does after ``HEIMDEX_SCRATCH_MAX_AGE_SECONDS``) and answer how many files it removed."""
    from datetime import UTC, datetime

    from heimdex.adapters.auth.url_signing import HmacUrlSigner
    from heimdex.adapters.storage.local import LocalStorage

    storage = LocalStorage(storage_root, HmacUrlSigner("soak"))
    return len(asyncio.run(storage.sweep_scratch(datetime.now(UTC))))


def report(
    tally: Tally,
    outages: list[tuple[str, float, float]],
    state: dict[str, Any],
    derived: Path,
    scratch_swept: int,
) -> bool:
    jobs_by_id = {str(j["id"]): j for j in state["jobs"]}
    jobs_per_asset = collections.Counter(str(j["asset_id"]) for j in state["jobs"])
    asked = set(tally.accepted_jobs.values())
    lost = [
        job_id
        for job_id in tally.accepted_jobs
        if job_id not in jobs_by_id or jobs_by_id[job_id]["status"] in ("queued", "running")
    ]
    duplicated = [a for a in asked if jobs_per_asset[a] > tally.requests_per_asset[a]]
    missing_outputs, extra_outputs = 0, 0
    for job in state["jobs"]:
        if job["status"] != "succeeded":
            continue
        org, asset = job["org_id"], str(job["asset_id"])
        sidecars = list((derived / org / "sidecars").glob(f"{asset}.json*"))
        thumbs = list((derived / org / asset / "thumbs").glob("*"))
        if len(sidecars) < 1 or len(thumbs) < THUMBNAILS:
            missing_outputs += 1
        if len(sidecars) > 1 or len(thumbs) > THUMBNAILS:
            extra_outputs += 1
    leftovers = list(derived.parent.rglob("*.part")) if derived.parent.exists() else []

    def in_outage(moment: float) -> bool:
        return any(begin <= moment <= end + OUTAGE_GRACE for _, begin, end in outages)

    server_errors = [(t, s) for t, s in tally.statuses if s >= 500]
    refused = [t for t, s in tally.statuses if s == 0]
    outside = [s for t, s in server_errors if not in_outage(t)]
    print()
    print(f"requests: {len(tally.statuses)}, flows: {dict(tally.flows)}")
    print(f"failed jobs by code: {dict(tally.failed_codes) or 'none'}")
    print(f"faults injected: {len(outages)} ({', '.join(name for name, _, _ in outages)})")
    print(
        f"5xx: {len(server_errors)} ({dict(collections.Counter(s for _, s in server_errors))}), "
        f"outside the outage windows: {len(outside)}; refused connections: {len(refused)}"
    )
    print(f"assets committed: {len(state['assets'])}, sidecars asked for: {len(asked)}")
    print(f"jobs lost: {len(lost)}")
    print(f"jobs duplicated: {len(duplicated)}")
    print(f"succeeded jobs missing outputs: {missing_outputs}, with extra outputs: {extra_outputs}")
    named = [str(path.relative_to(derived.parents[1])) for path in leftovers[:5]]
    print(f"leftover partial files: {len(leftovers)}{' ' + str(named) if named else ''}")
    print(f"scratch files a killed process left, removed by the scratch sweep: {scratch_swept}")
    ok = not (lost or duplicated or missing_outputs or extra_outputs or leftovers or outside)
    print("verdict:", "OK" if ok else "PROBLEMS FOUND")
    for job_id in lost:
        job = jobs_by_id.get(job_id)
        print(f"  lost job {job_id}: {job or 'no row'}")
    if lost:
        print(f"  the job stream at the end: {state.get('stream')}")
    return ok


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
