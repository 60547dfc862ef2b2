"""The one way adapters run blocking work (PyAV, hashing, file I/O) off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

import anyio.to_thread

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``func`` in a worker thread so the event loop keeps serving requests."""
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs))
