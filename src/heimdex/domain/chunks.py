"""Byte streams re-cut into chunks of about one size."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def rechunk(pieces: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """``pieces`` joined into chunks of up to ``size`` bytes (a longer piece is passed on
    whole): a socket hands over whatever arrived (often 64 KiB), and fewer, larger chunks mean
    fewer thread hops for hashing and file writes. Memory stays at about two chunks."""
    buffered: list[bytes] = []
    length = 0
    async for piece in pieces:
        if buffered and length + len(piece) > size:
            yield b"".join(buffered)
            buffered.clear()
            length = 0
        buffered.append(piece)
        length += len(piece)
        if length >= size:
            yield b"".join(buffered)
            buffered.clear()
            length = 0
    if buffered:
        yield b"".join(buffered)
