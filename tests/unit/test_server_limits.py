"""Start-up's descriptor limit, and the connection cap kept below it."""

from __future__ import annotations

import gc
import resource
from collections.abc import Iterator

import pytest
import uvicorn

from heimdex.entrypoints.http.server import (
    RESERVED_DESCRIPTORS,
    ConnectionLimits,
    GuardedProtocol,
    effective_limits,
    raise_open_file_limit,
    serve,
)

LIMITS = ConnectionLimits(
    max_header_bytes=8192, header_timeout_seconds=5, keep_alive_seconds=5, max_connections=64
)


@pytest.fixture
def lowered_soft_limit() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, hard // 2, 4096)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_start_up_raises_the_soft_open_file_limit_to_the_hard_one(lowered_soft_limit: int) -> None:
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] < lowered_soft_limit
    assert raise_open_file_limit() == lowered_soft_limit
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (lowered_soft_limit, lowered_soft_limit)


def limits(max_connections: int) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=65536,
        header_timeout_seconds=10,
        keep_alive_seconds=5,
        max_connections=max_connections,
    )


def test_a_connection_cap_the_descriptors_allow_is_kept() -> None:
    assert effective_limits(limits(100), 1024).max_connections == 100


def test_a_connection_cap_past_the_descriptors_is_lowered_below_them() -> None:
    assert effective_limits(limits(4096), 1024).max_connections == 1024 - RESERVED_DESCRIPTORS


def test_the_server_runs_with_what_start_up_built_frozen_out_of_the_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, object] = {}

    def run(server: uvicorn.Server, sockets: list[object] | None = None) -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["limits"] = server.config.http

    monkeypatch.setattr(uvicorn.Server, "run", run)
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        app = object()
        serve(app, host="127.0.0.1", port=0, limits=LIMITS)
        frozen = seen["frozen"]
        assert isinstance(frozen, int)
        assert frozen > 1000  # the modules, the app: everything alive when serving began
        protocol = seen["limits"]
        assert isinstance(protocol, type)
        assert issubclass(protocol, GuardedProtocol)
    finally:
        gc.unfreeze()
