"""A worker process's own ``/metrics`` endpoint: a small threaded HTTP server beside the taskiq
worker, which has no HTTP server of its own. The API serves its metrics through Litestar instead.

Same rule as the API's endpoint: open unless a token is configured, then only
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from heimdex.adapters.metrics.prometheus import PrometheusMetrics
from heimdex.domain.bearer import bearer_matches

StartResponse = Callable[..., Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight never holds the worker's shutdown


class _IPv6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A line per scrape (every few seconds) would drown the worker's own log."""


class MetricsServer:
    """A running endpoint; ``close()`` stops it."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, name="heimdex-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    metrics: PrometheusMetrics, host: str, port: int, token: str | None = None
) -> MetricsServer:
    """Serve ``metrics`` at ``http://host:port/metrics`` from a daemon thread. Raises
    ``OSError`` when the port cannot be bound."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the metrics are at /metrics\n"]
        if token and not bearer_matches(environ.get("HTTP_AUTHORIZATION"), token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain")])
            return [b"send the metrics token as Authorization: Bearer <token>\n"]
        body = metrics.render()
        start_response(
            "200 OK",
            [("Content-Type", metrics.content_type), ("Content-Length", str(len(body)))],
        )
        return [body]

    server_class = _IPv6ThreadingServer if ":" in host else _ThreadingServer
    return MetricsServer(
        make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    )
