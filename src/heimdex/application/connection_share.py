"""Each organisation's share of a database pool, taken before a connection is.

One organisation with many slow requests at once (large listings, similar-frame searches) would
otherwise hold every connection of a pool, and every other organisation's requests would queue
behind all of its own. ``ConnectionShare`` stands in front of a pool: an organisation holds at
most its share (``FairShare``, ``domain/connection_share.py``); its requests past that wait in
the share's own queue, never in the pool's, and a connection that comes free goes to the
waiting organisation holding the fewest. ``SharedCatalogueReads`` and
``SharedUnitOfWorkFactory`` put it around the ports; the composition root wraps the ports the
requests use (the jobs, deliveries and sweeps keep the pool's own order: they are few, and
bounded by their own concurrency).

Kept in the process, in asyncio, like the pool it guards: each API process has its own pools
and its own shares.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from heimdex.domain.connection_share import FairShare
from heimdex.domain.errors import DatabaseBusy, DatabaseUnavailable
from heimdex.domain.model import Asset, AssetFilter, AssetPage, Job, JobFilter, JobPage, PageCursor
from heimdex.domain.ports import (
    AssetRepository,
    CatalogueReads,
    FrameRepository,
    JobRepository,
    UnitOfWork,
    UnitOfWorkFactory,
    UploadRepository,
    WebhookDeliveryRepository,
    WebhookEndpointRepository,
)


class _Lapsed(Exception):
    """A waiter's wait ran out (set on its future by its timer)."""


def _lapse(granted: asyncio.Future[None]) -> None:
    if not granted.done():
        granted.set_exception(_Lapsed())


class ConnectionShare:
    """The connections of one pool (``pool``, for messages) each organisation holds through
    it. A request past its organisation's share, or finding the pool taken, waits its turn up
    to ``wait_seconds`` (``0``: not at all); then ``DatabaseBusy`` (429, ``retry_after``) if its
    organisation holds its whole share — its own load — or ``DatabaseUnavailable`` (503) if
    other organisations hold the pool."""

    def __init__(
        self, rule: FairShare, wait_seconds: float, *, retry_after: int = 1, pool: str = "database"
    ) -> None:
        self._rule = rule
        self._wait = wait_seconds
        self._retry_after = max(1, retry_after)
        self._pool = pool
        # Each waiting organisation's requests, first come first; an organisation is here only
        # while one of its requests waits (what the rule weighs: how many orgs wait, not how
        # many requests).
        self._queues: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        self._arrivals = 0
        self._waiting = 0

    @property
    def rule(self) -> FairShare:
        """The bookkeeping (for tests and diagnostics)."""
        return self._rule

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn now."""
        return self._waiting

    @asynccontextmanager
    async def hold(self, org_id: str) -> AsyncIterator[None]:
        """One of ``org_id``'s connections of this pool for the ``async with`` block."""
        await self.take(org_id)
        try:
            yield
        finally:
            self.give_back(org_id)

    async def take(self, org_id: str) -> None:
        """Wait for ``org_id``'s turn; each ``take`` is matched by one ``give_back``."""
        # Whoever waits could not take when they came and nothing freed since (a give_back
        # serves the waiting first), so a newcomer who may take overtakes nobody who may.
        if self._rule.may_take(org_id):
            self._rule.take(org_id)
            return
        if self._wait <= 0:
            raise self._refusal(org_id)
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()
        self._arrivals += 1
        entry = (self._arrivals, granted)
        self._queues.setdefault(org_id, deque()).append(entry)
        self._waiting += 1
        # A timer on the future rather than asyncio.timeout: no cancellation of the task to
        # undo, and a turn in the queue costs a few microseconds (reads take well under 1 ms).
        timer = loop.call_later(self._wait, _lapse, granted)
        try:
            await granted
        except _Lapsed:
            self._leave(org_id, entry)
            raise self._refusal(org_id) from None
        except BaseException:  # cancelled: leave the queue, or hand the turn on
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self.give_back(org_id)
            else:
                self._leave(org_id, entry)
            raise
        finally:
            timer.cancel()

    def give_back(self, org_id: str) -> None:
        """``org_id`` is done with a connection; the next in turn takes it."""
        self._rule.give_back(org_id)
        queues = self._queues
        while queues:
            chosen = self._rule.next_in_turn({org: queue[0][0] for org, queue in queues.items()})
            if chosen is None:
                return
            queue = queues[chosen]
            _, granted = queue.popleft()
            if not queue:
                del queues[chosen]
            self._waiting -= 1
            self._rule.take(chosen)
            granted.set_result(None)

    def _leave(self, org_id: str, entry: tuple[int, asyncio.Future[None]]) -> None:
        queue = self._queues[org_id]
        queue.remove(entry)
        if not queue:
            del self._queues[org_id]
        self._waiting -= 1

    def _refusal(self, org_id: str) -> DatabaseBusy | DatabaseUnavailable:
        if self._rule.at_share(org_id):
            return DatabaseBusy(
                f"your organisation already holds {self._rule.per_org} of the "
                f"{self._rule.capacity} {self._pool} connections, its share, and none came free "
                f"within {self._wait:g} s; send fewer requests at once",
                retry_after=self._retry_after,
            )
        return DatabaseUnavailable(
            f"the database is not available: every {self._pool} connection is in use "
            f"(waited {self._wait:g} s)"
        )


class SharedCatalogueReads:
    """``CatalogueReads`` whose every read holds one of its organisation's connections of
    ``share`` (the read pool's) while it runs."""

    def __init__(self, reads: CatalogueReads, share: ConnectionShare) -> None:
        self._reads = reads
        self._share = share

    async def asset(self, org_id: str, asset_id: UUID) -> Asset | None:
        async with self._share.hold(org_id):
            return await self._reads.asset(org_id, asset_id)

    async def assets(
        self, org_id: str, filters: AssetFilter, *, limit: int, after: PageCursor | None
    ) -> AssetPage:
        async with self._share.hold(org_id):
            return await self._reads.assets(org_id, filters, limit=limit, after=after)

    async def job(self, org_id: str, job_id: UUID) -> Job | None:
        async with self._share.hold(org_id):
            return await self._reads.job(org_id, job_id)

    async def jobs(
        self, org_id: str, filters: JobFilter, *, limit: int, after: PageCursor | None
    ) -> JobPage:
        async with self._share.hold(org_id):
            return await self._reads.jobs(org_id, filters, limit=limit, after=after)

    async def aclose(self) -> None:
        await self._reads.aclose()


class SharedUnitOfWork:
    """A unit of work that holds one of its organisation's connections of ``share`` from
    entering to leaving: what a unit of work holds of the pool, one connection, that long."""

    def __init__(self, unit: UnitOfWork, share: ConnectionShare, org_id: str) -> None:
        self._unit = unit
        self._share = share
        self._org_id = org_id
        self._holding = False
        self.uploads: UploadRepository = unit.uploads
        self.assets: AssetRepository = unit.assets
        self.jobs: JobRepository = unit.jobs
        self.webhooks: WebhookEndpointRepository = unit.webhooks
        self.deliveries: WebhookDeliveryRepository = unit.deliveries
        self.frames: FrameRepository = unit.frames

    async def __aenter__(self) -> SharedUnitOfWork:
        await self._share.take(self._org_id)
        self._holding = True
        try:
            await self._unit.__aenter__()
        except BaseException:
            self._give_back()
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._unit.__aexit__(*exc_info)
        finally:
            self._give_back()

    async def commit(self) -> None:
        await self._unit.commit()

    async def lock_org(self) -> None:
        await self._unit.lock_org()

    def _give_back(self) -> None:
        if self._holding:
            self._holding = False
            self._share.give_back(self._org_id)


class SharedUnitOfWorkFactory:
    """``UnitOfWorkFactory`` whose units each hold one of their organisation's connections of
    ``share`` (the unit-of-work pool's)."""

    def __init__(self, units: UnitOfWorkFactory, share: ConnectionShare) -> None:
        self._units = units
        self._share = share

    def __call__(self, org_id: str) -> SharedUnitOfWork:
        return SharedUnitOfWork(self._units(org_id), self._share, org_id)
