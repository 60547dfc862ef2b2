"""`heimdex ingest --api` against `heimdex serve`, beside the same HTTP calls made by hand.

Starts `heimdex serve` on the embedded default in a temporary directory and generates 200 short
clips (one ffmpeg clip, each copy made distinct by a few trailing bytes) and 3 large files (a
real clip followed by 1 GiB of random bytes the demuxer ignores). Then, each phase into an
organisation of its own so nothing is a duplicate:

- clips: `heimdex ingest --api … --no-sidecar --jobs J` against a bare httpx loop making the
  same calls (hash, GET /v1/assets?sha256, init, PUT, commit) J at once: files/s;
- large files: the CLI against curl uploading the same files (init → `curl -T` → commit): bytes/s;
- each comparison runs --rounds times in turn and the best of each counts (the machine is
  shared and noisy);
- the CLI's peak RSS (the kernel's accounting of the finished process) for the clips and for
  the large files: it must not grow with the file size.

    uv run python benchmarks/ingest.py [--clips 200] [--large 3] [--large-mib 1024] [--jobs 4]
                                       [--rounds 2]

Targets (issue 14): files/s >= 0.8x the bare loop; bytes/s >= 0.8x curl; peak RSS flat.

The CLI runs as installed, with its bytecode compiled (pip, ``uv tool`` and the container image
compile at install): a cache of its own under ``.cache/``, written by a warm-up run.
``--no-bytecode-cache`` runs it under PYTHONDONTWRITEBYTECODE=1 with no cache instead, as a
source checkout with that variable set does, compiling every module on every start.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _local_services import free_port, wait_http

MIB = 1024 * 1024
PYCACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench-pycache" / "ingest"
SECRET = "benchmark-secret-that-is-at-least-32-bytes"
_orgs = iter(range(1000))


def environment(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    env.update(
        HEIMDEX_DATA_DIR=str(workdir / "data"),
        HEIMDEX_JWT_SECRET=SECRET,
        HEIMDEX_MAX_UPLOAD_SIZE_BYTES=str(4 * 1024 * MIB),
        HEIMDEX_LOG_LEVEL="warning",
    )
    return env


def token(workdir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "heimdex", "token", "--org", f"bench-{next(_orgs)}"],
        cwd=workdir,
        env=environment(workdir),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def make_media(workdir: Path, clips: int, large: int, large_mib: int) -> tuple[Path, Path]:
    clip = workdir / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", "testsrc=duration=1:size=320x240:rate=25", "-c:v", "libx264",
         "-preset", "ultrafast", "-movflags", "+faststart", str(clip)],
        check=True,
    )  # fmt: skip
    data = clip.read_bytes()
    small, big = workdir / "clips", workdir / "large"
    small.mkdir()
    big.mkdir()
    for n in range(clips):
        (small / f"clip {n:03}.mp4").write_bytes(data + f"salt {n}".encode())
    block = os.urandom(64 * MIB)
    for n in range(large):
        with (big / f"large {n}.mp4").open("wb") as handle:
            handle.write(data)
            handle.write(f"large {n}".encode())
            for _ in range(large_mib // 64):
                handle.write(block)
    return small, big


def cli_environment(workdir: Path, *, bytecode_cache: bool) -> dict[str, str]:
    env = environment(workdir)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_cli(
    workdir: Path,
    base: str,
    folder: Path,
    jobs: int,
    *,
    bytecode_cache: bool,
    other_src: Path | None = None,
) -> tuple[float, int]:
    """Wall seconds (the whole process: its start-up counts) and peak RSS (KiB) of
    `heimdex ingest --api` on ``folder``; ``other_src``: the CLI of that source tree instead."""
    bearer = token(workdir)
    env = cli_environment(workdir, bytecode_cache=bytecode_cache)
    if other_src is not None:
        env["PYTHONPATH"] = str(other_src)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "heimdex", "ingest", "--api", base, "--token", bearer,
         "--no-sidecar", "--json", "--jobs", str(jobs), str(folder)],
        cwd=workdir, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"heimdex ingest failed: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return seconds, usage.ru_maxrss


def _digest(path: Path) -> tuple[str, int]:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest(), path.stat().st_size


def _chunks(path: Path) -> object:
    async def read() -> object:
        with path.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, MIB):
                yield chunk

    return read()


async def bare_loop(base: str, bearer: str, files: list[Path], jobs: int) -> float:
    """The same calls as the CLI, by hand: hash, look up, init, PUT, commit."""
    limit = asyncio.Semaphore(jobs)
    headers = {"Authorization": f"Bearer {bearer}"}
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as api,
        httpx.AsyncClient(timeout=600) as uploads,
    ):

        async def one(path: Path) -> None:
            async with limit:
                digest, size = await asyncio.to_thread(_digest, path)
                found = await api.get("/v1/assets", params={"sha256": digest, "limit": 1})
                assert found.json()["items"] == []
                slot = (await api.post("/v1/ingest/init", json={
                    "source_name": path.name, "content_length": size,
                    "content_type": "video/mp4", "sha256": digest})).json()  # fmt: skip
                put = await uploads.request(
                    slot["method"], httpx.URL(base).join(slot["upload_url"]),
                    headers={**slot["headers"], "Content-Length": str(size)},
                    content=_chunks(path),  # type: ignore[arg-type]
                )  # fmt: skip
                put.raise_for_status()
                commit = await api.post("/v1/ingest/commit", json={"upload_id": slot["upload_id"]})
                commit.raise_for_status()

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for path in files:
                group.create_task(one(path))
        return time.perf_counter() - started


def curl_upload(base: str, bearer: str, files: list[Path]) -> tuple[float, float]:
    """init → curl PUT → commit for each file: (seconds of the PUTs, seconds in all)."""
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("curl is needed for the reference")
    put_seconds = 0.0
    started = time.perf_counter()
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {bearer}"}, timeout=600
    ) as api:
        for path in files:
            slot = api.post("/v1/ingest/init", json={
                "source_name": path.name, "content_length": path.stat().st_size,
                "content_type": "video/mp4"}).json()  # fmt: skip
            headers = [arg for k, v in slot["headers"].items() for arg in ("-H", f"{k}: {v}")]
            put_started = time.perf_counter()
            subprocess.run(
                [curl, "-sSf", "-o", "/dev/null", "-X", slot["method"], "-T", str(path), *headers,
                 str(httpx.URL(base).join(slot["upload_url"]))],
                check=True,
            )  # fmt: skip
            put_seconds += time.perf_counter() - put_started
            api.post("/v1/ingest/commit", json={"upload_id": slot["upload_id"]}).raise_for_status()
    return put_seconds, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--large", type=int, default=3)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, in turn")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--other-src", type=Path, help="also time the CLI of this tree's src, in turn (a before)"
    )
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="the CLI compiles every module each run"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="heimdex-bench-ingest-"))
    server = None
    try:
        small, big = make_media(workdir, args.clips, args.large, args.large_mib)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "heimdex", "serve", "--port", str(port)],
            cwd=workdir, env=environment(workdir),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health", 60)
        clips = sorted(small.iterdir())
        large = sorted(big.iterdir())
        large_bytes = sum(p.stat().st_size for p in large)
        cached = not args.no_bytecode_cache
        empty = workdir / "empty"
        empty.mkdir()
        other = args.other_src
        run_cli(workdir, base, empty, args.jobs, bytecode_cache=cached)  # warm-up: the bytecode
        if other is not None:
            run_cli(workdir, base, empty, args.jobs, bytecode_cache=cached, other_src=other)
        other_clips: list[tuple[float, int]] = []
        other_large: list[tuple[float, int]] = []

        # In turn, each in an organisation of its own; the best of each (the machine is shared).
        bare_runs, cli_runs = [], []
        for _ in range(args.rounds):
            bare_runs.append(asyncio.run(bare_loop(base, token(workdir), clips, args.jobs)))
            cli_runs.append(run_cli(workdir, base, small, args.jobs, bytecode_cache=cached))
            if other is not None:
                other_clips.append(
                    run_cli(workdir, base, small, args.jobs, bytecode_cache=cached, other_src=other)
                )
        bare_seconds = min(bare_runs)
        cli_seconds, cli_clips_rss = min(cli_runs)
        curl_runs, cli_large_runs = [], []
        for _ in range(args.rounds):
            curl_runs.append(curl_upload(base, token(workdir), large))
            cli_large_runs.append(run_cli(workdir, base, big, args.jobs, bytecode_cache=cached))
            if other is not None:
                other_large.append(
                    run_cli(workdir, base, big, args.jobs, bytecode_cache=cached, other_src=other)
                )
        put_seconds = min(put for put, _ in curl_runs)
        curl_seconds = min(whole for _, whole in curl_runs)
        cli_large_seconds = min(seconds for seconds, _ in cli_large_runs)
        cli_large_rss = max(rss for _, rss in cli_large_runs)
        cli_clips_rss = max(rss for _, rss in cli_runs)

        bare_rate, cli_rate = len(clips) / bare_seconds, len(clips) / cli_seconds
        curl_all = large_bytes / curl_seconds / MIB
        curl_put = large_bytes / put_seconds / MIB
        cli_bytes = large_bytes / cli_large_seconds / MIB
        rows = [
            (f"bare httpx loop, {len(clips)} clips, {args.jobs} at once", f"{bare_rate:.1f} f/s"),
            ("  every round (s)", " ".join(f"{s:.1f}" for s in bare_runs)),
            (f"heimdex ingest --api, {len(clips)} clips", f"{cli_rate:.1f} f/s"),
            ("  every round (s)", " ".join(f"{s:.1f}" for s, _ in cli_runs)),
            ("  ratio (target >= 0.8)", f"{cli_rate / bare_rate:.2f}"),
            (f"curl, {len(large)} x {args.large_mib} MiB: PUT only", f"{curl_put:.0f} MiB/s"),
            ("curl: init + PUT + commit", f"{curl_all:.0f} MiB/s"),
            ("  every round, init + PUT + commit (s)", " ".join(f"{w:.1f}" for _, w in curl_runs)),
            ("heimdex ingest --api, the same files", f"{cli_bytes:.0f} MiB/s"),
            ("  every round (s)", " ".join(f"{s:.1f}" for s, _ in cli_large_runs)),
            ("  ratio to curl init + PUT + commit (target >= 0.8)", f"{cli_bytes / curl_all:.2f}"),
            ("  ratio to curl PUT only", f"{cli_bytes / curl_put:.2f}"),
            ("heimdex ingest peak RSS, clips", f"{cli_clips_rss / 1024:.1f} MiB"),
            ("heimdex ingest peak RSS, large files", f"{cli_large_rss / 1024:.1f} MiB"),
        ]
        if other is not None:
            other_rate = len(clips) / min(s for s, _ in other_clips)
            other_bytes = large_bytes / min(s for s, _ in other_large) / MIB
            rows += [
                (f"--other-src CLI, {len(clips)} clips", f"{other_rate:.1f} f/s"),
                ("  every round (s)", " ".join(f"{s:.1f}" for s, _ in other_clips)),
                ("  ratio to the bare loop", f"{other_rate / bare_rate:.2f}"),
                ("--other-src CLI, the large files", f"{other_bytes:.0f} MiB/s"),
                ("  every round (s)", " ".join(f"{s:.1f}" for s, _ in other_large)),
                ("  ratio to curl init + PUT + commit", f"{other_bytes / curl_all:.2f}"),
            ]
        print("heimdex ingest: " + ("bytecode cached" if cached else "no bytecode cache"))
        for label, figure in rows:
            print(f"{label:<54} {figure:>12}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
