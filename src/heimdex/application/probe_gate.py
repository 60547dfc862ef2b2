"""Who may probe now: a cap on each organisation's concurrent probes, and one run per upload.

Probes run in the API process (its decode pool, or its ffprobe subprocesses), so both are kept
in that process, in asyncio: with ``heimdex serve`` (one API process) they hold for the whole
API. An operator who runs several API processes behind a balancer gets the cap per process
(an organisation may then run ``processes * cap`` probes) and the single flight per process (a
commit racing one in another process probes again, and the database's unique asset per upload
still makes one of them win: the loser answers the winner's asset).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from heimdex.domain.errors import ProbeBusy

T = TypeVar("T")


class ProbeSlots:
    """At most ``per_org`` probes of one organisation at a time (``0``: no cap). A probe past
    the cap waits for a slot up to ``wait_seconds`` (``0``: not at all), then fails with
    ``ProbeBusy`` carrying ``retry_after`` seconds — so one organisation's hostile or huge files
    hold at most its own slots, never every decode worker, and its excess is refused rather
    than queued in front of everyone else."""

    def __init__(
        self,
        per_org: int,
        wait_seconds: float,
        retry_after: int = 1,
        *,
        refusal: type[ProbeBusy] = ProbeBusy,
    ) -> None:
        """Past the cap and the wait: a ``refusal`` (``ProbeBusy`` or one of its kinds)."""
        self._per_org = per_org
        self._wait = wait_seconds
        self._retry_after = max(1, retry_after)
        self._refusal = refusal
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}  # holding or waiting; the semaphore goes at 0

    @asynccontextmanager
    async def hold(self, org_id: str) -> AsyncIterator[None]:
        """One of ``org_id``'s probe slots for the ``async with`` block."""
        if self._per_org <= 0:
            yield
            return
        slot = self._slots.get(org_id)
        if slot is None:
            slot = self._slots[org_id] = asyncio.Semaphore(self._per_org)
        self._users[org_id] = self._users.get(org_id, 0) + 1
        try:
            await self._acquire(slot)
            try:
                yield
            finally:
                slot.release()
        finally:
            self._users[org_id] -= 1
            if self._users[org_id] == 0:
                del self._users[org_id]
                del self._slots[org_id]

    async def _acquire(self, slot: asyncio.Semaphore) -> None:
        if slot.locked() and self._wait <= 0:
            raise self._busy()
        try:
            async with asyncio.timeout(self._wait):
                await slot.acquire()
        except TimeoutError:
            raise self._busy() from None

    def _busy(self) -> ProbeBusy:
        return self._refusal(
            f"your organisation already runs {self._per_org} {self._refusal.work} at once and none "
            f"ended within {self._wait:g} s; try again later",
            retry_after=self._retry_after,
        )


class SingleFlight(Generic[T]):
    """One run of a piece of work per key at a time: a caller asking for a key whose run is
    under way waits for it and shares its outcome (its result or its error) instead of doing
    the same work again. A run whose caller was cancelled shares nothing: the next waiter runs
    it itself."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``(outcome, whether this caller ran it)``."""
        while (flight := self._flights.get(key)) is not None:
            try:
                return await asyncio.shield(flight), False
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if flight.cancelled() and (task is None or not task.cancelling()):
                    continue  # the runner was cancelled, not us: run it ourselves
                raise
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            result = await work()
        except Exception as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no warning when nobody else waited
            raise
        except BaseException:
            flight.cancel()
            raise
        finally:
            del self._flights[key]
        flight.set_result(result)
        return result, True
