"""Each organisation's share of a database pool: what it spares the others, what it costs.

    uv run python benchmarks/pool_share.py [--seconds 3]

On the read pool (``PgCatalogueReads``, a throwaway database on the local PostgreSQL), with the
share (``HEIMDEX_DATABASE_ORG_SHARE=0.5``) and without:

- organisation B's listing while organisation A holds the pool with three times its size of
  0.5 s reads (``pg_sleep``): B's latency, and how long A's reads all took;
- one organisation alone, 32 concurrent fast reads (an asset by id) on a pool of 20: reads a
  second, the share's cost to a tenant that has the pool to itself;
- the gate on its own: a turn uncontended, and one among 32 tasks (no I/O).

Measured on a shared 2-CPU machine: B's listing took 1.40 s behind A's backlog without the
share (on pools of 4 and 20), 6.5-6.7 ms with it, while A's backlog took twice as long (3.0 s
instead of 1.5 s: it holds half the pool); one organisation alone did 10,800-11,000 reads/s with
the share and 10,600-11,400 without (within the run-to-run noise); a turn of the gate costs
0.6 us uncontended and 8 us among 32 tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from asyncpg.pool import PoolConnectionProxy

from heimdex.adapters.db.pg_reads import PgCatalogueReads
from heimdex.application.connection_share import ConnectionShare, SharedCatalogueReads
from heimdex.domain.connection_share import FairShare, share_of
from heimdex.domain.model import Asset, AssetFilter
from heimdex.domain.ports import CatalogueReads

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the test suite's database fixtures, reused as they are

from tests.fixtures.db import PG_SUPERUSER, _migrated_catalogue, postgres_url  # noqa: E402

SLOW_SECONDS = 0.5


class SleepyReads(PgCatalogueReads):
    """Reading an asset holds a connection for ``SLOW_SECONDS`` (a slow query, as a large
    listing or a similar-frame search is)."""

    async def asset(self, org_id: str, asset_id: uuid.UUID) -> Asset | None:
        async def slow(connection: PoolConnectionProxy) -> list[Any]:
            await connection.execute(f"SELECT pg_sleep({SLOW_SECONDS})")
            return []

        await self._run(slow)
        return None


def shared(reads: PgCatalogueReads, pool: int, fraction: float) -> CatalogueReads:
    if fraction <= 0:
        return reads
    return SharedCatalogueReads(
        reads, ConnectionShare(FairShare(pool, share_of(pool, fraction)), 60)
    )


async def behind_a_backlog(url: str, pool: int, fraction: float) -> tuple[float, float]:
    """B's listing latency while A's backlog holds the pool, and A's backlog's duration."""
    reads = SleepyReads(url, pool_size=pool)
    try:
        port = shared(reads, pool, fraction)
        await port.assets("warm-up", AssetFilter(), limit=1, after=None)
        started = time.perf_counter()
        backlog = [asyncio.create_task(port.asset("org-a", uuid.uuid4())) for _ in range(3 * pool)]
        await asyncio.sleep(0.1)  # A's reads hold the pool
        asked = time.perf_counter()
        await port.assets("org-b", AssetFilter(), limit=50, after=None)
        b_latency = time.perf_counter() - asked
        await asyncio.gather(*backlog)
        return b_latency, time.perf_counter() - started
    finally:
        await reads.aclose()


async def alone(url: str, fraction: float, seconds: float) -> float:
    """Reads a second of one organisation with 32 concurrent readers on a pool of 20."""
    reads = PgCatalogueReads(url, pool_size=20)
    try:
        port = shared(reads, 20, fraction)
        await asyncio.gather(
            *(port.assets("bench", AssetFilter(), limit=1, after=None) for _ in range(20))
        )
        count = 0

        async def reader() -> None:
            nonlocal count
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                await port.asset("bench", uuid.uuid4())
                count += 1

        await asyncio.gather(*(reader() for _ in range(32)))
        return count / seconds
    finally:
        await reads.aclose()


async def gate_turns(seconds: float) -> tuple[float, float]:
    """Microseconds a turn costs: uncontended, and among 32 tasks on a share of 10 of 20."""
    gate = ConnectionShare(FairShare(20, 10), 60)
    turns = 200_000
    started = time.perf_counter()
    for _ in range(turns):
        await gate.take("org")
        gate.give_back("org")
    uncontended = (time.perf_counter() - started) / turns * 1e6
    count = 0

    async def task() -> None:
        nonlocal count
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            await gate.take("org")
            await asyncio.sleep(0)
            gate.give_back("org")
            count += 1

    await asyncio.gather(*(task() for _ in range(32)))
    return uncontended, seconds / count * 1e6


async def measure(url: str, seconds: float) -> None:
    for pool in (4, 20):
        for fraction in (0.5, 0.0):
            b_latency, backlog = await behind_a_backlog(url, pool, fraction)
            print(
                f"pool {pool:2}, share {fraction}: B's listing {b_latency * 1000:7.1f} ms behind "
                f"A's {3 * pool} reads of {SLOW_SECONDS} s; A's all done in {backlog:.2f} s"
            )
    for fraction in (0.5, 0.0, 0.5, 0.0):
        rate = await alone(url, fraction, seconds)
        print(f"one organisation alone, 32 readers, pool 20, share {fraction}: {rate:,.0f} reads/s")
    uncontended, contended = await gate_turns(seconds)
    print(f"a turn of the gate: {uncontended:.2f} us uncontended, {contended:.2f} us among 32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="each throughput run")
    args = parser.parse_args()
    with _migrated_catalogue(postgres_url(PG_SUPERUSER, "postgres"), "heimdex_bench") as catalogue:
        asyncio.run(measure(catalogue.runtime_url, args.seconds))


if __name__ == "__main__":
    main()
