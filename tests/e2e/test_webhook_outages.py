"""Webhooks on PostgreSQL, Redis and a `heimdex worker` (which delivers), through a Redis restart
and a PostgreSQL crash: every event committed arrives, signed, and none is lost.

The receiver runs on 127.0.0.1 in a thread of its own (this test blocks while it waits).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_walkthrough import commit_upload, poll_job
from tests.fixtures.postgres_cluster import ThrowawayPostgres
from tests.fixtures.processes import Heimdex, PrivateRedis, wait_until
from tests.fixtures.webhook_receiver import Receiver, verify

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class ThreadedReceiver:
    def __init__(self) -> None:
        self.receiver = Receiver()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self.loop).result(10)
        return self.receiver

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _stop(self) -> None:
        await self.receiver.stop()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


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
    deployment.env.update(
        HEIMDEX_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true", HEIMDEX_WEBHOOK_TIMEOUT_SECONDS="2"
    )
    try:
        yield deployment
    finally:
        deployment.stop_all()
        redis.stop()


def test_no_event_is_lost_through_redis_and_postgres_restarts(
    deployment: Heimdex, cluster: ThrowawayPostgres, h264_aac_mp4: Path
) -> None:
    deployment.serve()
    deployment.worker("worker")
    data = h264_aac_mp4.read_bytes()
    token = deployment.token("acme")
    with (
        ThreadedReceiver() as receiver,
        httpx.Client(
            base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client,
    ):
        webhook = client.post(
            "/v1/webhooks",
            json={"url": receiver.url("/ok"), "events": ["asset.created", "asset.ready"]},
        ).json()
        assets = [commit_upload(client, data)]

        deployment.redis.stop()  # deliveries never needed it: they live in the database
        assets.append(commit_upload(client, data))
        deployment.redis.start()

        assets.append(commit_upload(client, data))
        cluster.stop()  # a crash: connections cut mid-whatever
        cluster.start()
        wait_until(
            lambda: client.get("/v1/webhooks").status_code == 200, 30, "the API did not recover"
        )
        assets.append(commit_upload(client, data))
        accepted = client.post(f"/v1/assets/{assets[-1]}/sidecar", json={})
        assert poll_job(client, accepted.headers["location"])["status"] == "succeeded"

        wait_until(
            lambda: {r.headers["webhook-id"] for r in receiver.on("/ok")}.__len__() >= 5,
            60,
            f"not every event arrived: {deployment.logs()}",
        )
    payloads = [verify(r, webhook["secret"]) for r in receiver.on("/ok")]
    created = {p["data"]["asset_id"] for p in payloads if p["type"] == "asset.created"}  # type: ignore[index]
    ready = {p["data"]["asset_id"] for p in payloads if p["type"] == "asset.ready"}  # type: ignore[index]
    assert created == set(assets)
    assert ready == {assets[-1]}
