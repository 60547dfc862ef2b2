"""`heimdex serve --workers N`: N processes on one port, each with the server's limits.

On PostgreSQL with the Redis queue (what N > 1 needs), as real processes over real HTTP: two
workers answer, each applies the header cap, SIGTERM stops them all, and a worker that dies
takes the server down with a non-zero status instead of leaving it half there. Where N > 1
cannot work (the embedded default, SQLite) it is refused with one line.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.e2e.test_serve import environment, free_port
from tests.fixtures.db import PostgresCatalogue
from tests.fixtures.processes import wait_until

SECRET = "workers-test-secret-that-is-at-least-32-bytes"
MAX_HEADER_BYTES = 4096


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found.extend(int(child) for child in task.read_text().split())
    return found


class Workers:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self.port = port

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            _, err = self.process.communicate()
        return self.process.returncode, err


@pytest.fixture
def workers(tmp_path: Path, postgres_catalogue: PostgresCatalogue) -> Iterator[Workers]:
    port = free_port()
    env = environment(
        tmp_path,
        HEIMDEX_DATABASE_URL=postgres_catalogue.runtime_url,
        HEIMDEX_JOB_QUEUE_BACKEND="redis",
        HEIMDEX_REDIS_QUEUE_NAME=f"heimdex:workers:{uuid.uuid4().hex[:8]}",
        HEIMDEX_JWT_SECRET=SECRET,
        HEIMDEX_HTTP_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        HEIMDEX_LOG_LEVEL="info",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "heimdex", "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    running = Workers(process, port)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early: {running.stop()[1]}")
        try:
            return httpx.get(running.base_url + "/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answers, 60, "serve --workers 2 answered /health")
    try:
        yield running
    finally:
        running.stop()


def oversize_head(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * (MAX_HEADER_BYTES * 2)
            + b"\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.postgres
def test_two_workers_serve_one_port_with_the_limits_and_stop_together(workers: Workers) -> None:
    pids = children_of(workers.process.pid)
    assert len(pids) == 2
    token = jwt.encode({"org_id": "acme", "exp": int(time.time()) + 600}, SECRET)
    headers = {"Authorization": f"Bearer {token}"}
    # Many connections, one request each: the kernel spreads them over both workers, and every
    # one is answered (the asyncpg read path of whichever worker took it).
    for _ in range(20):
        with httpx.Client(base_url=workers.base_url, headers=headers) as client:
            missing = client.get(f"/v1/assets/{uuid.uuid4()}")
            assert missing.status_code == 404, missing.text
            assert client.get("/v1/assets").json() == {"items": [], "next_cursor": None}
    # The header cap holds in every worker.
    for _ in range(6):
        assert oversize_head(workers.port).startswith(b"HTTP/1.1 431 ")
    code, err = workers.stop()
    assert code == 0, err
    assert "Traceback" not in err
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


@pytest.mark.postgres
def test_a_worker_that_dies_stops_the_server_with_a_failure(workers: Workers) -> None:
    first, second = children_of(workers.process.pid)
    os.kill(first, signal.SIGKILL)
    workers.process.wait(timeout=30)
    assert workers.process.returncode == 1
    assert not Path(f"/proc/{second}").exists()  # stopped, and waited for
    _, err = workers.stop()
    assert "worker_exited" in err


@pytest.mark.parametrize(
    ("extra", "needs"),
    [
        ({}, "HEIMDEX_JOB_QUEUE_BACKEND=redis"),
        ({"HEIMDEX_JOB_QUEUE_BACKEND": "redis"}, "PostgreSQL"),
    ],
)
def test_more_than_one_worker_is_refused_where_it_cannot_work(
    tmp_path: Path, extra: dict[str, str], needs: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "heimdex", "serve", "--workers", "2"],
        cwd=tmp_path,
        env=environment(tmp_path, HEIMDEX_JWT_SECRET=SECRET, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert needs in result.stderr
    assert "Traceback" not in result.stderr
