"""PostgreSQL goes away under a running `heimdex serve` and `heimdex worker`, then comes back.

While it is down every route that needs it answers 503 ``database_unavailable`` with a
``Retry-After`` (never a 500), liveness still answers, and the admin health report names the
database. Once it is back the very next request works — no restart. The worker lives through
the outage: a job whose message reaches it meanwhile waits for the database and then runs (once),
and new jobs run on it afterwards. The cluster is the test's own (initdb + pg_ctl), stopped
with ``pg_ctl stop -m immediate``: connections are cut as in a crash.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from heimdex.adapters.queue.redis import RedisJobQueue, build_redis_broker
from heimdex.bootstrap import build
from heimdex.settings import Settings
from tests.e2e.test_walkthrough import commit_upload, poll_job
from tests.fixtures.postgres_cluster import ThrowawayPostgres
from tests.fixtures.processes import SECRET, Heimdex, PrivateRedis, free_port, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def cluster() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def deployment(tmp_path: Path, cluster: ThrowawayPostgres) -> Iterator[Heimdex]:
    redis = PrivateRedis(tmp_path)
    redis.start()
    deployment = Heimdex(tmp_path, cluster.runtime_url, redis)
    deployment.env["HEIMDEX_JOB_REDELIVER_SECONDS"] = "2"
    try:
        yield deployment
    finally:
        deployment.stop_all()
        redis.stop()


async def kick(deployment: Heimdex, job_id: str) -> None:
    queue = RedisJobQueue(
        build_redis_broker(
            deployment.redis.url, queue_name=deployment.env["HEIMDEX_REDIS_QUEUE_NAME"]
        )
    )
    await queue.startup()
    try:
        await queue.enqueue(uuid.UUID(job_id))
    finally:
        await queue.shutdown()


def assert_database_unavailable(response: httpx.Response) -> None:
    request = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == 503, (request, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), request
    assert response.json()["code"] == "database_unavailable", (request, response.text)
    assert int(response.headers["retry-after"]) > 0, request


def test_a_database_outage_answers_503_with_retry_after_and_recovers_without_restart(
    deployment: Heimdex, cluster: ThrowawayPostgres, h264_aac_mp4: Path
) -> None:
    server = deployment.serve()
    worker = deployment.worker("worker")
    token, admin = deployment.token("acme"), deployment.token("ops", "admin")
    data = h264_aac_mp4.read_bytes()
    with httpx.Client(
        base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        asset_id = commit_upload(client, data)
        first = client.post(f"/v1/assets/{asset_id}/sidecar", json={})
        assert poll_job(client, first.headers["location"])["status"] == "succeeded"
        slot = client.post(
            "/v1/ingest/init",
            json={"source_name": "b.mp4", "content_type": "video/mp4", "content_length": len(data)},
        ).json()
        # A job accepted while Redis is down waits in its row (the outbox) for the sweep.
        deployment.redis.stop()
        waiting = client.post(f"/v1/assets/{asset_id}/sidecar", json={"force": True})
        assert waiting.status_code == 202, waiting.text

        cluster.stop()
        deployment.redis.start()
        init = {"source_name": "c.mp4", "content_type": "video/mp4", "content_length": 10}
        answers = [
            client.get("/v1/assets"),  # the pool's connections died with the server
            client.get("/v1/assets"),  # a new connection is refused
            client.get(f"/v1/assets/{asset_id}"),
            client.get(f"/v1/assets/{asset_id}/sidecar"),
            client.get(f"/v1/assets/{asset_id}/thumbnails"),
            client.get(f"/v1/jobs/{uuid.uuid4()}"),
            client.post("/v1/ingest/init", json=init),
            client.post("/v1/ingest/init", json=init, headers={"Idempotency-Key": "k-1"}),
            client.post("/v1/ingest/commit", json={"upload_id": slot["upload_id"]}),
            client.post(f"/v1/assets/{asset_id}/sidecar", json={}),
            client.post(
                f"/v1/assets/{asset_id}/sidecar", json={}, headers={"Idempotency-Key": "k-2"}
            ),
            client.delete(f"/v1/assets/{asset_id}"),
            httpx.put(slot["upload_url"], content=data, headers=slot["headers"]),
        ]
        for answer in answers:
            assert_database_unavailable(answer)
        assert client.get("/health").status_code == 200  # liveness needs no database
        health = client.get("/v1/admin/health", headers={"Authorization": f"Bearer {admin}"})
        assert health.status_code == 503, health.text
        assert int(health.headers["retry-after"]) > 0
        checks = {check["name"]: check for check in health.json()["checks"]}
        assert checks["database"]["ok"] is False
        assert checks["database"]["transient"] is True
        assert checks["queue"]["ok"] is True

        # Its message reaches the worker while the database is still down (as a sweep elsewhere
        # would send it): the worker waits for the database instead of dropping it.
        asyncio.run(kick(deployment, waiting.json()["job_id"]))
        wait_until(
            lambda: "job_waiting_for_database" in (deployment.workdir / "worker.log").read_text(),
            15,
            "the worker did not wait for the database",
        )

        cluster.start()
        listed = client.get("/v1/assets")  # the first request after it is back works
        assert listed.status_code == 200, listed.text
        assert [item["asset_id"] for item in listed.json()["items"]] == [asset_id]
        health = client.get("/v1/admin/health", headers={"Authorization": f"Bearer {admin}"})
        assert health.status_code == 200, health.text
        job = poll_job(client, waiting.headers["location"], seconds=60)
        assert (job["status"], job["attempts"]) == ("succeeded", 1), (job, deployment.logs())
        # The worker lived through it: a new job runs on it.
        again = client.post(f"/v1/assets/{asset_id}/sidecar", json={"force": True})
        assert again.status_code == 202, again.text
        job = poll_job(client, again.headers["location"], seconds=60)
        assert job["status"] == "succeeded", (job, deployment.logs())

    assert server.poll() is None
    assert worker.poll() is None
    logs = deployment.logs()
    assert '"status": 500' not in logs, logs
    assert "unhandled_error" not in logs, logs
    assert "restarted with pid" not in (deployment.workdir / "worker.log").read_text()


async def test_a_worker_process_started_while_the_database_is_down_waits_for_it(
    cluster: ThrowawayPostgres, tmp_path: Path
) -> None:
    # Imported here: the worker module builds its broker from the environment when imported.
    from heimdex.entrypoints.worker import start_when_database_answers

    cluster.stop()
    services = build(
        Settings.from_flat(
            data_dir=tmp_path / "data",
            jwt_secret=SECRET,
            database_url=cluster.runtime_url,
            job_queue_backend="redis",
            redis_url=f"redis://127.0.0.1:{free_port()}/0",  # down too: only a warning
        )
    )
    try:
        with capture_logs() as logs:
            starting = asyncio.create_task(start_when_database_answers(services))
            await asyncio.sleep(1.5)
            assert not starting.done()  # neither started nor dead: waiting
            assert any(line["event"] == "waiting_for_database" for line in logs)
            await anyio.to_thread.run_sync(cluster.start)
            await asyncio.wait_for(starting, 30)
    finally:
        await services.aclose()
