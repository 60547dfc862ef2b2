"""Upload throughput and server memory: PUT /v1/uploads/{id} and one tus PATCH against a bare
Litestar endpoint that streams the body into a file with sha256.

Starts `heimdex serve` on the embedded default (SQLite, local storage) in a temporary directory
and, beside it, the reference (benchmarks/_bare_upload_app.py: a bare Litestar endpoint served
by the same server set-up that writes the body to a file with fsync, hashing it as it goes).
For each body size, interleaved (each round starting with the next variant) so drift and
the disk's writeback hit all alike, it times with curl (a C client, so the
client is not what is measured):

- ``bare``: PUT to the reference;
- ``PUT``: init, then PUT to the signed upload_url;
- ``PATCH``: tus creation (POST /v1/uploads), then the whole body in one PATCH;
- ``PATCH+sha256``: the same with ``Upload-Checksum: sha256 …``, so Heimdex hashes the body as
  the reference does (a PATCH without a checksum only stores it; commit hashes it later).

Every run's result is checked against the source: the reference's and the PUT's answered sha256,
the tus upload's offset and its stored file's sha256. The servers' resident memory comes from
/proc: idle, and the peak (VmHWM) after each size.

    uv run python benchmarks/upload.py [--sizes 64,1024,4096] [--repeat 3] [--keep]

Targets (issue 15): PUT and PATCH at least 0.9 of the bare endpoint's speed; Heimdex's peak
RSS < 50 MB above idle, flat in the body size.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

from _local_services import free_port

MIB = 1024 * 1024
SECRET = "benchmark-secret-that-is-at-least-32-bytes"
HERE = Path(__file__).resolve().parent


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def write_source(path: Path, total: int, block: bytes) -> str:
    """``total`` bytes cycling through ``block`` (random, larger than any CPU cache); their
    sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        left = total
        while left:
            piece = block[: min(left, len(block))]
            handle.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{url} did not answer")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}


def start_heimdex(workdir: Path, max_bytes: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = clean_env()
    env.update(
        HEIMDEX_DATA_DIR=str(workdir / "data"),
        HEIMDEX_JWT_SECRET=SECRET,
        HEIMDEX_MAX_UPLOAD_SIZE_BYTES=str(max_bytes),
        HEIMDEX_UPLOAD_RESUMABLE_MAX_SIZE_BYTES=str(max_bytes),
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
    wait_healthy(base + "/health", process)
    return process, base


def start_bare(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    target = workdir / "bare"
    target.mkdir()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "_bare_upload_app.py"), str(target), str(port)],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base + "/", process)
    return process, base


def token(workdir: Path) -> str:
    env = clean_env()
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


def curl(method: str, url: str, source: Path, headers: dict[str, str]) -> tuple[float, str]:
    """Send ``source`` as the body; the seconds it took and the answer's body."""
    flags = [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
    started = time.perf_counter()
    result = subprocess.run(
        ["curl", "-sSf", "-X", method, "-T", str(source), *flags, url],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, result.stdout


def bare_run(base: str, source: Path, sha256: str) -> float:
    took, answer = curl("PUT", base + "/bare/body.bin", source, {})
    assert httpx.Response(200, content=answer).json()["sha256"] == sha256, "bare: wrong sha256"
    return took


def put_run(client: httpx.Client, base: str, bearer: str, source: Path, sha256: str) -> float:
    init = client.post(
        base + "/v1/ingest/init",
        json={
            "source_name": "bench.mp4",
            "content_length": source.stat().st_size,
            "content_type": "video/mp4",
        },
        headers={"Authorization": f"Bearer {bearer}"},
    )
    init.raise_for_status()
    target = init.json()
    took, answer = curl("PUT", target["upload_url"], source, target["headers"])
    assert httpx.Response(200, content=answer).json()["sha256"] == sha256, "PUT: wrong sha256"
    return took


def patch_run(
    client: httpx.Client,
    base: str,
    bearer: str,
    source: Path,
    sha256: str,
    storage: Path,
    *,
    checksum: bool = False,
) -> float:
    """One tus upload in one PATCH; with ``checksum``, an ``Upload-Checksum: sha256`` the server
    verifies (it then hashes the body as the bare endpoint does)."""
    auth = {"Authorization": f"Bearer {bearer}", "Tus-Resumable": "1.0.0"}
    name = base64.b64encode(b"bench.mp4").decode()
    media_type = base64.b64encode(b"video/mp4").decode()
    created = client.post(
        base + "/v1/uploads",
        headers=auth
        | {
            "Upload-Length": str(source.stat().st_size),
            "Upload-Metadata": f"filename {name},filetype {media_type}",
        },
    )
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    headers = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    if checksum:
        digest = base64.b64encode(bytes.fromhex(sha256)).decode()
        headers["Upload-Checksum"] = f"sha256 {digest}"
    took, _ = curl("PATCH", url, source, auth | headers)
    head = client.head(url, headers=auth)
    assert int(head.headers["upload-offset"]) == source.stat().st_size, "PATCH: wrong offset"
    upload_id = url.rsplit("/", 1)[1]
    stored = next(storage.glob(f"uploads/bench/{upload_id}/*"))
    assert file_sha256(stored) == sha256, "PATCH: the stored file is not the source"
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,1024,4096", help="body sizes in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; medians reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (the client, so the client is not what is measured)")
    sizes = [int(s) * MIB for s in args.sizes.split(",")]
    block = os.urandom(64 * MIB)
    workdir = Path(tempfile.mkdtemp(prefix="heimdex-bench-upload-"))
    heimdex, base = start_heimdex(workdir, max(sizes))
    bare, bare_base = start_bare(workdir)
    storage = workdir / "data" / "storage"
    try:
        bearer = token(workdir)
        with httpx.Client(timeout=600) as client:
            warm = workdir / "warm.bin"
            warm_sha = write_source(warm, MIB, block)
            for _ in range(2):  # imports, the database, the first connections
                bare_run(bare_base, warm, warm_sha)
                put_run(client, base, bearer, warm, warm_sha)
                patch_run(client, base, bearer, warm, warm_sha, storage)
            idle = rss_kib(heimdex.pid, "VmRSS")
            bare_idle = rss_kib(bare.pid, "VmRSS")
            print(
                f"idle RSS: heimdex {idle / 1024:.1f} MiB, bare endpoint {bare_idle / 1024:.1f} MiB"
            )
            print(
                f"{'body':>7} {'bare MB/s':>10} {'PUT MB/s':>9} {'PUT/bare':>9} "
                f"{'PATCH MB/s':>11} {'PATCH/bare':>11} {'PATCH+sha MB/s':>15} {'+sha/bare':>10} "
                f"{'heimdex peak RSS':>17} {'above idle':>11} {'bare above idle':>16}"
            )
            for total in sizes:
                source = workdir / "source.bin"
                sha256 = write_source(source, total, block)
                runs: dict[str, list[float]] = {"bare": [], "put": [], "patch": [], "sha": []}
                variants: list[tuple[str, Callable[[], float]]] = [
                    ("bare", partial(bare_run, bare_base, source, sha256)),
                    ("put", partial(put_run, client, base, bearer, source, sha256)),
                    ("patch", partial(patch_run, client, base, bearer, source, sha256, storage)),
                    (
                        "sha",
                        partial(
                            patch_run, client, base, bearer, source, sha256, storage, checksum=True
                        ),
                    ),
                ]
                for round_ in range(args.repeat):
                    # Each round starts with the next variant, so none always follows another's
                    # disk writeback or page-cache eviction.
                    turn = round_ % len(variants)
                    for name, run in variants[turn:] + variants[:turn]:
                        runs[name].append(run())
                        shutil.rmtree(storage / "uploads", ignore_errors=True)
                bares, puts, patches, checked = (runs[k] for k in ("bare", "put", "patch", "sha"))
                source.unlink()
                (workdir / "bare" / "body.bin").unlink(missing_ok=True)
                reference = statistics.median(bares)
                put, patch = statistics.median(puts), statistics.median(patches)
                sha = statistics.median(checked)
                peak = rss_kib(heimdex.pid, "VmHWM")
                bare_peak = rss_kib(bare.pid, "VmHWM")
                mb = total / 1e6
                print(
                    f"{total // MIB:>5}Mi {mb / reference:>10.0f} {mb / put:>9.0f} "
                    f"{reference / put:>9.2f} {mb / patch:>11.0f} {reference / patch:>11.2f} "
                    f"{mb / sha:>15.0f} {reference / sha:>10.2f} "
                    f"{peak / 1024:>13.1f} MiB {(peak - idle) / 1024:>7.1f} MiB "
                    f"{(bare_peak - bare_idle) / 1024:>12.1f} MiB"
                )
    finally:
        for process in (heimdex, bare):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
