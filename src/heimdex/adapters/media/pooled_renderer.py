"""The part the PyAV thumbnailer and picture maker share: render a plan of pictures from one
local file in a decode pool worker, within a time limit per file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.local_file import local_file
from heimdex.adapters.media.pooled_decoder import PooledDecoder
from heimdex.adapters.offload import run_blocking
from heimdex.domain.errors import ThumbnailerUnavailable, ThumbnailTimeout

if TYPE_CHECKING:
    from heimdex.adapters.media.decode_pool import DecodePool

P = TypeVar("P")
R = TypeVar("R")


class PooledRenderer(PooledDecoder):
    """Renders in ``workers`` reused processes (or a shared ``pool``), ``timeout`` seconds per
    file; ``preload`` is the module whose render functions the workers import up front."""

    def __init__(
        self,
        preload: str,
        workers: int,
        timeout: float,
        *,
        pool: DecodePool | None,
        limits: DecodeLimits | None,
    ) -> None:
        super().__init__(
            pool,
            workers=workers,
            preload=[preload],
            limits=limits,
            unavailable=ThumbnailerUnavailable,
        )
        self._timeout = timeout

    async def _render(
        self, path: Path, what: str, render: Callable[[str, str, P, int], R], plan: P
    ) -> R:
        """``render(location, name, plan, max_pixels)`` on a worker; a file that is not a
        regular file, or carries too much metadata, never reaches one."""
        location = (await run_blocking(local_file, path, self._pool.limits)).path
        try:
            # The time runs from when a worker takes the file, not while it waits for one.
            return await self._run_on(
                path.name,
                render,
                location,
                path.name,
                plan,
                self._pool.limits.max_pixels,
                call_seconds=self._timeout,
            )
        except TimeoutError:
            raise ThumbnailTimeout(
                f"{path.name}: making {what} took longer than {self._timeout:g} s"
            ) from None
