"""Fingerprint bands, the pigeonhole the search relies on, and the ranking of similar assets."""

from __future__ import annotations

import random
import uuid

import pytest

from heimdex.application.job_runner import job_frames
from heimdex.application.search import PAIRS_SHOWN, rank_similar
from heimdex.domain.frames import (
    BAND_BITS,
    BANDS,
    FINGERPRINT_BITS,
    MAX_DISTANCE,
    FrameFingerprint,
    FramePair,
    bands,
    distance,
    from_bands,
    probes,
)
from heimdex.domain.model import Pictures, Thumbnail


def test_bands_cut_the_fingerprint_most_significant_first_and_join_back() -> None:
    assert bands(0x0102030405060708) == (0x0102, 0x0304, 0x0506, 0x0708)
    rng = random.Random(3)
    for _ in range(1000):
        fingerprint = rng.getrandbits(FINGERPRINT_BITS)
        assert from_bands(list(bands(fingerprint))) == fingerprint
        assert all(0 <= value < 1 << BAND_BITS for value in bands(fingerprint))


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_a_fingerprint_outside_64_bits_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="64-bit"):
        bands(bad)


def test_distance_is_the_number_of_differing_bits() -> None:
    assert distance(0, 0) == 0
    assert distance(0, (1 << 64) - 1) == 64
    assert distance(0b1011, 0b0001) == 2


def test_every_fingerprint_within_the_max_distance_has_a_band_among_the_probes() -> None:
    """The pigeonhole the search relies on: flipping up to ``MAX_DISTANCE`` bits, however
    spread, leaves at least one band among the query band's probes (itself and its one-bit
    neighbours) — and one bit more, two in each band, can leave none."""
    rng = random.Random(5)
    for _ in range(5000):
        fingerprint = rng.getrandbits(64)
        flipped = fingerprint
        for bit in rng.sample(range(64), rng.randint(0, MAX_DISTANCE)):
            flipped ^= 1 << bit
        assert any(b in probes(a) for a, b in zip(bands(fingerprint), bands(flipped), strict=True))
    two_per_band = sum(3 << (band * BAND_BITS) for band in range(BANDS))
    assert distance(0, two_per_band) == MAX_DISTANCE + 1
    assert not any(b in probes(0) for b in bands(two_per_band))


def test_the_probes_are_the_band_and_its_one_bit_neighbours() -> None:
    found = probes(0x00F0)
    assert len(found) == len(set(found)) == BAND_BITS + 1
    assert all(distance(0x00F0, value) <= 1 for value in found)


def test_similar_assets_rank_by_frames_matched_then_mean_distance() -> None:
    few, many, tied = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pairs = [
        FramePair(time=0.0, other_asset_id=few, other_time=0.0, distance=0),
        *(
            FramePair(time=float(t), other_asset_id=many, other_time=float(t), distance=3)
            for t in range(7)
        ),
        # Two matches of the same frame count once, with the nearer one.
        FramePair(time=1.0, other_asset_id=tied, other_time=5.0, distance=6),
        FramePair(time=1.0, other_asset_id=tied, other_time=1.0, distance=1),
    ]
    ranked = rank_similar(pairs, limit=10)
    assert [item.asset_id for item in ranked] == [many, few, tied]
    assert ranked[0].frames_matched == 7
    assert len(ranked[0].matches) == PAIRS_SHOWN
    assert ranked[2].frames_matched == 1
    assert ranked[2].matches[0].other_time == 1.0
    assert ranked[2].distance == 1
    assert [item.asset_id for item in rank_similar(pairs, limit=1)] == [many]


def test_a_run_s_frames_are_its_tiles_and_fingerprinted_thumbnails_once_each() -> None:
    tile = FrameFingerprint(time=2.0, fingerprint=7)
    pictures = Pictures(frames=[tile])
    thumbnails = [
        Thumbnail(index=0, time=2.0, width=8, height=8, data=b"x", fingerprint=7),  # the tile
        Thumbnail(index=1, time=1.0, width=8, height=8, data=b"x", fingerprint=9),
        Thumbnail(index=2, time=3.0, width=8, height=8, data=b"x"),  # dull: none
    ]
    assert job_frames(thumbnails, pictures) == [FrameFingerprint(time=1.0, fingerprint=9), tile]
