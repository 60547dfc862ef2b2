"""Frame search: what fingerprints cost, how queries grow with the archive, and recall.

Run with ``uv run python benchmarks/search.py [--sizes 10000,100000,1000000] [--queries 30]``.
Every figure is timed in this one run beside its reference:

1. **Hash choice** (issue 16): pHash (``imagehash``, 64 bits) and PDQ (``pdqhash``, 256 bits,
   timed only when installed: it is not a dependency) on frames of generated clips and of
   ``../shared/media``, against a JPEG re-encode (quality 25), a half-size and a 160-px rescale,
   a 30 % brightening and a 5 % crop, and against frames of unrelated sources (dull frames
   left out, as the product does; the shared media's several copies of one source in other
   containers count as related). Distances as a share of the hash's bits.
2. **Fingerprint cost per frame**: the product's ``fingerprint_picture`` (a yuv420p tile's luma
   plane → a Pillow image → ``imagehash.phash``) beside the library's bare ``imagehash.phash``
   on Pillow images made beforehand from the same decoded tiles — same fingerprints asserted.
   Then its share of a sidecar run: the storyboard and thumbnails of a 60 s 720p clip rendered
   in this process, the fingerprint calls timed inside the run.
3. **Query latency**: ``SqlFrameRepository.nearest`` (the product's exact multi-index search,
   through its unit of work; PostgreSQL as the runtime role under row-level security) on
   10^4, 10^5, 10^6 uniformly random fingerprints of one organisation (assets of 100 frames),
   and on 10^6 spread over 1,000 organisations, on SQLite and PostgreSQL; beside a numpy
   brute-force Hamming scan of the same organisation's fingerprints (arrays in memory, their
   load not timed). Queries are stored fingerprints with 0…7 bits flipped; each answer (up to
   1,000 frames within distance 7, best first) must equal the scan's: recall 100 %. Plus
   ``shared`` (what ``/similar`` runs) for one asset of 100 frames.

Rows are written with bulk inserts (``executemany`` on SQLite, ``COPY`` as the superuser on
PostgreSQL, foreign keys off for the load), not through the product.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import av
import imagehash
import numpy as np
from PIL import Image, ImageEnhance

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the test suite's PostgreSQL catalogue, reused as it is

from tests.fixtures.db import _migrated_catalogue  # noqa: E402

from heimdex.adapters.db.engine import Database  # noqa: E402
from heimdex.adapters.db.migrations import upgrade  # noqa: E402
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory  # noqa: E402
from heimdex.adapters.media import pyav_pictures, pyav_thumbnailer  # noqa: E402
from heimdex.adapters.media.fingerprint import fingerprint_image, fingerprint_picture  # noqa: E402
from heimdex.adapters.media.pictures_plan import plan_pictures  # noqa: E402
from heimdex.adapters.media.pyav import PyAVProber  # noqa: E402
from heimdex.adapters.media.thumbnail_plan import luma_stats, plan_thumbnails  # noqa: E402
from heimdex.domain.frames import (  # noqa: E402
    BAND_BITS,
    BAND_MASK,
    BANDS,
    MAX_DISTANCE,
    FrameMatch,
    order_key,
)
from heimdex.domain.model import StoryboardSpec, ThumbnailSpec  # noqa: E402

CACHE_DIR = REPO_ROOT / ".cache" / "bench-media"
SHARED_MEDIA = (REPO_ROOT / ".." / "shared" / "media").resolve()
PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
FRAMES_PER_ASSET = 100
LIMIT = 1000
T = TypeVar("T")


def clip(name: str, *args: str) -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / name
    if not path.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(path)], check=True)
    return path


def generated_clips() -> list[Path]:
    sources = {
        "mandelbrot": "mandelbrot=size=640x360:rate=25",
        "testsrc2": "testsrc2=size=640x360:rate=25",
        "life": "life=size=640x360:rate=25:mold=10:ratio=0.5",
        "cellauto": "cellauto=size=640x360:rate=25",
        "gradients": "gradients=size=640x360:rate=25:speed=0.05",
    }
    return [
        clip(f"search-{name}.mp4", "-f", "lavfi", "-i", source, "-t", "8", "-pix_fmt", "yuv420p")
        for name, source in sources.items()
    ]


# -- 1. hash choice ----------------------------------------------------------------------------
def sample_frames(paths: list[Path], per_file: int = 6) -> list[tuple[str, Image.Image]]:
    frames: list[tuple[str, Image.Image]] = []
    for path in paths:
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    continue
                got = []
                for index, frame in enumerate(container.decode(video=0)):
                    if index % 29 == 0:
                        image = frame.to_image().convert("RGB")  # type: ignore[no-untyped-call]
                        grey = image.convert("L")
                        stats = luma_stats(
                            grey.tobytes(), grey.width, grey.height, grey.width, False
                        )
                        if not stats.dull:  # as the product: dull frames get no fingerprint
                            got.append(image)
                    if len(got) >= per_file:
                        break
                frames += [(path.name, image) for image in got]
        except (av.error.FFmpegError, OSError):
            continue
    return frames


def _family(name: str) -> str:
    """What a file shows: the shared media hold the same sources in several containers (the
    androidx "sample" clip, Big Buck Bunny, the bear), which are not unrelated to each other."""
    return next((family for family in ("sample", "bbb", "bear") if family in name), name)


def variants(image: Image.Image) -> Iterator[tuple[str, Image.Image]]:
    width, height = image.size
    out = io.BytesIO()
    image.save(out, "JPEG", quality=25)
    out.seek(0)
    yield "jpeg q25", Image.open(out).convert("RGB")
    yield "half size", image.resize((max(width // 2, 8), max(height // 2, 8)))
    yield "160 px", image.resize((160, max(160 * height // width, 8)))
    yield "bright +30%", ImageEnhance.Brightness(image).enhance(1.3)
    dx, dy = width // 20, height // 20
    yield "crop 5%", image.crop((dx, dy, width - dx, height - dy))


def hash_choice() -> None:
    paths = generated_clips() + sorted(p for p in SHARED_MEDIA.glob("*") if p.suffix != ".tsv")
    frames = sample_frames(paths)
    hashes: dict[str, tuple[int, Callable[[Image.Image], int]]] = {"pHash": (64, fingerprint_image)}
    try:
        import pdqhash  # type: ignore[import-not-found]

        def pdq(image: Image.Image) -> int:
            vector, _quality = pdqhash.compute(np.asarray(image))
            return int("".join(str(int(bit)) for bit in vector), 2)

        hashes["PDQ"] = (256, pdq)
    except ImportError:
        print("  (pdqhash not installed: PDQ not measured in this run)")
    print(f"1. hash choice: {len(frames)} frames of {len({n for n, _ in frames})} files")
    for name, (bits, function) in hashes.items():
        started = time.perf_counter()
        own = [function(image) for _, image in frames]
        per_frame = (time.perf_counter() - started) / len(frames) * 1e3
        changed: dict[str, list[int]] = {}
        for (_, image), value in zip(frames, own, strict=True):
            for kind, variant in variants(image):
                changed.setdefault(kind, []).append((value ^ function(variant)).bit_count())
        unrelated = [
            (a ^ b).bit_count()
            for (i, a), (j, b) in itertools.combinations(enumerate(own), 2)
            if _family(frames[i][0]) != _family(frames[j][0])
        ]
        cells = ", ".join(
            f"{kind} mean {np.mean(v) / bits:.3f} max {max(v) / bits:.3f}"
            for kind, v in changed.items()
        )
        print(f"  {name} ({bits} bits, {per_frame:.2f} ms/full frame): {cells}")
        print(
            f"  {name} unrelated: min {min(unrelated) / bits:.3f}, 1st percentile "
            f"{np.percentile(unrelated, 1) / bits:.3f}, mean {np.mean(unrelated) / bits:.3f}"
        )


# -- 2. fingerprint cost -----------------------------------------------------------------------
def tiles(path: Path, count: int) -> list[Any]:
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append(frame.reformat(width=160, height=90, format="yuv420p"))
            if len(out) >= count:
                break
    return out


def best_of(rounds: int, work: Callable[[], T]) -> tuple[float, T]:
    times, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), result  # type: ignore[return-value]


def fingerprint_cost(rounds: int) -> None:
    source = clip(
        "search-720p-60s.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-t", "60"),
        *("-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p"),
    )
    pictures = tiles(source, 300)
    images = [
        Image.frombuffer(
            "L", (p.width, p.height), bytes(p.planes[0]), "raw", "L", p.planes[0].line_size, 1
        )
        for p in pictures
    ]
    ours, ours_values = best_of(rounds, lambda: [fingerprint_picture(p) for p in pictures])
    bare, bare_values = best_of(rounds, lambda: [int(str(imagehash.phash(i)), 16) for i in images])
    assert ours_values == bare_values, "the product's fingerprints differ from the library's"
    print(
        f"2. fingerprint per 160x90 tile: ours {ours / len(pictures) * 1e6:.0f} µs, bare "
        f"imagehash.phash {bare / len(pictures) * 1e6:.0f} µs (ratio {ours / bare:.2f})"
    )

    media = asyncio.run(PyAVProber().probe(source))
    board = plan_pictures(source.name, media, StoryboardSpec(), None)
    thumbs = plan_thumbnails(source.name, media, ThumbnailSpec())
    assert board is not None
    assert thumbs is not None

    def sidecar_run() -> int:
        made = pyav_pictures.render_pictures(str(source), source.name, board)
        shots = pyav_thumbnailer.render(str(source), source.name, thumbs)
        return len(made.frames) + sum(1 for s in shots if s.fingerprint is not None)

    # The fingerprints' share of a run, timed inside the run: the calls of fingerprint_picture
    # (wrapped with a clock) against the whole run. (Timing a run with and without them
    # compares two decodes, whose spread on a shared machine is larger than the difference.)
    modules = (vars(pyav_pictures), vars(pyav_thumbnailer))
    spent: list[float] = []

    def timed(picture: Any) -> int:
        started = time.perf_counter()
        try:
            return fingerprint_picture(picture)
        finally:
            spent.append(time.perf_counter() - started)

    for namespace in modules:
        namespace["fingerprint_picture"] = timed
    shares, runs, fingerprinted = [], [], 0
    try:
        for _ in range(rounds):
            spent.clear()
            started = time.perf_counter()
            fingerprinted = sidecar_run()
            runs.append(time.perf_counter() - started)
            shares.append(sum(spent) / runs[-1])
    finally:
        for namespace in modules:
            namespace["fingerprint_picture"] = fingerprint_picture
    print(
        f"   a sidecar run (60 s 720p: storyboard, poster, 10 thumbnails of 320 px; "
        f"{fingerprinted} frames fingerprinted): {statistics.median(runs):.3f} s, of which "
        f"fingerprinting {statistics.median(shares) * 100:.1f} % (median of {rounds})"
    )


# -- 3. queries --------------------------------------------------------------------------------
class Archive:
    """Fingerprints of one organisation in numpy, and its rows for the databases."""

    def __init__(self, rng: np.random.Generator, org: str, count: int) -> None:
        self.org = org
        self.fingerprints = rng.integers(0, 2**63, size=count, dtype=np.uint64) * np.uint64(2)
        self.fingerprints ^= rng.integers(0, 2, size=count, dtype=np.uint64)
        assets = [uuid.uuid4() for _ in range((count + FRAMES_PER_ASSET - 1) // FRAMES_PER_ASSET)]
        self.asset_ids = [assets[i // FRAMES_PER_ASSET] for i in range(count)]
        self.times = [float(i % FRAMES_PER_ASSET) for i in range(count)]

    def rows(self) -> Iterator[tuple[Any, ...]]:
        for value, asset_id, moment in zip(
            self.fingerprints.tolist(), self.asset_ids, self.times, strict=True
        ):
            bands = [(value >> (BAND_BITS * (BANDS - 1 - i))) & BAND_MASK for i in range(BANDS)]
            yield (self.org, asset_id, moment, f"{value:016x}", *bands)

    def brute_force(self, query: int, max_distance: int, limit: int) -> list[FrameMatch]:
        distances = np.bitwise_count(self.fingerprints ^ np.uint64(query))
        hits = np.nonzero(distances <= max_distance)[0]
        matches = [
            FrameMatch(asset_id=self.asset_ids[i], time=self.times[i], distance=int(distances[i]))
            for i in hits.tolist()
        ]
        return sorted(matches, key=order_key)[:limit]


COLUMNS = ["org_id", "asset_id", "time", "fingerprint", *(f"b{i}" for i in range(BANDS))]


def load_sqlite(path: Path, archives: list[Archive]) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA synchronous = OFF")
        connection.executemany(
            f"INSERT INTO frames ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",  # noqa: S608 - the columns are ours
            ((row[0], row[1].bytes, *row[2:]) for archive in archives for row in archive.rows()),
        )
        connection.execute("ANALYZE")


async def load_postgres(superuser_dsn: str, archives: list[Archive]) -> None:
    connection = await asyncpg.connect(superuser_dsn)
    try:
        await connection.execute("SET session_replication_role = replica")  # no FK triggers
        for archive in archives:
            rows = archive.rows()
            while chunk := list(itertools.islice(rows, 100_000)):
                await connection.copy_records_to_table("frames", records=chunk, columns=COLUMNS)
        await connection.execute("ANALYZE frames")
    finally:
        await connection.close()


def queries(rng: random.Random, archive: Archive, count: int) -> list[int]:
    picked = []
    for _ in range(count):
        value = int(archive.fingerprints[rng.randrange(len(archive.fingerprints))])
        for bit in rng.sample(range(64), rng.randint(0, MAX_DISTANCE)):
            value ^= 1 << bit
        picked.append(value)
    return picked


async def time_queries(
    url: str, archive: Archive, asked: list[int]
) -> tuple[float, float, float, float, int]:
    """Median ms of the product's query and of the scan, ``shared``'s ms, recall, matches."""
    database = Database(url)
    uow = SqlUnitOfWorkFactory(database)
    ours, scans, found, expected_total = [], [], 0, 0
    try:
        async with uow(archive.org) as unit:  # compiles the statement: not counted
            await unit.frames.nearest(asked[0], max_distance=MAX_DISTANCE, limit=LIMIT)
        for query in asked:
            started = time.perf_counter()
            async with uow(archive.org) as unit:
                answer = await unit.frames.nearest(query, max_distance=MAX_DISTANCE, limit=LIMIT)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            expected = archive.brute_force(query, MAX_DISTANCE, LIMIT)
            scans.append(time.perf_counter() - started)
            assert answer == expected, "the product's answer differs from the brute-force scan"
            found += len(set(answer) & set(expected))
            expected_total += len(expected)
        similar = []
        for round_ in range(4):  # the first compiles the statements: not counted
            started = time.perf_counter()
            async with uow(archive.org) as unit:
                await unit.frames.shared(archive.asset_ids[round_], max_distance=MAX_DISTANCE)
            similar.append(time.perf_counter() - started)
        shared = statistics.median(similar[1:])
    finally:
        await database.dispose()
    recall = found / expected_total if expected_total else 1.0
    return (
        statistics.median(ours) * 1e3,
        statistics.median(scans) * 1e3,
        shared * 1e3,
        recall,
        expected_total,
    )


def query_latency(sizes: list[int], spread: int, count: int, backends: list[str]) -> None:
    rng = np.random.default_rng(16)
    pick = random.Random(16)
    print(
        f"3. query latency (median of {count} queries; within distance {MAX_DISTANCE}, up to "
        f"{LIMIT} frames; 'similar' = shared() for one asset of {FRAMES_PER_ASSET} frames)"
    )
    print("   backend     frames   orgs   ours ms   numpy scan ms   similar ms   recall")
    with tempfile.TemporaryDirectory() as scratch:
        for backend in backends:
            with _database(backend, Path(scratch)) as (url, load):
                loaded = 0
                big = Archive(rng, "bench-one", 0)
                for size in sizes:
                    more = Archive(rng, "bench-one", size - loaded)
                    started = time.perf_counter()
                    load([more])
                    load_seconds = time.perf_counter() - started
                    big = _joined(big, more)
                    loaded = size
                    figures = asyncio.run(time_queries(url, big, queries(pick, big, count)))
                    _row(backend, size, 1, figures, load_seconds)
                if spread:
                    per_org = spread // 1000
                    orgs = [Archive(rng, f"bench-org-{i:04d}", per_org) for i in range(1000)]
                    started = time.perf_counter()
                    load(orgs)
                    load_seconds = time.perf_counter() - started
                    figures = asyncio.run(
                        time_queries(url, orgs[500], queries(pick, orgs[500], count))
                    )
                    _row(backend, spread, 1000, figures, load_seconds)


def _joined(a: Archive, b: Archive) -> Archive:
    joined = Archive.__new__(Archive)
    joined.org = b.org
    joined.fingerprints = np.concatenate([a.fingerprints, b.fingerprints])
    joined.asset_ids = a.asset_ids + b.asset_ids
    joined.times = a.times + b.times
    return joined


def _row(
    backend: str, size: int, orgs: int, figures: tuple[float, float, float, float, int], load: float
) -> None:
    ours, scan, shared, recall, matches = figures
    print(
        f"   {backend:10s} {size:>8,d} {orgs:>6d} {ours:9.1f} {scan:15.1f} {shared:12.1f}"
        f"   {recall * 100:.0f} % of {matches} (rows loaded in {load:.1f} s)"
    )


class _database:
    """A migrated, empty database of ``backend`` and a bulk loader for it."""

    def __init__(self, backend: str, scratch: Path) -> None:
        self._backend = backend
        self._scratch = scratch
        self._catalogue: Any = None

    def __enter__(self) -> tuple[str, Callable[[list[Archive]], None]]:
        if self._backend == "sqlite":
            path = self._scratch / "search.db"
            url = f"sqlite+aiosqlite:///{path}"
            upgrade(url, "head", None)
            return url, lambda archives: load_sqlite(path, archives)
        self._catalogue = _migrated_catalogue(PG_ADMIN, "bench_search")
        catalogue = self._catalogue.__enter__()
        dsn = catalogue.superuser_url.replace("postgresql+asyncpg", "postgresql")
        return catalogue.runtime_url, lambda archives: asyncio.run(load_postgres(dsn, archives))

    def __exit__(self, *exc: object) -> None:
        if self._catalogue is not None:
            self._catalogue.__exit__(*exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--spread", type=int, default=1_000_000, help="0: skip")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: 1,2,3")
    args = parser.parse_args()
    skip = set(args.skip.split(",")) - {""}
    if "1" not in skip:
        hash_choice()
    if "2" not in skip:
        fingerprint_cost(args.rounds)
    if "3" not in skip:
        query_latency(
            [int(s) for s in args.sizes.split(",")],
            args.spread,
            args.queries,
            args.backends.split(","),
        )


if __name__ == "__main__":
    main()
