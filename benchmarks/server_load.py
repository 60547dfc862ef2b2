"""Throughput of `heimdex serve`'s HTTP server set-up beside the alternatives, in one run:
`GET /health` and an authenticated `GET /v1/jobs/{id}` from concurrent keep-alive clients.

    uv run python benchmarks/server_load.py [--clients 32] [--seconds 4] [--rounds 3]
        [--variants guarded,httptools,h11] [--python PYTHON]

Each variant (see benchmarks/_server_variant.py: ``guarded`` is what `heimdex serve` runs,
``httptools`` what it ran before the connection limits) serves the embedded default (SQLite,
local storage) from a data directory of its own, seeded with one committed asset and its
finished job. The targets are timed in turn, round after round, so machine noise falls on all
of them; the figure is each one's requests/s as a share of ``httptools``'s (or the first
variant's). ``--python`` runs the servers on another interpreter, e.g. a scratch venv where
granian or hypercorn is installed. The client is benchmarks/api_load.py's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import uvloop

from _local_services import free_port, wait_http
from api_load import Figures, load, make_clip, seed

SECRET = "benchmark-secret-that-is-at-least-32-bytes"
HERE = Path(__file__).resolve().parent


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
    targets: dict[str, tuple[int, str, str | None]] = {}
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
                processes.append(
                    subprocess.Popen(
                        [args.python, str(HERE / "_server_variant.py"), variant, str(port)],
                        env=env,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
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
                targets[f"{variant} /health"] = (port, "/health", None)
                targets[f"{variant} GET job"] = (port, f"/v1/jobs/{job_id}", token)
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

    reference = "httptools" if "httptools" in variants else variants[0]
    print(
        f"{args.clients} keep-alive clients, {args.seconds:g} s per run, median of "
        f"{args.rounds} interleaved runs; embedded default (SQLite); vs {reference}"
    )
    print(f"{'target':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'vs ref':>8}")
    rates = {name: statistics.median(f.per_second for f in run) for name, run in runs.items()}
    for name, figures in runs.items():
        route = name.split(" ", 1)[1]
        p50 = statistics.median(f.percentile(0.50) for f in figures)
        p99 = statistics.median(f.percentile(0.99) for f in figures)
        errors = sum(f.errors for f in figures)
        share = rates[name] / rates[f"{reference} {route}"]
        print(f"{name:<24}{rates[name]:>9.0f}{p50:>9.2f}{p99:>9.2f}{errors:>8}{share:>8.2f}")


if __name__ == "__main__":
    main()
