"""The sender's SSRF guard at delivery time, with a resolver the test controls: a name that
resolves to a forbidden address is refused before any connection, and an allowed one is
connected to at the address that was checked, with the name in ``Host``. Only 127.0.0.1 is
ever connected to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from heimdex.adapters.webhooks.http_sender import HttpxWebhookSender
from tests.fixtures.webhook_receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Resolver:
    """Answers from a table and counts the questions (a rebinding name answers differently
    each time it is asked)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        answers = self.answers[host]
        return answers[min(len(self.asked) - 1, len(answers) - 1)]


FORBIDDEN_ANSWERS = [
    ["127.0.0.1"],
    ["10.1.2.3"],
    ["169.254.169.254"],
    ["fd00:ec2::254"],
    ["::ffff:127.0.0.1"],
    ["0.0.0.0"],  # noqa: S104 - an answer the guard refuses, never bound
    ["224.0.0.1"],
    ["fe80::1"],
    ["8.8.8.8", "192.168.0.1"],  # one bad address among good ones is enough to refuse
]


@pytest.mark.parametrize("answer", FORBIDDEN_ANSWERS)
async def test_a_name_resolving_to_a_forbidden_address_is_refused_unconnected(
    answer: list[str], receiver: Receiver
) -> None:
    resolver = Resolver({"hooks.example.test": [answer]})
    sender = HttpxWebhookSender(timeout=2, allow_http=True, allow_private=False, resolver=resolver)
    try:
        result = await sender.send(f"http://hooks.example.test:{receiver.port}/ok", {}, b"{}")
    finally:
        await sender.aclose()
    assert result.error_code == "webhook_url_forbidden", result
    assert result.status_code is None
    assert resolver.asked == ["hooks.example.test"]
    assert receiver.received == []


async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    receiver: Receiver,
) -> None:
    # A rebinding name: 127.0.0.1 for the check, then somewhere else. The sender asks once
    # and connects where it checked.
    resolver = Resolver({"hooks.example.test": [["127.0.0.1"], ["10.9.9.9"]]})
    sender = HttpxWebhookSender(timeout=2, allow_http=True, allow_private=True, resolver=resolver)
    try:
        url = f"http://hooks.example.test:{receiver.port}/ok?x=1"
        first = await sender.send(url, {"webhook-id": "msg_1"}, b'{"a":1}')
    finally:
        await sender.aclose()
    assert first.error_code is None, first
    assert first.status_code == 204
    assert resolver.asked == ["hooks.example.test"]
    [request] = receiver.received
    assert request.path == "/ok?x=1"
    assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert request.body == b'{"a":1}'


async def test_literal_urls_are_checked_without_resolving(receiver: Receiver) -> None:
    resolver = Resolver({})
    sender = HttpxWebhookSender(timeout=2, allow_http=True, allow_private=False, resolver=resolver)
    try:
        for url in (
            f"http://127.0.0.1:{receiver.port}/ok",
            f"http://2130706433:{receiver.port}/ok",
            f"http://[::ffff:127.0.0.1]:{receiver.port}/ok",
        ):
            result = await sender.send(url, {}, b"{}")
            assert result.error_code == "webhook_url_forbidden", url
        https_only = HttpxWebhookSender(timeout=2, allow_http=False, allow_private=True)
        refused = await https_only.send(f"http://127.0.0.1:{receiver.port}/ok", {}, b"{}")
        assert refused.error_code == "webhook_url_forbidden"
    finally:
        await sender.aclose()
    assert resolver.asked == []
    assert receiver.received == []


async def test_timeouts_and_redirects_are_failures(receiver: Receiver) -> None:
    receiver.hang_seconds = 5
    sender = HttpxWebhookSender(timeout=0.5, allow_http=True, allow_private=True)
    try:
        slow = await sender.send(receiver.url("/hang"), {}, b"{}")
        moved = await sender.send(receiver.url("/redirect"), {}, b"{}")
    finally:
        await sender.aclose()
    assert slow.error_code == "timeout"
    assert moved.error_code == "redirect"
    assert moved.status_code == 302
    assert [r.path for r in receiver.received] == ["/hang", "/redirect"]  # not /elsewhere
