"""Throughput of `heimdex serve`'s HTTP server set-up beside the alternatives, in one run:
`GET /health` and an authenticated `GET /v1/jobs/{id}` from concurrent keep-alive clients.

    uv run python benchmarks/server_load.py [--clients 32] [--seconds 4] [--rounds 3]
        [--variants guarded,httptools,h11] [--python PYTHON]

Each variant (see benchmarks/_server_variant.py: ``guarded`` is what `heimdex serve` runs,
``httptools`` what it ran before the connection limits) serves the embedded default (SQLite,
local storage) from a data directory of its own, seeded with one committed asset and its
finished job. The targets are timed in turn, round after round, so machine noise falls on all
of them; the figures are each one's requests/s and its server's CPU time per request (summed
over the server's processes; far steadier than requests/s on a busy machine), each also as a
share of ``httptools``'s (or the first variant's). ``--python`` runs the servers on another
interpreter, e.g. a scratch venv where granian or hypercorn is installed. The client is
benchmarks/api_load.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from _local_services import free_port, wait_http
from api_load import Figures, make_clip, one_client, seed

SECRET = "benchmark-secret-that-is-at-least-32-bytes"
HERE = Path(__file__).resolve().parent


def session_cpu_seconds(session: int) -> float:
    """CPU time of every process in a session: a server and any workers it started."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == session:  # after the name: state, ppid, pgrp, session, ...
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    figures: Figures
    cpu_per_request: float  # seconds


async def timed_load(
    session: int, port: int, path: str, token: str | None, clients: int, seconds: float
) -> Run:
    """api_load's load, also counting the server's CPU time per request (what machine noise
    hardly moves, unlike requests per second)."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
    warm = Figures()
    stop_at = time.perf_counter() + 0.5
    await asyncio.gather(*(one_client(port, request, stop_at, warm) for _ in range(clients)))
    figures = Figures()
    cpu = session_cpu_seconds(session)
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(one_client(port, request, stop_at, figures) for _ in range(clients)))
    figures.seconds = time.perf_counter() - started
    return Run(figures, (session_cpu_seconds(session) - cpu) / max(1, len(figures.latencies)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each timed run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target, interleaved")
    parser.add_argument("--variants", default="guarded,httptools,h11", help="comma-separated")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    args = parser.parse_args()
    variants = args.variants.split(",")

    processes: list[subprocess.Popen[bytes]] = []
    targets: dict[str, tuple[int, int, str, str | None]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="heimdex-server-load-") as workdir:
            clip = make_clip(Path(workdir))
            for variant in variants:
                port = free_port()
                env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
                env.update(
                    HEIMDEX_DATA_DIR=str(Path(workdir) / variant),
                    HEIMDEX_JWT_SECRET=SECRET,
                    HEIMDEX_LOG_LEVEL="warning",
                )
                server = subprocess.Popen(
                    [args.python, str(HERE / "_server_variant.py"), variant, str(port)],
                    env=env,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                processes.append(server)
                base = f"http://127.0.0.1:{port}"
                wait_http(base + "/health", seconds=60)
                token = subprocess.run(
                    [sys.executable, "-m", "heimdex", "token", "--org", "bench"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                _, job_id = seed(base, token, clip)
                targets[f"{variant} /health"] = (server.pid, port, "/health", None)
                targets[f"{variant} GET job"] = (server.pid, port, f"/v1/jobs/{job_id}", token)
            runs: dict[str, list[Run]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (session, port, path, bearer) in targets.items():
                    runs[name].append(
                        uvloop.run(
                            timed_load(session, port, path, bearer, args.clients, args.seconds)
                        )
                    )
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            process.wait(timeout=15)

    reference = "httptools" if "httptools" in variants else variants[0]
    print(
        f"{args.clients} keep-alive clients, {args.seconds:g} s per run, median of "
        f"{args.rounds} interleaved runs; embedded default (SQLite); vs {reference}"
    )
    print(
        f"{'target':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'vs ref':>8}"
        f"{'CPU us/req':>12}{'vs ref':>8}"
    )
    rates = {n: statistics.median(r.figures.per_second for r in rs) for n, rs in runs.items()}
    cpu = {n: statistics.median(r.cpu_per_request for r in rs) * 1e6 for n, rs in runs.items()}
    for name, target_runs in runs.items():
        figures = [r.figures for r in target_runs]
        route = name.split(" ", 1)[1]
        p50 = statistics.median(f.percentile(0.50) for f in figures)
        p99 = statistics.median(f.percentile(0.99) for f in figures)
        errors = sum(f.errors for f in figures)
        share = rates[name] / rates[f"{reference} {route}"]
        cost = cpu[name] / cpu[f"{reference} {route}"]
        print(
            f"{name:<24}{rates[name]:>9.0f}{p50:>9.2f}{p99:>9.2f}{errors:>8}{share:>8.2f}"
            f"{cpu[name]:>12.0f}{cost:>8.2f}"
        )


if __name__ == "__main__":
    main()
