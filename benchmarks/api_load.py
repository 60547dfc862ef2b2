"""Read load on the API: `GET /v1/jobs/{id}` and `GET /v1/assets/{id}` from concurrent clients
against `heimdex serve` on PostgreSQL, beside a bare Litestar endpoint in the same run.

    uv run python benchmarks/api_load.py [--clients 32] [--seconds 5] [--rounds 3]

The database is set up as in production (docs/deployment.md, "PostgreSQL"): migrated by an owner
role, served by a runtime role under row-level security, so every request pays for its
transaction and its `SET heimdex.org_id`. The reference, `benchmarks/_bare_app.py`, is Litestar
on the same uvicorn set-up answering a job-sized JSON with no auth, no database, no logging.
The targets are timed in turn, round after round, so machine noise falls on all of them; the
figure is each route's requests/s as a share of the bare endpoint's.

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


async def load(port: int, path: str, token: str | None, clients: int, seconds: float) -> Figures:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
    warm = Figures()
    await asyncio.gather(
        *(one_client(port, request, time.perf_counter() + 0.5, warm) for _ in range(clients))
    )
    figures = Figures()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(one_client(port, request, stop_at, figures) for _ in range(clients)))
    figures.seconds = time.perf_counter() - started
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each timed run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target, interleaved")
    args = parser.parse_args()
    for binary in ("ffmpeg",):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} is needed")

    suffix = uuid.uuid4().hex[:8]
    catalogue = Catalogue(f"heimdex_load_{suffix}", f"heimdex_lo_{suffix}", f"heimdex_lr_{suffix}")
    catalogue.create()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="heimdex-load-") as workdir:
            api_port, bare_port = free_port(), free_port()
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
            for command in (
                [*heimdex, "serve", "--port", str(api_port)],
                [sys.executable, str(HERE / "_bare_app.py"), str(bare_port)],
            ):
                processes.append(
                    subprocess.Popen(
                        command, env=env, stderr=subprocess.DEVNULL, start_new_session=True
                    )
                )
            wait_http(f"http://127.0.0.1:{api_port}/health")
            wait_http(f"http://127.0.0.1:{bare_port}/bare/x")
            token = subprocess.run(
                [*heimdex, "token", "--org", "bench"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            asset_id, job_id = seed(f"http://127.0.0.1:{api_port}", token, make_clip(Path(workdir)))

            targets = {
                "bare Litestar": (bare_port, f"/bare/{job_id}", None),
                "GET /v1/jobs/{id}": (api_port, f"/v1/jobs/{job_id}", token),
                "GET /v1/assets/{id}": (api_port, f"/v1/assets/{asset_id}", token),
            }
            runs: dict[str, list[Figures]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (port, path, bearer) in targets.items():
                    runs[name].append(
                        uvloop.run(load(port, path, bearer, args.clients, args.seconds))
                    )
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            process.wait(timeout=15)
        catalogue.drop()

    print(
        f"{args.clients} keep-alive clients, {args.seconds:g} s per run, "
        f"median of {args.rounds} interleaved runs; PostgreSQL as the runtime role under RLS"
    )
    print(f"{'target':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'vs bare':>9}")
    bare_rate = statistics.median(f.per_second for f in runs["bare Litestar"])
    for name, figures in runs.items():
        rate = statistics.median(f.per_second for f in figures)
        p50 = statistics.median(f.percentile(0.50) for f in figures)
        p99 = statistics.median(f.percentile(0.99) for f in figures)
        errors = sum(f.errors for f in figures)
        print(f"{name:<22}{rate:>9.0f}{p50:>9.2f}{p99:>9.2f}{errors:>8}{rate / bare_rate:>9.2f}")


if __name__ == "__main__":
    main()
