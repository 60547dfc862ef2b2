"""What a test needs from the machine. Missing parts skip locally and fail under ``CI=true``."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """Skip the test, or fail it in CI where every part must be present."""
    if IN_CI:
        pytest.fail(f"CI=true and a required part is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not on PATH")
        raise AssertionError("unreachable")
    return path


def require_port(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        missing(f"{what} does not answer on {host}:{port} ({exc})")
