"""rechunk: what the upload route and the S3 reader cut a byte stream into."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from heimdex.domain.chunks import rechunk


async def pieces(*sizes: int) -> AsyncIterator[bytes]:
    for number, size in enumerate(sizes):
        yield bytes([number]) * size


@pytest.mark.parametrize(
    ("sizes", "chunks"),
    [
        ((1,) * 12, [4, 4, 4]),  # small pieces joined up to the size
        ((3, 3, 3), [3, 3, 3]),  # never past it: 6 would be
        ((2, 2, 1, 9, 1), [4, 1, 9, 1]),  # a longer piece passes whole, alone
        ((4, 4), [4, 4]),
        ((), []),
    ],
)
async def test_chunks_are_joined_pieces_up_to_the_size_in_order(
    sizes: tuple[int, ...], chunks: list[int]
) -> None:
    out = [chunk async for chunk in rechunk(pieces(*sizes), 4)]
    assert [len(chunk) for chunk in out] == chunks
    assert b"".join(out) == b"".join([piece async for piece in pieces(*sizes)])
