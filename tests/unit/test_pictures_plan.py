"""The storyboard's tiles and the automatic poster's detail score (``pictures_plan``)."""

from __future__ import annotations

import itertools

import pytest

from heimdex.adapters.media.pictures_plan import detail_score, storyboard_interval, tile_slots


@pytest.mark.parametrize(
    ("duration", "interval", "count"),
    [(0.4, 1.0, 1), (4.0, 1.0, 4), (12.5, 1.0, 13), (100.0, 1.0, 100), (600.0, 6.0, 100)],
)
def test_tiles_every_second_or_a_hundred_over_the_duration(
    duration: float, interval: float, count: int
) -> None:
    assert storyboard_interval(duration) == interval
    tiles = tile_slots(duration)
    assert len(tiles) == count
    assert tiles[0].start == 0.0
    assert tiles[-1].end == pytest.approx(duration)
    for before, after in itertools.pairwise(tiles):
        assert before.end == pytest.approx(after.start)  # no gap, no overlap
    assert all(t.start < t.target < t.end for t in tiles)


def _plane(pixel: object, width: int = 64, height: int = 64) -> bytes:
    return bytes(pixel(x, y) for y in range(height) for x in range(width))  # type: ignore[operator]


def test_detail_scores_edges_over_smooth_shading() -> None:
    gradient = _plane(lambda x, y: x * 4)
    checks = _plane(lambda x, y: 200 if (x // 4 + y // 4) % 2 else 40)
    flat = _plane(lambda x, y: 128)
    assert detail_score(flat, 64, 64, 64) == 0.0
    assert detail_score(checks, 64, 64, 64) > 10 * detail_score(gradient, 64, 64, 64) > 0
