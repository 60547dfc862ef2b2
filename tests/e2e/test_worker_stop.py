"""Stopping `heimdex worker` with SIGTERM, as a deployment's restart does: an idle worker exits
at once; a busy one stops reading, gives its job the grace period, then hands it back so that
another worker finishes it (once, never both at a time) without waiting for a lease or Redis's
redelivery. Real processes, PostgreSQL and a private Redis; and `heimdex serve` on the embedded
default, whose jobs run in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.test_serve import SECRET as SERVE_SECRET
from tests.e2e.test_serve import mint
from tests.e2e.test_serve import start as start_server
from tests.e2e.test_walkthrough import commit_upload, poll_job
from tests.fixtures.processes import Heimdex, wait_until

COUNT = 60
# Far above what a stop takes (well under a second idle); a worker still running past it is
# the slow stop this file is about.
STOP_BOUND_SECONDS = 10.0


def events(deployment: Heimdex, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of the process that logs to ``name``.log."""
    found = []
    for line in (deployment.workdir / f"{name}.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:  # a line two processes wrote into each other
                continue
    return found


def named(deployment: Heimdex, name: str, event: str) -> list[dict[str, Any]]:
    return [e for e in events(deployment, name) if e.get("event") == event]


def wait_started(deployment: Heimdex, name: str, processes: int = 1) -> None:
    wait_until(
        lambda: len(named(deployment, name, "worker_started")) == processes,
        120,
        f"{name}: {processes} worker process(es) did not start",
    )


def consumers(deployment: Heimdex) -> list[Any]:
    client = redis.Redis(host="127.0.0.1", port=deployment.redis.port)
    try:
        queue = deployment.env["HEIMDEX_REDIS_QUEUE_NAME"]
        return list(client.xinfo_consumers(queue, "heimdex-workers"))
    finally:
        client.close()


def stopped_in_time(process: subprocess.Popen[bytes], seconds: float) -> int:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker was still running {seconds} s after SIGTERM") from None


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("processes", [1, 2])
def test_an_idle_worker_exits_at_once_on_sigterm(
    heimdex_deployment: Heimdex, processes: int
) -> None:
    deployment = heimdex_deployment
    worker = deployment.worker("worker", "--processes", str(processes))
    wait_started(deployment, "worker", processes)
    wait_until(
        lambda: (
            sum("Listening started" in e["event"] for e in events(deployment, "worker"))
            == processes
        ),
        30,
        "the worker processes did not read the stream",
    )

    worker.send_signal(signal.SIGTERM)  # to the supervisor only, as `docker stop` does

    assert stopped_in_time(worker, STOP_BOUND_SECONDS) == 0, deployment.logs()
    assert len(named(deployment, "worker", "worker_stopped")) == processes
    assert named(deployment, "worker", "workers_stopped")


@pytest.mark.postgres
@pytest.mark.redis
def test_workers_whose_supervisor_is_killed_stop_rather_than_run_on_orphaned(
    heimdex_deployment: Heimdex,
) -> None:
    # An orchestrator's SIGKILL (or the OOM killer) takes the supervisor alone: its workers
    # used to run on, orphaned, taking jobs from the queue until someone noticed.
    deployment = heimdex_deployment
    supervisor = deployment.worker("worker", "--processes", "2")
    wait_started(deployment, "worker", 2)
    pids = [e["pid"] for e in named(deployment, "worker", "worker_process_started")]
    assert len(pids) == 2

    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait(timeout=STOP_BOUND_SECONDS)

    def gone(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split()[2] == "Z"  # exited, not yet reaped
        except FileNotFoundError:
            return True

    wait_until(lambda: all(gone(pid) for pid in pids), STOP_BOUND_SECONDS, "orphans still run")
    assert len(named(deployment, "worker", "worker_stopped")) == 2


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize(
    ("processes", "grace", "how"),
    [(2, "1", "supervisor"), (1, "600", "twice"), (1, "1", "group")],
    ids=["grace-period-over", "second-signal", "whole-process-group"],
)
def test_a_busy_worker_hands_its_job_back_and_another_finishes_it_once(
    heimdex_deployment: Heimdex, long_clip: Path, processes: int, grace: str, how: str
) -> None:
    """``how`` the SIGTERM comes: to the supervisor alone (``docker stop``, Kubernetes);
    twice, the second ending the grace; to the whole process group (Ctrl-C, a systemd stop),
    which also reaches the job's ffmpeg: a run killed that way is handed back, not failed."""
    deployment = heimdex_deployment
    deployment.env.update(
        HEIMDEX_THUMBNAILER="ffmpeg",
        HEIMDEX_WORKER_SHUTDOWN_GRACE_SECONDS=grace,
        # Neither the lease running out nor a sweep can hand the job over during the test:
        # only the stopping worker's hand-back can.
        HEIMDEX_JOB_LEASE_SECONDS="600",
        HEIMDEX_SWEEP_INTERVAL_SECONDS="3600",
    )
    deployment.serve()
    first = deployment.worker("first", "--processes", str(processes))
    wait_started(deployment, "first", processes)
    token = deployment.token("acme")
    with httpx.Client(
        base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        asset_id = commit_upload(client, long_clip.read_bytes(), "long.mp4")
        accepted = client.post(
            f"/v1/assets/{asset_id}/sidecar",
            json={"thumbnails": {"count": COUNT, "width": 1280}},
        )
        location = accepted.headers["location"]
        job_id = accepted.json()["job_id"]
        wait_until(lambda: named(deployment, "first", "job_started"), 60, "the job did not start")
        deployment.worker("second")  # stopped by the fixture
        wait_started(deployment, "second")
        assert client.get(location).json()["status"] == "running", "the job ended too soon"

        if how == "group":
            os.killpg(first.pid, signal.SIGTERM)
        else:
            first.send_signal(signal.SIGTERM)
        if how == "twice":  # the operator does not want to wait for the grace period
            wait_until(lambda: named(deployment, "first", "worker_stopping"), 30, "no stop")
            first.send_signal(signal.SIGTERM)

        grace_left = 0.0 if how == "twice" else float(grace)
        assert stopped_in_time(first, grace_left + STOP_BOUND_SECONDS) == 0, deployment.logs()
        # Its processes left the consumer group (a stopped worker's name would stay for ever);
        # the second worker's is the one left, if it has read yet.
        assert len(consumers(deployment)) <= 1
        job = poll_job(client, location, seconds=120)

    assert job["status"] == "succeeded", (job["error"], deployment.logs()[-3000:])
    assert job["attempts"] == 2
    [handed_back] = named(deployment, "first", "job_handed_back")
    assert handed_back["job_id"] == job_id
    assert named(deployment, "first", "job_succeeded") == []
    [stopped] = named(deployment, "first", "job_retry_scheduled")
    assert stopped["code"] == "interrupted"
    # The second worker ran it once, and began only after the first had given it up.
    [started] = named(deployment, "second", "job_started")
    assert started["job_id"] == job_id
    assert started["timestamp"] > stopped["timestamp"]
    assert len(named(deployment, "second", "job_succeeded")) == 1

    thumbs = sorted((deployment.workdir / "data/storage/derived/acme").rglob("thumbs/*"))
    assert [p.name for p in thumbs] == [f"{i:04d}.jpg" for i in range(COUNT)]
    sidecars = list((deployment.workdir / "data/storage/derived/acme/sidecars").iterdir())
    assert [p.name for p in sidecars] == [f"{asset_id}.json"]
    assert list((deployment.workdir / "data").rglob("*.part")) == []


def test_the_embedded_default_stops_its_job_at_once_and_runs_it_again_when_restarted(
    tmp_path: Path, long_clip: Path
) -> None:
    # `heimdex serve` without Redis runs jobs in its own process. Stopped mid-job, the job must
    # record itself as queued again, not stay "running" under a lease nobody renews (600 s
    # here) that the next start would have to wait out.
    env = {
        "HEIMDEX_JWT_SECRET": SERVE_SECRET,
        "HEIMDEX_THUMBNAILER": "ffmpeg",
        "HEIMDEX_JOB_LEASE_SECONDS": "600",
    }
    server = start_server(tmp_path, **env)
    token = mint(tmp_path, "--org", "acme")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
        asset_id = commit_upload(client, long_clip.read_bytes(), "long.mp4")
        accepted = client.post(
            f"/v1/assets/{asset_id}/sidecar",
            json={"thumbnails": {"count": COUNT, "width": 1280}},
        )
        location = accepted.headers["location"]
        wait_until(lambda: client.get(location).json()["status"] == "running", 60, "not running")

        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=STOP_BOUND_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"heimdex serve still running: {server.stop()}") from None
        server.stop()

    server = start_server(tmp_path, **env)
    try:
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
            job = poll_job(client, location, seconds=120)
    finally:
        server.stop()
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
