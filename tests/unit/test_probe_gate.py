"""Probe slots per organisation and single flights, on their own (asyncio, no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from heimdex.application.probe_gate import ProbeSlots, SingleFlight
from heimdex.domain.errors import InvalidMedia, ProbeBusy


async def test_an_org_past_its_slots_waits_then_gets_probe_busy_with_retry_after() -> None:
    slots = ProbeSlots(per_org=1, wait_seconds=0.05, retry_after=3)
    async with slots.hold("org-a"):
        with pytest.raises(ProbeBusy) as caught:
            async with slots.hold("org-a"):
                pass
        assert caught.value.code == "probe_busy"
        assert caught.value.retry_after == 3
        async with slots.hold("org-b"):  # another organisation is not held up
            pass
    async with slots.hold("org-a"):  # free again
        pass


async def test_a_waiting_probe_gets_the_slot_when_it_frees_within_the_wait() -> None:
    slots = ProbeSlots(per_org=1, wait_seconds=5)
    order: list[str] = []

    async def first() -> None:
        async with slots.hold("org-a"):
            order.append("first")
            await asyncio.sleep(0.05)

    async def second() -> None:
        await asyncio.sleep(0.01)
        async with slots.hold("org-a"):
            order.append("second")

    await asyncio.gather(first(), second())
    assert order == ["first", "second"]


async def test_no_wait_means_refused_at_once_and_no_cap_means_none() -> None:
    at_once = ProbeSlots(per_org=1, wait_seconds=0)
    async with at_once.hold("org-a"):
        with pytest.raises(ProbeBusy):
            async with at_once.hold("org-a"):
                pass
    uncapped = ProbeSlots(per_org=0, wait_seconds=0)
    async with uncapped.hold("org-a"), uncapped.hold("org-a"):
        pass


async def test_one_flight_per_key_shares_its_result_and_its_error() -> None:
    flights: SingleFlight[int] = SingleFlight()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.02)
        return 7

    outcomes = await asyncio.gather(*(flights.run("k", work) for _ in range(3)))
    assert sorted(outcomes) == [(7, False), (7, False), (7, True)]
    assert runs == 1

    async def fails() -> int:
        await asyncio.sleep(0.02)
        raise InvalidMedia("not media")

    failures = await asyncio.gather(
        *(flights.run("k", fails) for _ in range(2)), return_exceptions=True
    )
    assert all(isinstance(f, InvalidMedia) for f in failures)
    assert (await flights.run("k", work)) == (7, True)  # the next flight runs anew


async def test_a_cancelled_runner_leaves_the_work_to_the_next_waiter() -> None:
    flights: SingleFlight[int] = SingleFlight()
    started = asyncio.Event()

    async def slow() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    async def quick() -> int:
        return 2

    runner = asyncio.ensure_future(flights.run("k", slow))
    await started.wait()
    follower = asyncio.ensure_future(flights.run("k", quick))
    await asyncio.sleep(0)
    runner.cancel()
    assert await follower == (2, True)
    with pytest.raises(asyncio.CancelledError):
        await runner
