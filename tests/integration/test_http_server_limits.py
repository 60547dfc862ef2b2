"""The guarded uvicorn protocol in-process, against a bare ASGI app: what it answers at each
limit, and what it lets through (a request just under the header cap, pipelined requests)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from heimdex.entrypoints.http.server import ConnectionLimits, guarded_protocol

REQUEST = b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n"


class App:
    """Answers ``ok``; ``/slow`` only once released, so its connection stays busy."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            await self.release.wait()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(app: App, **overrides: Any) -> AsyncIterator[int]:
    settings: dict[str, Any] = {
        "max_header_bytes": 65536,
        "header_timeout_seconds": 10.0,
        "keep_alive_seconds": 5.0,
        "max_connections": 100,
    }
    limits = ConnectionLimits(**(settings | overrides))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=guarded_protocol(limits),
            lifespan="off",
            log_config=None,
            access_log=False,
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # uvicorn says it started with a flag only
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    headers = {
        k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 2) == b""
    except ConnectionError:
        return True


async def test_past_the_cap_a_new_connection_takes_the_place_of_the_longest_idle() -> None:
    async with serving(App(), max_connections=2) as port:
        oldest, _ = await connect(port)
        await asyncio.sleep(0.05)
        newer, newer_writer = await connect(port)
        await asyncio.sleep(0.05)
        reader, writer = await connect(port)
        writer.write(REQUEST % (b"", b""))
        assert (await answer(reader))[0] == 200
        assert await closed(oldest)
        newer_writer.write(REQUEST % (b"", b""))
        assert (await answer(newer))[0] == 200


async def test_past_the_cap_with_every_connection_busy_a_new_one_is_refused_with_503() -> None:
    app = App()
    async with serving(app, max_connections=2) as port:
        busy = [await connect(port) for _ in range(2)]
        for _, writer in busy:
            writer.write(REQUEST % (b"slow", b""))
        await asyncio.sleep(0.1)
        reader, _ = await connect(port)
        status, headers, body = await answer(reader)
        assert (status, headers["connection"], headers["retry-after"]) == (503, "close", "1")
        assert json.loads(body)["code"] == "service_unavailable"
        assert await closed(reader)
        app.release.set()
        for busy_reader, _ in busy:
            assert (await answer(busy_reader))[0] == 200
        reader, writer = await connect(port)
        writer.write(REQUEST % (b"", b""))
        assert (await answer(reader))[0] == 200


async def test_a_head_past_the_cap_is_answered_431_and_closed() -> None:
    async with serving(App(), max_header_bytes=1024) as port:
        reader, writer = await connect(port)
        writer.write(REQUEST % (b"", b"X-Big: " + b"a" * 2000 + b"\r\n"))
        status, headers, body = await answer(reader)
        assert (status, headers["connection"]) == (431, "close")
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["code"] == "request_headers_too_large"
        assert await closed(reader)
        # A head that never ends is cut off once past the cap, not buffered until it does.
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        for _ in range(3):
            writer.write(b"a" * 500)
            await writer.drain()
            await asyncio.sleep(0.05)
        assert (await answer(reader))[0] == 431
        assert await closed(reader)


async def test_heads_under_the_cap_pass_one_by_one_and_pipelined() -> None:
    async with serving(App(), max_header_bytes=1024) as port:
        reader, writer = await connect(port)
        under = b"X-Fits: " + b"a" * 900 + b"\r\n"
        for _ in range(3):  # keep-alive: each head is counted on its own
            writer.write(REQUEST % (b"", under))
            assert (await answer(reader))[0] == 200
        writer.write((REQUEST % (b"", b"X-Half: " + b"a" * 500 + b"\r\n")) * 4)
        for _ in range(4):
            assert (await answer(reader))[0] == 200


async def test_a_head_still_arriving_at_the_deadline_is_answered_408() -> None:
    async with serving(App(), header_timeout_seconds=0.3) as port:
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        status, _, body = await answer(reader)
        assert status == 408
        assert json.loads(body)["code"] == "request_timeout"
        assert await closed(reader)
        silent, _ = await connect(port)
        assert await closed(silent)


async def test_blank_lines_between_requests_do_not_hold_a_connection() -> None:
    async with serving(App(), header_timeout_seconds=0.5, keep_alive_seconds=5.0) as port:
        reader, writer = await connect(port)
        writer.write(REQUEST % (b"", b""))
        assert (await answer(reader))[0] == 200
        for _ in range(20):  # the parser skips these; uvicorn's keep-alive timer stops at each
            if writer.is_closing() or reader.at_eof():
                break
            writer.write(b"\r\n")
            await asyncio.sleep(0.1)
        assert await closed(reader)
