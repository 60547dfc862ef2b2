"""Every request is one log line with request id, org id, route, status and duration."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from litestar import Litestar
from litestar.testing import AsyncTestClient
from litestar.types import HTTPRequestEvent, Message, Receive, Scope, Send
from structlog.testing import capture_logs

from heimdex.entrypoints.http.request_log import log_request
from heimdex.logs import configure_logging, get_logger
from tests.fixtures.app import TokenFactory, bearer


async def test_request_lines_carry_ids_route_status_and_duration(
    client: AsyncTestClient[Litestar], make_token: TokenFactory
) -> None:
    with capture_logs() as logs:
        await client.get("/health", headers={"X-Request-ID": "req-1"})
        await client.get("/v1/admin/health", headers=bearer(make_token(scopes=["admin"])))
        await client.get("/v1/admin/health")
        await client.get("/missing")
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert [line["status"] for line in lines] == [200, 200, 401, 404]
    health, admin, anonymous, missing = lines
    assert health["request_id"] == "req-1"
    assert health["route"] == "/health"
    assert health["org_id"] is None
    assert admin["org_id"] == "org-a"
    assert admin["route"] == "/v1/admin/health"
    assert anonymous["org_id"] is None
    assert missing["path"] == "/missing"
    assert all(line["duration_ms"] >= 0 and line["method"] == "GET" for line in lines)
    assert len({line["request_id"] for line in lines}) == 4


def test_json_lines_when_asked(capfd: pytest.CaptureFixture[str]) -> None:
    try:
        configure_logging("info", "json")
        get_logger("heimdex.test").info("hello", asset_id="a1")
        err = capfd.readouterr().err
        record = json.loads(err.strip().splitlines()[-1])
        assert record["event"] == "hello"
        assert record["asset_id"] == "a1"
        assert record["level"] == "info"
        assert "timestamp" in record
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()


async def test_a_request_id_is_taken_only_when_all_of_it_is_sane() -> None:
    # Below the HTTP parser: what reaches the app as a header value is taken whole or not at all.
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> HTTPRequestEvent:
        return {"type": "http.request", "body": b"", "more_body": False}

    for given in (b"req-1\n", b"req-1\r\nx"):
        sent.clear()
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"x-request-id", given)],
        }
        await log_request(app, scope, receive, send)  # type: ignore[arg-type]
        start = sent[0]
        assert start["type"] == "http.response.start"
        (answered,) = [v for k, v in start["headers"] if k == b"x-request-id"]
        assert answered != given
        assert len(answered) == 32
