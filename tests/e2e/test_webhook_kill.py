"""`heimdex serve` SIGKILLed while a webhook is in flight: once it is back and the delivery's
lease has run out, the delivery is sent again with the same ``webhook-id`` and verifies."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.e2e.test_serve import Server, start
from tests.fixtures.webhook_receiver import Receiver, verify

SECRET = "serve-test-secret-that-is-at-least-32-bytes"
ENV = {
    "HEIMDEX_JWT_SECRET": SECRET,
    "HEIMDEX_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    # A short timeout makes the lease short (3 timeouts + 5 s): the test waits for it.
    "HEIMDEX_WEBHOOK_TIMEOUT_SECONDS": "1",
    "HEIMDEX_SWEEP_INTERVAL_SECONDS": "0.2",
}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver(hang_seconds=60)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_delivery_cut_by_sigkill_is_sent_again_with_its_id(
    tmp_path: Path, receiver: Receiver, h264_aac_mp4: Path
) -> None:
    headers = {"Authorization": "Bearer " + jwt.encode({"org_id": "acme"}, SECRET, "HS256")}
    first: Server | None = start(tmp_path, **ENV)
    second: Server | None = None
    try:
        assert first is not None
        async with httpx.AsyncClient(base_url=first.base_url, headers=headers) as api:
            webhook = (
                await api.post(
                    "/v1/webhooks",
                    json={"url": receiver.url("/hang-first"), "events": ["asset.created"]},
                )
            ).json()
            data = h264_aac_mp4.read_bytes()
            init = (
                await api.post(
                    "/v1/ingest/init",
                    json={
                        "source_name": "clip.mp4",
                        "content_length": len(data),
                        "content_type": "video/mp4",
                    },
                )
            ).json()
            put = await api.put(init["upload_url"], content=data, headers=init["headers"])
            assert put.status_code == 200, put.text
            commit = await api.post("/v1/ingest/commit", json={"upload_id": init["upload_id"]})
            assert commit.status_code == 201, commit.text
        [cut] = await receiver.wait_for("/hang-first", 1, within=15)
        first.process.send_signal(signal.SIGKILL)  # mid-delivery: its answer never came
        first.process.wait(timeout=10)
        first = None

        second = start(tmp_path, **ENV)
        requests = await receiver.wait_for("/hang-first", 2, within=30)
        again = requests[1]
        assert again.headers["webhook-id"] == cut.headers["webhook-id"]
        payload = verify(again, webhook["secret"])
        assert payload["type"] == "asset.created"
        async with httpx.AsyncClient(base_url=second.base_url, headers=headers) as api:
            listed = await api.get(f"/v1/webhooks/{webhook['webhook_id']}/deliveries")
        [delivery] = listed.json()["items"]
        assert delivery["event_id"] == cut.headers["webhook-id"]
        assert delivery["attempts"] == 2
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
