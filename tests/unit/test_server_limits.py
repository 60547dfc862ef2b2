"""Start-up's descriptor limit, and the connection cap kept below it."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from heimdex.entrypoints.http.server import (
    RESERVED_DESCRIPTORS,
    ConnectionLimits,
    effective_limits,
    raise_open_file_limit,
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
