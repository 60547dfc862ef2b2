"""``HttpxWebhookSender``: one signed POST to a receiver, without becoming a proxy into the
operator's network.

The receiver's name is resolved here, at delivery time; every address it resolves to is checked
(``domain/webhook_urls.py``) and the request goes to the first one that was checked — the URL
names that address, ``Host`` (and, for https, the TLS server name, which the certificate is
verified against) name the host — so a second resolution can never send it elsewhere (DNS
rebinding). Redirects are not followed; the whole attempt is bounded by the timeout; at most
1 KB of the answer is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import anyio
import httpx

from heimdex.domain.errors import WebhookUrlForbidden
from heimdex.domain.ports import WebhookResponse
from heimdex.domain.webhook_urls import (
    IPAddress,
    WebhookTarget,
    forbidden_reason,
    parse_webhook_url,
)
from heimdex.domain.webhooks import MAX_ERROR_BYTES

#: host name and port -> the addresses it resolves to
Resolver = Callable[[str, int], Awaitable[list[str]]]
_MAX_CLIENTS = 64


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``getaddrinfo`` answers, in its order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HttpxWebhookSender:
    """The ``WebhookSender`` port over httpx, with the SSRF guard."""

    def __init__(
        self,
        *,
        timeout: float,
        allow_http: bool,
        allow_private: bool,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._timeout = timeout
        self._allow_http = allow_http
        self._allow_private = allow_private
        self._resolver = resolver
        # One client per (host, address, port): connections are kept alive, and one opened
        # with one host's TLS server name is never reused for another host on that address.
        self._clients: OrderedDict[tuple[str, str, int, str], httpx.AsyncClient] = OrderedDict()

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> WebhookResponse:
        try:
            target = parse_webhook_url(url, allow_http=self._allow_http)
        except WebhookUrlForbidden as exc:
            return WebhookResponse(status_code=None, error_code=exc.code, detail=exc.message)
        try:
            with anyio.fail_after(self._timeout):
                address = await self._checked_address(target.host, target.port, target.literal)
                if isinstance(address, WebhookResponse):
                    return address
                return await self._post(target, address, headers, body)
        except TimeoutError:
            return WebhookResponse(
                status_code=None,
                error_code="timeout",
                detail=f"no answer within {self._timeout:g} s",
            )

    async def _checked_address(
        self, host: str, port: int, literal: IPAddress | None
    ) -> IPAddress | WebhookResponse:
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                addresses = [ipaddress.ip_address(a) for a in await self._resolver(host, port)]
            except (OSError, ValueError) as exc:
                return WebhookResponse(
                    status_code=None, error_code="dns_error", detail=f"{host}: {exc}"
                )
            if not addresses:
                return WebhookResponse(
                    status_code=None, error_code="dns_error", detail=f"{host}: no address"
                )
        if not self._allow_private:
            for address in addresses:
                reason = forbidden_reason(address)
                if reason is not None:
                    return WebhookResponse(
                        status_code=None,
                        error_code=WebhookUrlForbidden.code,
                        detail=f"{host} resolves to a {reason} address ({address})",
                    )
        return addresses[0]

    async def _post(
        self, target: WebhookTarget, address: IPAddress, headers: dict[str, str], body: bytes
    ) -> WebhookResponse:
        host = f"[{address}]" if address.version == 6 else str(address)
        url = f"{target.scheme}://{host}:{target.port}{target.target}"
        extensions: dict[str, str] = {}
        if target.scheme == "https" and target.literal is None:
            extensions["sni_hostname"] = target.host
        client = self._client(target.host, str(address), target.port, target.scheme)
        try:
            request = client.build_request(
                "POST",
                url,
                content=body,
                headers={**headers, "host": target.host_header},
                extensions=extensions,
            )
            response = await client.send(request, stream=True)
            try:
                detail = await _read_start(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            return WebhookResponse(
                status_code=None,
                error_code="connection_error",
                detail=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_BYTES],
            )
        status = response.status_code
        if 200 <= status < 300:
            return WebhookResponse(status_code=status, error_code=None, detail=detail)
        if 300 <= status < 400:
            location = response.headers.get("location", "")
            return WebhookResponse(
                status_code=status,
                error_code="redirect",
                detail=f"redirects are not followed (Location: {location})"[:MAX_ERROR_BYTES],
            )
        return WebhookResponse(status_code=status, error_code="http_error", detail=detail)

    def _client(self, host: str, address: str, port: int, scheme: str) -> httpx.AsyncClient:
        key = (host, address, port, scheme)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(self._timeout),
            trust_env=False,  # never through a proxy the environment names
        )
        self._clients[key] = client
        while len(self._clients) > _MAX_CLIENTS:
            _, oldest = self._clients.popitem(last=False)
            # Closed in the background: a request may still be finishing on it.
            asyncio.get_running_loop().create_task(oldest.aclose())
        return client

    async def aclose(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()


async def _read_start(response: httpx.Response) -> str:
    """At most ``MAX_ERROR_BYTES`` of the answer's body, as text."""
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= MAX_ERROR_BYTES:
            break
    return data[:MAX_ERROR_BYTES].decode(errors="replace")
