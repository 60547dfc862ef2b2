"""Metrics across real processes: `heimdex worker --processes 2` serves one `/metrics` per
process (port + N) with the jobs it ran, and the API's `/metrics` has the requests and the queue
depth. PostgreSQL and a private Redis."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_walkthrough import commit_upload, poll_job
from tests.fixtures.processes import Heimdex, free_port, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
TOKEN = "e2e-metrics-token"


def two_free_ports() -> int:
    """A port whose next one is free as well."""
    for _ in range(50):
        base = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise AssertionError("no two consecutive free ports")


def job_runs(url: str) -> float:
    """Sidecar runs that succeeded, as the endpoint at ``url`` counts them."""
    response = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    response.raise_for_status()
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "heimdex_job_duration_seconds_count"
        and sample.labels == {"kind": "sidecar", "outcome": "succeeded"}
    )


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 401  # the token is required
    except httpx.TransportError:
        return False


def test_each_worker_process_serves_the_jobs_it_ran(
    heimdex_deployment: Heimdex, h264_aac_mp4: Path
) -> None:
    deployment = heimdex_deployment
    base = two_free_ports()
    deployment.env["HEIMDEX_WORKER_METRICS_PORT"] = str(base)
    deployment.env["HEIMDEX_METRICS_TOKEN"] = TOKEN
    deployment.serve()
    deployment._spawn("worker", "--processes", "2", log="workers.log")
    workers = [f"http://127.0.0.1:{base + n}/metrics" for n in range(2)]
    for url in workers:
        wait_until(lambda url=url: answers(url), 60, f"no worker metrics at {url}")

    token = deployment.token("acme")
    with httpx.Client(
        base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        asset_id = commit_upload(client, h264_aac_mp4.read_bytes())
        accepted = client.post(f"/v1/assets/{asset_id}/sidecar", json={})
        job = poll_job(client, accepted.headers["location"])
        assert job["status"] == "succeeded", deployment.logs()

    # Exactly one worker process ran it; the API ran no job (the Redis backend).
    assert sorted(job_runs(url) for url in workers) == [0, 1]
    assert job_runs(f"{deployment.base_url}/metrics") == 0
    api = httpx.get(
        f"{deployment.base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    ).text
    assert 'heimdex_job_queue_depth{status="queued"} 0.0' in api
    assert 'route="/v1/assets/{asset_id}/sidecar",status="202"' in api
