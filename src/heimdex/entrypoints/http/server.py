"""How `heimdex serve` holds its connections: uvicorn's httptools protocol plus the limits it lacks.

uvicorn with httptools parses fast but bounds nothing before a request reaches the app: a header
may grow without end (the parser buffers it all), a connection that never finishes its headers is
never timed out, and connections are not counted, so idle ones exhaust the process's descriptors.
``guarded_protocol`` subclasses that protocol (same parser, same throughput) to add:

- a cap on the bytes of a request's head (request line and headers): past it, 431 and close;
- a header-read deadline from the first byte a request could send: past it, 408 and close;
- a cap on open connections: a new connection past it takes the place of the connection that has
  waited longest for a request (idle keep-alive or a head still arriving: what a flood consists
  of), and only when every connection has a request in progress is it refused (503, close).

uvicorn's own keep-alive timeout closes a connection idle between requests.

``serve_workers`` runs N such servers as N processes on one listening socket (bound once, then
forked): each process builds its own app, services and pools and applies every limit above to
the connections it accepted; the kernel hands each new connection to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar

import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from heimdex.entrypoints.http.problems import PROBLEM_JSON, Problem
from heimdex.logs import get_logger

log = get_logger(__name__)

# Descriptors the process needs besides client connections: the database pool, the decode pool's
# pipes, files being read or written, logs. The connection cap is kept this far below the limit.
RESERVED_DESCRIPTORS = 128
# At most one "connections_at_cap" warning per this many seconds: a flood must not flood the log.
_CAP_LOG_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold of the server before its request reaches the app."""

    max_header_bytes: int
    header_timeout_seconds: float
    keep_alive_seconds: float
    max_connections: int


@dataclass
class _Connections:
    """One server's connections: how many are open, which wait for a request (oldest first)."""

    open: int = 0
    waiting: dict[GuardedProtocol, None] = field(default_factory=dict)
    reclaimed: int = 0
    refused: int = 0
    logged_at: float = 0.0

    def note_cap(self, limit: int) -> None:
        now = time.monotonic()
        if now - self.logged_at >= _CAP_LOG_INTERVAL_SECONDS:
            self.logged_at = now
            log.warning(
                "connections_at_cap",
                max_connections=limit,
                reclaimed=self.reclaimed,
                refused=self.refused,
                hint="raise HEIMDEX_HTTP_MAX_CONNECTIONS if these are real clients",
            )


def _problem(status: HTTPStatus, code: str, detail: str, extra: bytes = b"") -> bytes:
    body = msgspec.json.encode(
        Problem(
            type=f"urn:heimdex:problem:{code}",
            title=status.phrase,
            status=status.value,
            code=code,
            detail=detail,
        )
    )
    return (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header cap, a header deadline and a connection cap."""

    limits: ClassVar[ConnectionLimits]
    registry: ClassVar[_Connections]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counted = False
        self._in_head = True  # no request's headers complete since the last one's
        self._head_bytes = 0
        self._began = False  # a request has started arriving: a deadline then earns a 408
        self._answered = False  # by this protocol (431, 408, 503): the parser's rest is ignored
        self._header_timer: asyncio.TimerHandle | None = None

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        registry = self.registry
        registry.open += 1
        self._counted = True
        if registry.open > self.limits.max_connections and not self._reclaim():
            registry.refused += 1
            registry.note_cap(self.limits.max_connections)
            self._answer_and_close(
                _problem(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "The server holds as many connections as it accepts; try again shortly.",
                    b"retry-after: 1\r\n",
                )
            )
            return
        self._wait_for_request()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def _reclaim(self) -> bool:
        """Close the connection that has waited longest for a request, to make room."""
        registry = self.registry
        victim = next(iter(registry.waiting), None)
        if victim is None:
            return False
        victim._release()
        victim.transport.close()
        registry.reclaimed += 1
        registry.note_cap(self.limits.max_connections)
        return True

    def _release(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.registry.waiting.pop(self, None)
        if self._counted:
            self._counted = False
            self.registry.open -= 1

    def _wait_for_request(self) -> None:
        # Re-inserted at the end: the dict's order is the order connections began to wait.
        self.registry.waiting.pop(self, None)
        self.registry.waiting[self] = None

    def _answer_and_close(self, response: bytes) -> None:
        self._answered = True
        self._release()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    # -- the request head --------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_seconds, self._header_timeout
            )

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self._began:
            # Connected and said nothing: nobody to answer.
            self._release()
            self.transport.close()
            return
        self._answer_and_close(
            _problem(
                HTTPStatus.REQUEST_TIMEOUT,
                "request_timeout",
                "The request's headers did not arrive in time.",
            )
        )

    def _headers_too_large(self) -> None:
        self._answer_and_close(
            _problem(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_headers_too_large",
                f"The request line and headers may take at most "
                f"{self.limits.max_header_bytes} bytes.",
            )
        )

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        # Bytes of a head still arriving are counted as they come (the parser would buffer them
        # all); a head that completes within one read is measured in on_headers_complete.
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if not self._in_head or self._answered:
            return
        if self._head_bytes > self.limits.max_header_bytes:
            self._headers_too_large()
        else:
            # Armed only for a head that did not arrive whole: most never need the timer.
            self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._began = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._began = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.registry.waiting.pop(self, None)
        if self._answered:
            return
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head > self.limits.max_header_bytes:
            self._headers_too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._answered:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and not self.transport.is_closing() and self._counted:
            self._wait_for_request()
            if not self._in_head:
                # What arrives now is the next head, even bytes the parser skips before a
                # request line (uvicorn stops its keep-alive timer at any byte, so a client
                # trickling blank lines would otherwise hold the connection for ever).
                self._in_head = True
                self._head_bytes = 0


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """A protocol class for one server: its limits and its own count of connections."""
    return type(
        "HeimdexHttpProtocol",
        (GuardedProtocol,),
        {"limits": limits, "registry": _Connections()},
    )


def raise_open_file_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; answer the soft limit.

    The usual soft default (1,024) is a fraction of what the hard limit allows, and a server out
    of descriptors fails every client at once.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # an unlimited hard limit some kernels refuse
            log.warning("open_file_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    return soft


def effective_limits(limits: ConnectionLimits, open_files: int) -> ConnectionLimits:
    """The connection cap, lowered if needed to stay ``RESERVED_DESCRIPTORS`` below the
    descriptor limit: a cap the process cannot reach would not protect it."""
    room = max(1, open_files - RESERVED_DESCRIPTORS)
    if open_files == resource.RLIM_INFINITY or limits.max_connections <= room:
        return limits
    log.warning(
        "connection_cap_lowered",
        configured=limits.max_connections,
        effective=room,
        open_file_limit=open_files,
        hint="raise the hard RLIMIT_NOFILE (ulimit -Hn) or lower HEIMDEX_HTTP_MAX_CONNECTIONS",
    )
    return ConnectionLimits(
        max_header_bytes=limits.max_header_bytes,
        header_timeout_seconds=limits.header_timeout_seconds,
        keep_alive_seconds=limits.keep_alive_seconds,
        max_connections=room,
    )


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    limits: ConnectionLimits,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Run ``app`` on uvicorn (uvloop, httptools) with ``limits`` until stopped; on ``sockets``
    (already listening) instead of binding ``host:port`` when given."""
    limits = effective_limits(limits, raise_open_file_limit())
    log.info(
        "connection_limits",
        max_connections=limits.max_connections,
        max_header_bytes=limits.max_header_bytes,
        header_timeout_seconds=limits.header_timeout_seconds,
        keep_alive_seconds=limits.keep_alive_seconds,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits),
        ws="none",  # no WebSocket routes; an upgrade would hand the connection past the count
        timeout_keep_alive=limits.keep_alive_seconds,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
    )
    # Everything built so far (the app, its routes, ~200,000 objects of imported modules) lives
    # as long as the process: frozen, a full collection no longer walks it. Unfrozen, one took
    # 270 ms on the benchmark machine, stalling every request in flight (the reads' p99).
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run(sockets=sockets)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for the worker processes to share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_workers(
    run_worker: Callable[[socket.socket], None], *, host: str, port: int, workers: int
) -> int:
    """Run ``run_worker(sock)`` in ``workers`` forked processes sharing one listening socket;
    return when they have stopped, with the exit status to report.

    SIGTERM or SIGINT to this process is passed on to every worker, which finishes its requests
    and stops (uvicorn's graceful shutdown). A worker that dies on its own stops the others too,
    and the status is non-zero: whatever supervises `heimdex serve` (systemd, Kubernetes)
    restarts the whole server rather than this process hiding a crash loop.
    """
    sock = listening_socket(host, port)
    raise_open_file_limit()  # before the fork: every worker inherits the raised soft limit
    children: dict[int, int] = {}
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                run_worker(sock)
            except BaseException:  # a worker never returns into the parent's code
                log.exception("worker_failed", worker=index)
                code = 1
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os._exit(code)
        children[pid] = index
    sock.close()  # the workers hold it
    log.info("workers_started", workers=workers, pids=sorted(children))

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM if signum == signal.SIGTERM else signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries os.wait itself
                continue
            if pid not in children:
                continue
            index = children.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if not stopping:
                log.error("worker_exited", worker=index, pid=pid, exit_code=code)
                status = status or 1
                stop(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
