"""`heimdex serve` as a real process on the embedded default, spoken to over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SECRET = "serve-test-secret-that-is-at-least-32-bytes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    env.update({"HEIMDEX_DATA_DIR": str(tmp_path / "data"), **extra})
    return env


class Server:
    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


def start(tmp_path: Path, **env: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "heimdex", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=environment(tmp_path, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Server(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {server.stop()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.stop()
    raise AssertionError("server did not answer /health within 30 s")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start(tmp_path, HEIMDEX_JWT_SECRET=SECRET)
    yield running
    running.stop()


def mint(tmp_path: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "heimdex", "token", *args],
        cwd=tmp_path,
        env=environment(tmp_path, HEIMDEX_JWT_SECRET=SECRET),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_serves_health_and_guards_admin_health(server: Server, tmp_path: Path) -> None:
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"
    assert httpx.get(server.base_url + "/v1/admin/health").status_code == 401
    admin = mint(tmp_path, "--org", "acme", "--scope", "admin")
    response = httpx.get(
        server.base_url + "/v1/admin/health", headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status_code == 200, response.text
    assert {c["name"] for c in response.json()["checks"]} == {
        "database",
        "storage",
        "prober",
        "queue",
        "thumbnailer",
    }
    assert (tmp_path / "data" / "heimdex.db").exists()
    assert httpx.get(server.base_url + "/schema/openapi.json").status_code == 200

    log_lines = [json.loads(line) for line in server.stop().splitlines() if line.startswith("{")]
    requests = [line for line in log_lines if line.get("event") == "request"]
    admin_line = next(
        r for r in requests if r["route"] == "/v1/admin/health" and r["status"] == 200
    )
    assert admin_line["org_id"] == "acme"
    assert admin_line["request_id"]
    assert admin_line["duration_ms"] >= 0


def test_development_secret_starts_with_a_loud_warning(tmp_path: Path) -> None:
    server = start(tmp_path)
    err = server.stop()
    assert "insecure_jwt_secret" in err


def test_production_refuses_the_development_secret(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "heimdex", "serve"],
        cwd=tmp_path,
        env=environment(tmp_path, HEIMDEX_ENV="production"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "HEIMDEX_JWT_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
