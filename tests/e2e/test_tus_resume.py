"""The acceptance run of resumable uploads: an off-the-shelf tus client (tuspy) uploads a file
to `heimdex serve`, is killed twice mid-upload (SIGKILL, mid-PATCH), resumes each time with a new
client from the URL it stored, and the upload commits with the file's sha256 — on local storage
and on S3 (a moto server).

The file is a real MP4 followed by a top-level ``free`` box of random bytes (any MP4 reader skips
it), so commit probes it as media. 96 MiB in the suite; the 2 GiB run is the same test with
``HEIMDEX_TUS_ACCEPTANCE_MIB=2048`` (too slow for CI on a 2-core machine).
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.processes import free_port, wait_until
from tests.fixtures.s3 import MotoServer

SECRET = "tus-e2e-secret-that-is-at-least-32-bytes"
MIB = 1024 * 1024
SIZE = int(os.environ.get("HEIMDEX_TUS_ACCEPTANCE_MIB", "96")) * MIB
TUS = {"Tus-Resumable": "1.0.0"}

# The client's link runs at this many MiB/s in the suite, so a kill lands mid-PATCH rather than
# after a file that went by in a second; the 2 GiB run goes at full speed.
RATE = 48 if SIZE <= 256 * MIB else 0

CLIENT = """
import sys
import time

import requests
from tusclient import client
from tusclient.storage.filestorage import FileStorage

url, token, path, urls, chunk_size, checksum, rate = sys.argv[1:8]
if float(rate):
    # tuspy sends each chunk from memory in one go: here it trickles at `rate` MiB/s instead.
    send = requests.patch
    piece = 256 * 1024

    def trickle(target, data=None, **options):
        def pieces():
            for start in range(0, len(data), piece):
                yield data[start : start + piece]
                time.sleep(piece / (float(rate) * 1024 * 1024))
        return send(target, data=pieces(), **options)

    requests.patch = trickle
tus = client.TusClient(url, headers={"Authorization": "Bearer " + token})
uploader = tus.uploader(
    path,
    chunk_size=int(chunk_size),
    store_url=True,
    url_storage=FileStorage(urls),
    metadata={"filename": "camera.mp4", "filetype": "video/mp4"},
    upload_checksum=checksum == "yes",
)
print("offset", uploader.offset, flush=True)
if not uploader.url:
    uploader.set_url(uploader.create_url())
print("url", uploader.url, flush=True)
uploader.upload()
print("done", uploader.url, flush=True)
"""


class Server:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
        self.env.update(
            HEIMDEX_DATA_DIR=str(workdir / "data"),
            HEIMDEX_JWT_SECRET=SECRET,
            HEIMDEX_LOG_LEVEL="warning",
            **env,
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.workdir / "serve.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "heimdex", "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def healthy() -> bool:
            try:
                return httpx.get(self.base_url + "/health", timeout=0.5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, "heimdex serve did not answer /health")

    def token(self, org: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "heimdex", "token", "--org", org],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture(params=["local", "s3"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env: dict[str, str] = {}
    if request.param == "s3":
        moto: MotoServer = request.getfixturevalue("moto_server")
        env = moto.deployment_env(request.getfixturevalue("s3_bucket"))
    server = Server(tmp_path, env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def camera_file(path: Path, mp4: bytes, size: int) -> str:
    """``mp4`` and a ``free`` box (64-bit size) of random bytes up to ``size``; its sha256."""
    digest = hashlib.sha256()
    block = os.urandom(8 * MIB)
    padding = size - len(mp4) - 16
    with path.open("wb") as handle:
        for piece in (mp4, struct.pack(">I4sQ", 1, b"free", padding + 16)):
            handle.write(piece)
            digest.update(piece)
        left = padding
        while left:
            piece = block[: min(left, len(block))]
            handle.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def offset_of(server: Server, url: str, token: str) -> int:
    response = httpx.head(url, headers=TUS | {"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    return int(response.headers["upload-offset"])


def run_client(
    server: Server, token: str, source: Path, *, chunk_size: int, checksum: bool
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLIENT,
            server.base_url + "/v1/uploads",
            token,
            str(source),
            str(server.workdir / "tus-urls.json"),
            str(chunk_size),
            "yes" if checksum else "no",
            str(RATE),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def url_of(client: subprocess.Popen[str]) -> tuple[int, str]:
    """The offset the client resumed from and its upload URL, from its first lines."""
    assert client.stdout is not None
    first = client.stdout.readline().split()
    second = client.stdout.readline().split()
    assert first[0] == "offset", first
    assert second[0] == "url", second
    return int(first[1]), second[1]


def kill_once_past(
    server: Server, client: subprocess.Popen[str], url: str, token: str, at_least: int
) -> int:
    """SIGKILL the client once the server recorded ``at_least`` bytes, mid-PATCH; answers
    the offset the server tells afterwards."""
    deadline = time.monotonic() + 600
    while offset_of(server, url, token) < at_least:
        assert client.poll() is None, "the client ended before it was killed"
        assert time.monotonic() < deadline, "the upload made no progress"
        time.sleep(0.05)
    time.sleep(0.2)  # into the next PATCH's body
    client.kill()
    client.wait(timeout=10)
    time.sleep(0.5)  # the server notices the connection is gone
    return offset_of(server, url, token)


def test_tuspy_killed_twice_resumes_and_commits_with_the_right_sha256(
    server: Server, h264_aac_mp4: Path, tmp_path: Path
) -> None:
    source = tmp_path / "camera.mp4"
    sha256 = camera_file(source, h264_aac_mp4.read_bytes(), SIZE)
    token = server.token("acme")

    # First run: large PATCHes without checksums; a PATCH cut off keeps what arrived whole.
    first = run_client(server, token, source, chunk_size=32 * MIB, checksum=False)
    resumed_from, url = url_of(first)
    assert resumed_from == 0
    after_first = kill_once_past(server, first, url, token, SIZE // 4)
    assert SIZE // 4 <= after_first < SIZE

    # Second run, a new client: it finds the URL it stored, asks HEAD, resumes there, with
    # sha1 checksums on 8 MiB PATCHes (a cut-off one keeps nothing).
    second = run_client(server, token, source, chunk_size=8 * MIB, checksum=True)
    resumed_from, url_again = url_of(second)
    assert url_again == url
    assert resumed_from == after_first
    after_second = kill_once_past(server, second, url, token, SIZE * 2 // 3)
    assert after_first < after_second < SIZE

    # Third run finishes.
    third = run_client(server, token, source, chunk_size=32 * MIB, checksum=False)
    resumed_from, _ = url_of(third)
    assert resumed_from == after_second
    output, _ = third.communicate(timeout=900)
    assert third.returncode == 0, output
    assert offset_of(server, url, token) == SIZE

    upload_id = url.rsplit("/", 1)[1]
    commit = httpx.post(
        server.base_url + "/v1/ingest/commit",
        json={"upload_id": upload_id},
        headers={"Authorization": f"Bearer {token}"},
        timeout=900,
    )
    assert commit.status_code == 201, commit.text
    asset = commit.json()
    assert asset["sha256"] == sha256
    assert asset["size_bytes"] == SIZE
