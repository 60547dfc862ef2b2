"""Upload throughput and server memory: PUT /v1/uploads/{id} against a plain disk write.

Starts `heimdex serve` on the embedded default in a temporary directory, then for each body size
times (a) a plain chunked file write with fsync into the same directory — the disk's own speed,
the reference — and (b) an upload through the API (init → PUT with the signed URL), and reads the
server's resident memory from /proc: idle, and its peak (VmHWM) after each size.

    uv run python benchmarks/upload.py [--sizes 64,512,2048] [--keep]

Targets (issue 3): upload ≥ 70 % of the plain write; peak RSS < 50 MB above idle, not growing
with the body size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from _local_services import free_port

MIB = 1024 * 1024
CHUNK = MIB
SECRET = "benchmark-secret-that-is-at-least-32-bytes"


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def body(total: int, pool: bytes) -> Iterator[bytes]:
    """``total`` bytes in CHUNK pieces cycling through ``pool``: 64 MiB of random data, larger
    than any CPU cache, so the reference writes cold bytes as the server does."""
    sent = 0
    view = memoryview(pool)
    while sent < total:
        start = sent % len(pool)
        piece = view[start : start + min(CHUNK, total - sent)]
        sent += len(piece)
        yield piece


def plain_write(path: Path, total: int, block: bytes) -> float:
    """The reference: the same bytes in the same chunks to the same disk, with fsync. The file
    stays, as the upload's source."""
    started = time.perf_counter()
    with path.open("wb") as handle:
        for piece in body(total, block):
            handle.write(piece)
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - started


def start_server(workdir: Path, max_bytes: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    env.update(
        HEIMDEX_DATA_DIR=str(workdir / "data"),
        HEIMDEX_JWT_SECRET=SECRET,
        HEIMDEX_MAX_UPLOAD_SIZE_BYTES=str(max_bytes),
        HEIMDEX_LOG_LEVEL="warning",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "heimdex", "serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("heimdex serve did not start")


def token(workdir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    env["HEIMDEX_JWT_SECRET"] = SECRET
    result = subprocess.run(
        [sys.executable, "-m", "heimdex", "token", "--org", "bench"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def upload(client: httpx.Client, base: str, bearer: str, source: Path) -> float:
    """init, then PUT the file with curl (a C client, so the client is not what is measured);
    httpx streams it when curl is missing."""
    total = source.stat().st_size
    init = client.post(
        base + "/v1/ingest/init",
        json={"source_name": "bench.mp4", "content_length": total, "content_type": "video/mp4"},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    init.raise_for_status()
    target = init.json()
    curl = shutil.which("curl")
    started = time.perf_counter()
    if curl:
        headers = [arg for k, v in target["headers"].items() for arg in ("-H", f"{k}: {v}")]
        subprocess.run(
            [
                curl,
                "-sSf",
                "-o",
                "/dev/null",
                "-X",
                "PUT",
                "-T",
                str(source),
                *headers,
                target["upload_url"],
            ],
            check=True,
        )
    else:
        with source.open("rb") as handle:
            response = client.put(
                target["upload_url"], content=handle, headers=target["headers"], timeout=600
            )
        response.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,512,2048", help="body sizes in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; medians reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    sizes = [int(s) * MIB for s in args.sizes.split(",")]
    block = os.urandom(64 * MIB)
    workdir = Path(tempfile.mkdtemp(prefix="heimdex-bench-upload-"))
    process, base = start_server(workdir, max(sizes))
    try:
        bearer = token(workdir)
        with httpx.Client() as client:
            warm = workdir / "warm.bin"
            warm.write_bytes(block[:MIB])
            upload(client, base, bearer, warm)  # warm up imports and the database
            idle = rss_kib(process.pid, "VmRSS")
            print(f"server idle RSS: {idle / 1024:.1f} MiB")
            print(
                f"{'body':>8} {'plain MB/s':>11} {'upload MB/s':>12} {'ratio':>6} "
                f"{'peak RSS MiB':>13} {'above idle':>11}"
            )
            for total in sizes:
                plains, uploads = [], []
                source = workdir / "plain.bin"
                for _ in range(args.repeat):  # interleaved, so drift hits both alike
                    plains.append(plain_write(source, total, block))
                    uploads.append(upload(client, base, bearer, source))
                    source.unlink()
                    shutil.rmtree(workdir / "data" / "storage" / "uploads", ignore_errors=True)
                plain, took = statistics.median(plains), statistics.median(uploads)
                peak = rss_kib(process.pid, "VmHWM")
                mb = total / 1e6
                print(
                    f"{total // MIB:>6}Mi {mb / plain:>11.0f} {mb / took:>12.0f} "
                    f"{plain / took:>6.2f} {peak / 1024:>13.1f} {(peak - idle) / 1024:>11.1f}"
                )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
