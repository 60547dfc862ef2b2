"""Frame fingerprints: what a frame looks like, as 64 bits, and how near two of them are.

A fingerprint is a perceptual hash (pHash, ``adapters/media/fingerprint.py``): frames that look
alike — the same frame re-encoded, rescaled, brightened — differ in few bits, unrelated frames
in about half. Nearness is the Hamming distance (the number of differing bits).

Multi-index hashing: the 64 bits are cut into ``BANDS`` bands of ``BAND_BITS`` bits, each kept
in a column of its own. Two fingerprints at distance ``d < BANDS`` differ in at most ``d`` bands,
so they agree exactly on at least one band (pigeonhole): the candidates of a query are the rows
that share one band value with it — B-tree look-ups — and the exact distance decides among
them. Searches are therefore exact up to ``MAX_DISTANCE``; a larger distance is refused rather
than answered approximately.
"""

from __future__ import annotations

from uuid import UUID

import msgspec

FINGERPRINT_BITS = 64
BANDS = 8
BAND_BITS = FINGERPRINT_BITS // BANDS
BAND_MASK = (1 << BAND_BITS) - 1
#: the largest distance a search answers exactly (pigeonhole: one band less than there are)
MAX_DISTANCE = BANDS - 1
#: the default: a re-encode, a rescale or a brightening of the same frame (docs/search.md)
DEFAULT_MAX_DISTANCE = 6


def bands(fingerprint: int) -> tuple[int, ...]:
    """The fingerprint's ``BANDS`` band values, most significant first."""
    if not 0 <= fingerprint < 1 << FINGERPRINT_BITS:
        raise ValueError("a fingerprint is an unsigned 64-bit integer")
    return tuple(
        (fingerprint >> (BAND_BITS * (BANDS - 1 - index))) & BAND_MASK for index in range(BANDS)
    )


def from_bands(values: tuple[int, ...] | list[int]) -> int:
    """The fingerprint whose bands are ``values`` (the inverse of :func:`bands`)."""
    fingerprint = 0
    for value in values:
        fingerprint = (fingerprint << BAND_BITS) | (value & BAND_MASK)
    return fingerprint


def distance(a: int, b: int) -> int:
    """The Hamming distance: how many of the 64 bits differ."""
    return (a ^ b).bit_count()


def to_hex(fingerprint: int) -> str:
    return f"{fingerprint:016x}"


class FrameFingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """One frame of an asset (a storyboard tile, a thumbnail, the poster) at ``time`` seconds."""

    time: float
    fingerprint: int


class FrameMatch(msgspec.Struct, frozen=True, kw_only=True):
    """A stored frame near a query: its asset, time and distance."""

    asset_id: UUID
    time: float
    distance: int


class FramePair(msgspec.Struct, frozen=True, kw_only=True):
    """A frame of one asset (``time``) near a frame of another (``other_asset_id`` at
    ``other_time``)."""

    time: float
    other_asset_id: UUID
    other_time: float
    distance: int


def order_key(match: FrameMatch) -> tuple[int, str, float]:
    """Best first: the nearest, then by asset id and time — one order on every database."""
    return (match.distance, str(match.asset_id), match.time)
