"""Read load on the API beside its floor, in one run: `GET /v1/assets/{id}`, `GET /v1/jobs/{id}`
and both listings from concurrent keep-alive clients against `heimdex serve` on PostgreSQL, and
the same reads from a raw-asyncpg reference app.

    uv run python benchmarks/api_load.py [--clients 4,32] [--seconds 5] [--rounds 3]
        [--workers 1,2]

The database is set up as in production (docs/deployment.md, "PostgreSQL"): migrated by an owner
role, served by a runtime role under row-level security, so every request pays for its
transaction and its `heimdex.org_id`. The reference, `benchmarks/_asyncpg_reference.py`, is an
independent minimal Litestar app on the same uvicorn set-up that verifies the same HS256 token,
runs `set_config` and the SELECT in one transaction on an asyncpg pool of 15 as the same runtime
role, and answers the same JSON with msgspec: before timing, each route's answer from the API
and from the reference must be the same bytes. `--workers 1,2` also serves the API with
`heimdex serve --workers 2` and times it too. The timed servers run on the Redis queue, as
deployed beside `heimdex worker` (and as N > 1 needs), so the API does not also run the database
sweeps; `--in-process-queue` times the one-process embedded set-up instead.

The targets are timed in turn, round after round, so machine noise falls on all of them; the
figures are requests/s, p99 and the server's CPU time per request (summed over its processes),
and the API's requests/s and p99 as a share of the reference's.

The client is a small keep-alive HTTP/1.1 loop on raw asyncio streams (one connection per
client), light enough that the server, not the client, is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import uvloop

from _local_services import free_port, wait_http

SECRET = "benchmark-secret-that-is-at-least-32-bytes"
PG = "127.0.0.1:5432"
PG_ADMIN = f"postgresql://postgres@{PG}/postgres"
HERE = Path(__file__).resolve().parent


@dataclass
class Figures:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the server's, over the timed run

    @property
    def cpu_per_request_ms(self) -> float:
        return self.cpu_seconds / max(1, len(self.latencies)) * 1000

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(int(len(ordered) * share), len(ordered) - 1)] * 1000


# -- the load --------------------------------------------------------------------------------
async def one_client(port: int, request: bytes, stop_at: float, figures: Figures) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            figures.latencies.append(time.perf_counter() - started)
            if head[9:12] != b"200":
                figures.errors += 1
    finally:
        writer.close()


def session_cpu_seconds(session: int | None) -> float:
    """CPU time of every process in a session: a server and the workers it started."""
    if session is None:
        return 0.0
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == session:  # after the name: state, ppid, pgrp, session, ...
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def load(
    port: int,
    path: str,
    token: str | None,
    clients: int,
    seconds: float,
    session: int | None = None,
) -> Figures:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
    warm = Figures()
    await asyncio.gather(
        *(one_client(port, request, time.perf_counter() + 0.5, warm) for _ in range(clients))
    )
    figures = Figures()
    cpu = session_cpu_seconds(session)
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(one_client(port, request, stop_at, figures) for _ in range(clients)))
    figures.seconds = time.perf_counter() - started
    figures.cpu_seconds = session_cpu_seconds(session) - cpu
    return figures


# -- the deployment --------------------------------------------------------------------------


async def admin(*statements: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@dataclass(frozen=True)
class Catalogue:
    database: str
    owner: str
    runtime: str

    def create(self) -> None:
        asyncio.run(
            admin(
                f'CREATE ROLE "{self.owner}" LOGIN NOSUPERUSER NOBYPASSRLS',
                f'CREATE DATABASE "{self.database}" OWNER "{self.owner}"',
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'heimdex_app')"
                " THEN CREATE ROLE heimdex_app NOLOGIN; END IF; END $$",
                f'CREATE ROLE "{self.runtime}" LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE heimdex_app',
            )
        )

    def drop(self) -> None:
        asyncio.run(
            admin(
                f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)',
                f'DROP ROLE IF EXISTS "{self.runtime}"',
                f'DROP ROLE IF EXISTS "{self.owner}"',
            )
        )


def make_clip(directory: Path) -> bytes:
    clip = directory / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            str(clip),
        ],
        check=True,
    )
    return clip.read_bytes()


def seed(base: str, token: str, data: bytes) -> tuple[str, str]:
    """One committed asset and its finished sidecar job: the rows the load reads."""
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        slot = client.post(
            "/v1/ingest/init",
            json={"source_name": "c.mp4", "content_type": "video/mp4", "content_length": len(data)},
        ).json()
        httpx.put(slot["upload_url"], content=data, headers=slot["headers"]).raise_for_status()
        asset_id: str = client.post(
            "/v1/ingest/commit", json={"upload_id": slot["upload_id"]}
        ).json()["asset_id"]
        location = client.post(f"/v1/assets/{asset_id}/sidecar", json={}).headers["location"]
        deadline = time.monotonic() + 60
        while client.get(location).json()["status"] not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                raise SystemExit("the seed job did not finish")
            time.sleep(0.05)
        job_id: str = location.rsplit("/", 1)[1]
        return asset_id, job_id


def seed_more(base: str, token: str, data: bytes, count: int) -> None:
    """More committed assets (without jobs), so the listings answer a page of several."""
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        for index in range(count):
            slot = client.post(
                "/v1/ingest/init",
                json={
                    "source_name": f"more-{index}.mp4",
                    "content_type": "video/mp4",
                    "content_length": len(data),
                },
            ).json()
            httpx.put(slot["upload_url"], content=data, headers=slot["headers"]).raise_for_status()
            client.post("/v1/ingest/commit", json={"upload_id": slot["upload_id"]})


def same_answers(api: int, reference: int, routes: dict[str, str], token: str) -> None:
    """Each route's body from the API and from the reference: the same bytes, or no run."""
    headers = {"Authorization": f"Bearer {token}"}
    for name, path in routes.items():
        ours = httpx.get(f"http://127.0.0.1:{api}{path}", headers=headers)
        floor = httpx.get(f"http://127.0.0.1:{reference}{path}", headers=headers)
        if ours.status_code != 200 or ours.content != floor.content:
            raise SystemExit(
                f"{name}: the reference's answer is not the API's\n"
                f"API       {ours.status_code} {ours.content!r}\n"
                f"reference {floor.status_code} {floor.content!r}"
            )


def integers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    session: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="4,32", help="concurrent connections, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each timed run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target, interleaved")
    parser.add_argument(
        "--workers", default="1", help="`heimdex serve --workers` to time, comma-separated"
    )
    parser.add_argument("--routes", default="", help="only these routes (comma-separated names)")
    parser.add_argument(
        "--in-process-queue",
        action="store_true",
        help="serve one worker on the in-process queue (the embedded default: the API also runs "
        "the jobs and the database sweeps) instead of the Redis queue",
    )
    args = parser.parse_args()
    client_counts, worker_counts = integers(args.clients), integers(args.workers)
    for binary in ("ffmpeg",):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} is needed")

    suffix = uuid.uuid4().hex[:8]
    catalogue = Catalogue(f"heimdex_load_{suffix}", f"heimdex_lo_{suffix}", f"heimdex_lr_{suffix}")
    catalogue.create()
    processes: list[subprocess.Popen[bytes]] = []
    runs: dict[tuple[int, str, str], list[Figures]] = {}

    def start(command: list[str], env: dict[str, str]) -> int:
        process = subprocess.Popen(
            command, env=env, stderr=subprocess.DEVNULL, start_new_session=True
        )
        processes.append(process)
        return process.pid  # its own session: the id of the session is the process's

    try:
        with tempfile.TemporaryDirectory(prefix="heimdex-load-") as workdir:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
            env.update(
                HEIMDEX_DATA_DIR=workdir,
                HEIMDEX_DATABASE_URL=f"postgresql+asyncpg://{catalogue.runtime}@{PG}/{catalogue.database}",
                HEIMDEX_MIGRATION_DATABASE_URL=f"postgresql+asyncpg://{catalogue.owner}@{PG}/{catalogue.database}",
                HEIMDEX_JWT_SECRET=SECRET,
                HEIMDEX_LOG_LEVEL="warning",
            )
            heimdex = [sys.executable, "-m", "heimdex"]
            subprocess.run([*heimdex, "db", "upgrade"], env=env, check=True, capture_output=True)
            # The seeding server runs the sidecar job in its in-process queue, and stops.
            seeder_port = free_port()
            seeder = start([*heimdex, "serve", "--port", str(seeder_port)], env)
            servers: list[Server] = []
            for workers in worker_counts:
                port = free_port()
                server_env = dict(env)
                if workers > 1 or not args.in_process_queue:
                    # As deployed beside `heimdex worker` (which N > 1 needs): the workers run
                    # the jobs and the database sweeps, not the API.
                    server_env.update(
                        HEIMDEX_JOB_QUEUE_BACKEND="redis",
                        HEIMDEX_REDIS_QUEUE_NAME=f"heimdex:load:{suffix}",
                    )
                many = ["--workers", str(workers)] if workers > 1 else []
                session = start([*heimdex, "serve", "--port", str(port), *many], server_env)
                servers.append(Server(f"API x{workers}" if workers > 1 else "API", port, session))
            reference_port = free_port()
            reference = Server(
                "reference",
                reference_port,
                start(
                    [sys.executable, str(HERE / "_asyncpg_reference.py"), str(reference_port)],
                    {
                        **env,
                        "REFERENCE_DSN": f"postgresql://{catalogue.runtime}@{PG}/{catalogue.database}",
                    },
                ),
            )
            for port in [seeder_port, *(server.port for server in [*servers, reference])]:
                wait_http(f"http://127.0.0.1:{port}/health")
            token = subprocess.run(
                [*heimdex, "token", "--org", "bench"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            base = f"http://127.0.0.1:{seeder_port}"
            clip = make_clip(Path(workdir))
            asset_id, job_id = seed(base, token, clip)
            seed_more(base, token, clip, 3)
            os.killpg(seeder, 15)
            routes = {
                "GET /v1/assets/{id}": f"/v1/assets/{asset_id}",
                "GET /v1/jobs/{id}": f"/v1/jobs/{job_id}",
                "GET /v1/assets": "/v1/assets?limit=10",
                "GET /v1/jobs": "/v1/jobs?limit=10",
            }
            if args.routes:
                chosen = {name.strip() for name in args.routes.split(",")}
                routes = {k: v for k, v in routes.items() if k in chosen}
            for server in servers:
                same_answers(server.port, reference.port, routes, token)

            targets = [reference, *servers]
            for _ in range(args.rounds):
                for clients in client_counts:
                    for route, path in routes.items():
                        for server in targets:
                            figures = uvloop.run(
                                load(
                                    server.port, path, token, clients, args.seconds, server.session
                                )
                            )
                            runs.setdefault((clients, route, server.name), []).append(figures)
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            process.wait(timeout=15)
        catalogue.drop()

    print(
        f"{args.seconds:g} s per run, median of {args.rounds} interleaved runs; PostgreSQL as "
        "the runtime role under RLS; same answer bytes checked before timing"
    )
    print(
        f"{'clients':>7}  {'route':<20}{'server':<11}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'CPU ms/req':>11}{'errors':>7}{'x ref':>7}{'p99 x ref':>10}"
    )
    for (clients, route, name), timed in runs.items():
        rate = statistics.median(f.per_second for f in timed)
        p50 = statistics.median(f.percentile(0.50) for f in timed)
        p99 = statistics.median(f.percentile(0.99) for f in timed)
        cpu = statistics.median(f.cpu_per_request_ms for f in timed)
        errors = sum(f.errors for f in timed)
        floor = runs[(clients, route, "reference")]
        floor_rate = statistics.median(f.per_second for f in floor)
        floor_p99 = statistics.median(f.percentile(0.99) for f in floor)
        print(
            f"{clients:>7}  {route:<20}{name:<11}{rate:>8.0f}{p50:>8.2f}{p99:>8.2f}{cpu:>11.2f}"
            f"{errors:>7}{rate / floor_rate:>7.2f}{p99 / floor_p99:>10.2f}"
        )


if __name__ == "__main__":
    main()
