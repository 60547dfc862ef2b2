"""``PooledDecoder``: what the PyAV prober and thumbnailer share about their decode pool — one
of their own or one passed in, started early, stopped, and a crash that names its file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

from heimdex.adapters.media.limits import DecodeLimits
from heimdex.domain.errors import DecodeLimitExceeded, DecoderCrashed, HeimdexError

if TYPE_CHECKING:  # imported when a pool is made: `heimdex probe` in-process never needs one
    from heimdex.adapters.media.decode_pool import DecodePool

T = TypeVar("T")


class PooledDecoder:
    """Base of the adapters that decode in a :class:`DecodePool`. Given ``pool`` they share it
    (its owner stops it); otherwise they own one of ``workers`` processes, started on first use
    or by :meth:`warm`, and :meth:`close` stops it."""

    def __init__(
        self,
        pool: DecodePool | None,
        *,
        workers: int,
        preload: Sequence[str],
        limits: DecodeLimits | None,
        unavailable: type[HeimdexError],
        wait_seconds: float | None = None,
    ) -> None:
        self._owns_pool = pool is None
        if pool is None:
            from heimdex.adapters.media.decode_pool import DecodePool

            pool = DecodePool(
                workers,
                preload=preload,
                limits=limits,
                unavailable=unavailable,
                wait_seconds=wait_seconds,
            )
        self._pool = pool

    @property
    def pool(self) -> DecodePool:
        return self._pool

    async def warm(self) -> None:
        """Start the worker processes now, so the first file does not wait for them."""
        await self._pool.start()

    async def close(self) -> None:
        """Stop the worker processes (when this adapter started them)."""
        if self._owns_pool:
            await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _run_on(
        self, name: str, func: Callable[..., T], *args: Any, call_seconds: float
    ) -> T:
        """``pool.run`` for the file ``name``: a crash or a limit hit says which file."""
        try:
            return await self._pool.run(func, *args, call_seconds=call_seconds)
        except (DecoderCrashed, DecodeLimitExceeded) as exc:
            if exc.message.startswith(f"{name}: "):
                raise
            raise type(exc)(f"{name}: {exc.message}") from None
