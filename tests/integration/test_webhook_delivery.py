"""Webhook deliveries end to end: the embedded default delivers in-process to a real receiver
on 127.0.0.1, which verifies every request with the ``standardwebhooks`` package. On SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.schemas import webhook_events_schema_v1
from tests.fixtures.app import TokenFactory, bearer, ingest_file, wait_for_job
from tests.fixtures.webhook_receiver import Receiver, verify

EVENT_SCHEMA = json.loads(webhook_events_schema_v1())


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "sweep_interval_seconds": 0.2,
        "webhook_allow_private_networks": True,
    }


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def register(
    client: AsyncTestClient[Litestar], token: str, url: str, **extra: Any
) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={"url": url, **extra}, headers=bearer(token))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def deliveries(
    client: AsyncTestClient[Litestar], token: str, webhook: dict[str, Any]
) -> list[dict[str, Any]]:
    url = f"/v1/webhooks/{webhook['webhook_id']}/deliveries"
    items: list[dict[str, Any]] = (await client.get(url, headers=bearer(token))).json()["items"]
    return items


async def settled(
    client: AsyncTestClient[Litestar], token: str, webhook: dict[str, Any], status: str
) -> list[dict[str, Any]]:
    """The endpoint's deliveries once every one has ``status`` (the receiver may have the
    request a moment before the outcome is recorded)."""
    deadline = time.monotonic() + 10
    while True:
        listed = await deliveries(client, token, webhook)
        if listed and {d["status"] for d in listed} == {status}:
            return listed
        assert time.monotonic() < deadline, listed
        await receiver_pause()


async def test_every_event_arrives_signed_valid_and_once(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    receiver: Receiver,
    h264_aac_mp4: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = make_token(org_a)
    webhook = await register(client, token, receiver.url("/ok"))
    asset = await ingest_file(client, token, h264_aac_mp4)
    accepted = await client.post(
        f"/v1/assets/{asset['asset_id']}/sidecar", json={}, headers=bearer(token)
    )
    job = await wait_for_job(client, token, accepted.headers["location"])
    assert job["status"] == "succeeded"
    received = await receiver.wait_for("/ok", 3, within=20)
    payloads = [verify(r, webhook["secret"]) for r in received]
    for payload in payloads:
        jsonschema.validate(payload, EVENT_SCHEMA)
    by_type = {p["type"]: p["data"] for p in payloads}
    assert set(by_type) == {"asset.created", "asset.ready", "job.succeeded"}
    ready = by_type["asset.ready"]
    assert isinstance(ready, dict)
    assert ready["asset_id"] == asset["asset_id"]
    assert ready["job_id"] == job["job_id"]
    assert ready["links"]["sidecar"] == f"/v1/assets/{asset['asset_id']}/sidecar"
    ids = [r.headers["webhook-id"] for r in received]
    assert len(set(ids)) == 3  # one id per event
    listed = await settled(client, token, webhook, "succeeded")
    assert {d["event_id"] for d in listed} == set(ids)
    assert all(d["attempts"] == 1 and d["last_status_code"] == 204 for d in listed)

    deleted = await client.delete(f"/v1/assets/{asset['asset_id']}", headers=bearer(token))
    assert deleted.status_code == 204
    gone = await receiver.wait_for("/ok", 4, within=10)
    assert verify(gone[-1], webhook["secret"])["type"] == "asset.deleted"

    # Every delivery is logged by event, endpoint and attempt; the secret never is.
    logged = capsys.readouterr().out
    assert logged.count("webhook_delivered") >= 3
    for event_id in ids:
        assert event_id in logged
    assert webhook["secret"].removeprefix("whsec_") not in logged
    # Counted by type and outcome, with no organisation or endpoint in a label.
    metrics = (await client.get("/metrics")).text
    assert 'heimdex_webhook_deliveries_total{event_type="asset.ready",outcome="succeeded"} 1.0' in (
        metrics
    )
    assert "heimdex_webhook_pending_deliveries" in metrics
    assert "heimdex_webhook_oldest_pending_age_seconds" in metrics
    assert org_a not in metrics
    assert webhook["webhook_id"] not in metrics


async def test_a_receiver_down_for_a_while_gets_everything_once_back(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    receiver: Receiver,
    h264_aac_mp4: Path,
) -> None:
    token = make_token(org_a)
    webhook = await register(client, token, receiver.url("/ok"), events=["asset.created"])
    await receiver.stop()
    assets = [await ingest_file(client, token, h264_aac_mp4) for _ in range(2)]
    # Each first attempt fails (nothing listens) and is scheduled again in about 5 s.
    deadline = time.monotonic() + 10
    while True:
        listed = await deliveries(client, token, webhook)
        if len(listed) == 2 and all(d["last_error_code"] for d in listed):
            break
        assert time.monotonic() < deadline, listed
        await receiver_pause()
    assert {d["status"] for d in listed} == {"pending"}
    assert {d["last_error_code"] for d in listed} == {"connection_error"}
    assert all(d["next_attempt_at"] for d in listed)
    await receiver.start()
    received = await receiver.wait_for("/ok", 2, within=15)
    payloads = [verify(r, webhook["secret"]) for r in received]
    assert sorted(p["data"]["asset_id"] for p in payloads) == sorted(  # type: ignore[index]
        a["asset_id"] for a in assets
    )
    listed = await settled(client, token, webhook, "succeeded")
    # The retry carried the id of the attempt that failed.
    assert {r.headers["webhook-id"] for r in received} == {d["event_id"] for d in listed}
    assert all(d["attempts"] == 2 for d in listed)


async def receiver_pause() -> None:
    import anyio

    await anyio.sleep(0.1)


async def test_a_hanging_receiver_delays_neither_other_endpoints_nor_jobs(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    org_b: str,
    receiver: Receiver,
    h264_aac_mp4: Path,
) -> None:
    receiver.hang_seconds = 60  # past the 10 s timeout: its attempts are in flight all test
    slow, fast = make_token(org_a), make_token(org_b)
    await register(client, slow, receiver.url("/hang"))
    await register(client, fast, receiver.url("/ok"))
    for _ in range(3):  # a backlog on the slow endpoint, more than its share of slots
        await ingest_file(client, slow, h264_aac_mp4)
    await receiver.wait_for("/hang", 2, within=10)
    hung_since = time.perf_counter()

    asset = await ingest_file(client, fast, h264_aac_mp4)
    accepted = await client.post(
        f"/v1/assets/{asset['asset_id']}/sidecar", json={}, headers=bearer(fast)
    )
    job = await wait_for_job(client, fast, accepted.headers["location"], seconds=30)
    assert job["status"] == "succeeded"
    arrived = await receiver.wait_for("/ok", 3, within=20)
    took = max(r.at for r in arrived) - hung_since
    hanging = time.perf_counter() - hung_since
    # The slow endpoint's requests are all still unanswered, never more than its share.
    assert len(receiver.on("/hang")) == 2
    # Everything for the other organisation (and its job) got through meanwhile: well inside
    # the time the slow endpoint has been hanging (generous: the machine is shared).
    print(f"fast endpoint: {took:.2f} s while the slow one hung {hanging:.2f} s")
    assert hanging < 10  # its attempts (10 s timeout) had not ended: nobody waited for them
    assert took <= hanging


async def test_an_organisation_with_many_hanging_endpoints_holds_only_its_share(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    org_b: str,
    receiver: Receiver,
    h264_aac_mp4: Path,
) -> None:
    receiver.hang_seconds = 60  # past the 10 s timeout: its attempts are in flight all test
    greedy, quiet = make_token(org_a), make_token(org_b)
    # Three endpoints with two slots each would take six; the organisation's cap is four.
    hanging = [f"/hang/{n}" for n in range(3)]
    for path in hanging:
        await register(client, greedy, receiver.url(path))
    await register(client, quiet, receiver.url("/ok"))
    for _ in range(3):
        await ingest_file(client, greedy, h264_aac_mp4)

    def in_flight() -> int:
        return sum(len(receiver.on(path)) for path in hanging)

    for _ in range(100):
        if in_flight() >= 4:
            break
        await receiver_pause()
    hung_since = time.perf_counter()
    await ingest_file(client, quiet, h264_aac_mp4)
    arrived = await receiver.wait_for("/ok", 1, within=20)
    took = arrived[0].at - hung_since
    held = time.perf_counter() - hung_since
    print(f"quiet organisation: {took:.2f} s while the greedy one held {in_flight()} slots")
    assert in_flight() == 4
    assert held < 10  # the greedy organisation's attempts had not timed out: nobody waited
    assert took <= held


async def test_retries_keep_the_webhook_id_and_a_410_disables_the_endpoint(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    receiver: Receiver,
    h264_aac_mp4: Path,
) -> None:
    token = make_token(org_a)
    failing = await register(client, token, receiver.url("/fail"), events=["asset.created"])
    gone = await register(client, token, receiver.url("/gone"), events=["asset.created"])
    moved = await register(client, token, receiver.url("/redirect"), events=["asset.created"])
    await ingest_file(client, token, h264_aac_mp4)
    await receiver.wait_for("/fail", 1, within=10)
    await receiver.wait_for("/gone", 1, within=10)
    await receiver.wait_for("/redirect", 1, within=10)

    deadline = time.monotonic() + 10
    while not (failed := (await deliveries(client, token, failing))[0])["last_status_code"]:
        assert time.monotonic() < deadline
        await receiver_pause()
    assert failed["status"] == "pending"
    assert failed["last_status_code"] == 500
    assert failed["last_error_code"] == "http_error"
    retried = await client.post(
        f"/v1/webhooks/{failing['webhook_id']}/deliveries/{failed['delivery_id']}/retry",
        headers=bearer(token),
    )
    assert retried.status_code == 200, retried.text
    again = await receiver.wait_for("/fail", 2, within=10)
    assert again[0].headers["webhook-id"] == again[1].headers["webhook-id"] == failed["event_id"]
    for request in again:
        verify(request, failing["secret"])

    [redirected] = await settled(client, token, moved, "pending")
    assert redirected["last_status_code"] == 302
    assert redirected["last_error_code"] == "redirect"
    assert len(receiver.on("/elsewhere")) == 0

    assert len(await settled(client, token, gone, "failed")) == 1
    endpoint = (
        await client.get(f"/v1/webhooks/{gone['webhook_id']}", headers=bearer(token))
    ).json()
    assert endpoint["enabled"] is False
    assert "410" in endpoint["disabled_reason"]
