"""Time to a storyboard (100 tiles of 160 px on one sprite sheet) beside a bare keyframe-pick loop.

Run with ``uv run python benchmarks/storyboard.py [--rounds N]``. The files are
benchmarks/thumbnails.py's, cached under ``.cache/bench-media/``: 1080p30 H.264 of 60 s and
600 s with a keyframe every 2 s (loops of a 22 s clip, so the 600 s file's 100 tiles show 11
different pictures: the tile middles 3, 9, 15 … s fall on 11 points of the 22 s loop), and 60 s
with one every 30 s (tiles decode forward, within their budget).

"ours": the PyAV picture maker's storyboard, in this process (``_PictureRenderer._storyboard``:
locate, decode, filter, paste, encode the sheet), so that it runs as the reference does; "pool":
the whole ``PyAVPictureMaker.pictures`` call a sidecar job makes — storyboard and automatic
poster, in a decode-pool worker. The reference, timed in the same run: for each tile's middle,
seek to the keyframe before it, decode it, scale to 160 px, encode a JPEG (the same tiles on a
2 s-GOP file, where every tile is a keyframe's picture). "distinct" counts different pictures.

Target (issue 11): ours on the 600 s file within 1.5x of the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av

from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.pictures_plan import plan_pictures, tile_slots
from heimdex.adapters.media.pyav import OPEN_OPTIONS, PyAVProber
from heimdex.adapters.media.pyav_pictures import PyAVPictureMaker, _PictureRenderer, _Sheet
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import StoryboardSpec
from thumbnails import CACHE_DIR, make_media

TARGET = 1.5
T = TypeVar("T")


def bare_loop(path: Path, duration: float) -> list[bytes]:
    """For each tile's middle: seek to the keyframe before it, decode it, scale, encode."""
    tiles = []
    with av.open(str(path), container_options=OPEN_OPTIONS) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        height = round(160 * stream.codec_context.height / stream.codec_context.width / 2) * 2
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = 160, height
        encoder.pix_fmt = "yuvj420p"
        encoder.time_base = Fraction(1, 1)
        for index, slot in enumerate(tile_slots(duration)):
            container.seek(int(slot.target / stream.time_base), stream=stream, backward=True)
            frame = next(container.decode(stream))
            small = frame.reformat(width=160, height=height, format="yuvj420p")
            small.pts, small.time_base = index, Fraction(1, 1)
            tiles.append(b"".join(bytes(p) for p in encoder.encode(small)))
    return tiles


def ours(path: Path, media: MediaInfo) -> list[bytes]:
    """The storyboard as the decode worker makes it, in this process; each tile's picture
    (its planes' bytes, as pasted on the sheet)."""
    plan = plan_pictures(path.name, media, StoryboardSpec(), None)
    assert plan is not None
    assert plan.storyboard is not None
    pasted: list[bytes] = []
    paste = _Sheet.paste

    def recording(self: _Sheet, picture: Any, x: int, y: int) -> None:
        pasted.append(hashlib.sha256(b"".join(bytes(p) for p in picture.planes)).digest())
        paste(self, picture, x, y)

    _Sheet.paste = recording  # type: ignore[method-assign]
    try:
        with av.open(
            "file:" + str(path), format=plan.poster.demuxer, container_options=OPEN_OPTIONS
        ) as container:
            renderer = _PictureRenderer(container, path.name, plan, DecodeLimits())
            renderer._storyboard(plan.storyboard)
    finally:
        _Sheet.paste = paste  # type: ignore[method-assign]
    return pasted


async def pooled(maker: PyAVPictureMaker, path: Path, media: MediaInfo) -> float:
    started = time.perf_counter()
    await maker.pictures(path, media, StoryboardSpec(), None)
    return time.perf_counter() - started


def timed(func: Callable[..., T], *args: object) -> tuple[float, T]:
    started = time.perf_counter()
    result = func(*args)
    return time.perf_counter() - started, result


async def main_async(rounds: int) -> int:
    files = [f for f in make_media(CACHE_DIR) if f.seconds >= 60]
    prober = PyAVProber()
    failed = False
    print(f"{'file':34} {'tiles':>5} {'bare':>14} {'ours':>14} {'ratio':>6} {'pool (+poster)':>15}")
    async with PyAVPictureMaker(workers=1, timeout=300) as maker:
        await maker.warm()
        for file in files:
            media = await prober.probe(file.path)
            bare_s, ours_s, pool_s = [], [], []
            bare_tiles: list[bytes] = []
            our_tiles: list[bytes] = []
            for _ in range(rounds):
                seconds, bare_tiles = timed(bare_loop, file.path, file.seconds)
                bare_s.append(seconds)
                seconds, our_tiles = timed(ours, file.path, media)
                ours_s.append(seconds)
                pool_s.append(await pooled(maker, file.path, media))
            bare, mine = statistics.median(bare_s), statistics.median(ours_s)
            ratio = mine / bare
            gop = f"gop{file.gop_seconds}" if file.gop_seconds else "1 keyframe"
            label = f"1080p30 {file.seconds:.0f} s {gop}"
            print(
                f"{label:34} {len(our_tiles):5d} "
                f"{bare:6.3f} s ({len(set(bare_tiles)):3d}) "
                f"{mine:6.3f} s ({len(set(our_tiles)):3d}) {ratio:6.2f} "
                f"{statistics.median(pool_s):9.3f} s"
            )
            if file.seconds == 600 and ratio > TARGET:
                failed = True
    await prober.close()
    print(f"target: ours <= {TARGET}x bare on the 600 s file: {'missed' if failed else 'met'}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    return asyncio.run(main_async(args.rounds))


if __name__ == "__main__":
    raise SystemExit(main())
