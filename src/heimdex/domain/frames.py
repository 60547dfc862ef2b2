"""Frame fingerprints: what a frame looks like, as 64 bits, and how near two of them are.

A fingerprint is a perceptual hash (pHash, ``adapters/media/fingerprint.py``): frames that look
alike — the same frame re-encoded, rescaled, brightened — differ in few bits, unrelated frames
in about half. Nearness is the Hamming distance (the number of differing bits).

Multi-index hashing (Norouzi, Punjani and Fleet): the 64 bits are cut into ``BANDS`` bands of
``BAND_BITS`` bits, each kept in an indexed column. Two fingerprints at distance ``d`` have a
band within ``d // BANDS`` bits of each other (pigeonhole: were every band ``d // BANDS + 1``
apart or more, the distance would be more than ``d``). So every fingerprint within
``MAX_DISTANCE`` = 7 of a query has a band equal to the query's band or one bit from it: the
candidates are the rows whose band is one of those ``1 + BAND_BITS`` values, for any band —
B-tree look-ups — and the exact distance decides among them. (With radius 0 the rule is the
plain pigeonhole: ``d < BANDS`` shares a band exactly; 8 bands of 8 bits would answer 7 too, but
each of their values matches 1/256 of the archive, where a 16-bit probe matches 1/65,536 — at
10^6 frames about 1,000 candidates a query instead of 31,000: ``benchmarks/search.py``.)
Searches are exact up to ``MAX_DISTANCE``; a larger distance is refused rather than answered
approximately.
"""

from __future__ import annotations

from uuid import UUID

import msgspec

FINGERPRINT_BITS = 64
BANDS = 4
BAND_BITS = FINGERPRINT_BITS // BANDS
BAND_MASK = (1 << BAND_BITS) - 1
#: how far from the query's band a candidate's band may be (in bits)
PROBE_RADIUS = 1
#: the largest distance a search answers exactly: below ``BANDS * (PROBE_RADIUS + 1)``
MAX_DISTANCE = BANDS * (PROBE_RADIUS + 1) - 1
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


def probes(band: int) -> list[int]:
    """The band values a candidate may have in this band: ``band`` and its one-bit neighbours."""
    return [band, *(band ^ (1 << bit) for bit in range(BAND_BITS))]


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
