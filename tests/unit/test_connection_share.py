"""Each organisation's share of a database pool: the rule (who takes the next connection) and
the waiting in front of the pool (asyncio, no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from heimdex.application.connection_share import ConnectionShare, SharedUnitOfWorkFactory
from heimdex.domain.connection_share import FairShare, share_of
from heimdex.domain.errors import DatabaseBusy, DatabaseUnavailable
from tests.builders import make_asset, make_upload
from tests.unit.fakes import FakeDatabase


def test_a_share_is_a_fraction_of_the_pool_rounded_down_and_at_least_one() -> None:
    assert share_of(20, 0.5) == 10
    assert share_of(15, 0.5) == 7
    assert share_of(4, 0.5) == 2
    assert share_of(1, 0.5) == 1
    assert share_of(3, 0.1) == 1
    assert share_of(20, 1.0) == 20
    for fraction in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            share_of(20, fraction)


def test_an_org_takes_up_to_its_share_and_the_others_take_the_rest() -> None:
    rule = FairShare(capacity=4, per_org=2)
    rule.take("a")
    rule.take("a")
    assert rule.at_share("a")
    assert not rule.may_take("a")
    assert rule.may_take("b")
    rule.take("b")
    rule.take("c")
    assert rule.total == 4
    assert not rule.may_take("d")  # the pool is taken, though d holds nothing
    with pytest.raises(RuntimeError):
        rule.take("d")


def test_the_next_connection_goes_to_the_waiting_org_holding_fewest_then_the_earliest() -> None:
    rule = FairShare(capacity=4, per_org=4)
    for org in ("a", "a", "a", "c"):
        rule.take(org)
    assert rule.next_in_turn({"a": 1, "b": 2}) is None  # nothing is free
    rule.give_back("a")
    # a waited first and holds 2, c holds 1, b holds none: b, though it came last.
    assert rule.next_in_turn({"a": 1, "c": 2, "b": 4}) == "b"
    assert rule.next_in_turn({"a": 1, "c": 2}) == "c"
    assert rule.next_in_turn({"f": 3, "e": 2, "c": 1}) == "e"  # equals: the one waiting longest


def test_an_org_at_its_share_is_never_next_even_with_connections_free() -> None:
    rule = FairShare(capacity=10, per_org=2)
    rule.take("a")
    rule.take("a")
    assert rule.next_in_turn({"a": 1}) is None
    assert rule.next_in_turn({"a": 1, "b": 2}) == "b"


def test_giving_back_forgets_an_org_that_holds_nothing() -> None:
    rule = FairShare(capacity=2, per_org=1)
    rule.take("a")
    rule.give_back("a")
    assert rule.held("a") == 0
    assert rule.total == 0
    with pytest.raises(RuntimeError):
        rule.give_back("a")


def share(capacity: int, per_org: int, wait: float = 5.0) -> ConnectionShare:
    return ConnectionShare(FairShare(capacity, per_org), wait, retry_after=7, pool="read")


async def until_waiting(gate: ConnectionShare, count: int) -> None:
    while gate.waiting < count:  # noqa: ASYNC110 - the gate has no event to wait on; a turn of the loop at a time
        await asyncio.sleep(0)


async def test_a_greedy_org_waits_for_its_own_while_another_takes_a_free_connection() -> None:
    gate = share(capacity=4, per_org=2)
    await gate.take("a")
    await gate.take("a")
    greedy = asyncio.create_task(gate.take("a"))
    await until_waiting(gate, 1)
    await gate.take("b")  # at once: a's third waits in the share's queue, not in front of b
    assert not greedy.done()
    gate.give_back("a")
    await greedy
    assert gate.rule.held("a") == 2


async def test_a_waiting_org_under_its_share_is_served_before_the_greedy_orgs_queue() -> None:
    gate = share(capacity=3, per_org=3)  # no cap: only the order is left to decide
    for _ in range(3):
        await gate.take("a")
    served: list[str] = []

    async def request(org: str) -> None:
        await gate.take(org)
        served.append(org)

    greedy = [asyncio.create_task(request("a")) for _ in range(3)]
    await until_waiting(gate, 3)
    other = asyncio.create_task(request("b"))
    await until_waiting(gate, 4)
    gate.give_back("a")
    await other
    assert served == ["b"]  # though a's three came first
    gate.give_back("a")
    gate.give_back("a")
    await asyncio.sleep(0)
    assert served == ["b", "a", "a"]
    gate.give_back("b")
    await asyncio.gather(*greedy)
    assert gate.rule.held("a") == 3


async def test_past_its_share_and_the_wait_an_org_gets_database_busy_with_retry_after() -> None:
    gate = share(capacity=4, per_org=1, wait=0.01)
    await gate.take("a")
    with pytest.raises(DatabaseBusy) as caught:
        await gate.take("a")
    assert caught.value.code == "database_busy"
    assert caught.value.retry_after == 7
    assert gate.waiting == 0
    assert gate.rule.held("a") == 1


async def test_an_org_under_its_share_finding_the_pool_taken_gets_unavailable() -> None:
    gate = share(capacity=2, per_org=1, wait=0.01)
    await gate.take("a")
    await gate.take("c")
    with pytest.raises(DatabaseUnavailable, match="every read connection is in use"):
        await gate.take("b")


async def test_no_wait_refuses_at_once() -> None:
    gate = share(capacity=4, per_org=1, wait=0)
    await gate.take("a")
    with pytest.raises(DatabaseBusy):
        await gate.take("a")
    await gate.take("b")


async def test_a_cancelled_waiter_leaves_the_queue_and_a_served_one_hands_its_turn_on() -> None:
    gate = share(capacity=1, per_org=1)
    await gate.take("a")
    gone = asyncio.create_task(gate.take("b"))
    await until_waiting(gate, 1)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert gate.waiting == 0
    # Served and cancelled before it ran: the connection goes on to the next in turn.
    served_then_cancelled = asyncio.create_task(gate.take("b"))
    nxt = asyncio.create_task(gate.take("c"))
    await until_waiting(gate, 2)
    gate.give_back("a")  # b's turn
    served_then_cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await served_then_cancelled
    await nxt
    assert gate.rule.held("c") == 1
    assert gate.rule.total == 1


async def test_a_shared_unit_of_work_holds_a_connection_from_entering_to_leaving() -> None:
    gate = share(capacity=4, per_org=1, wait=0)
    database = FakeDatabase()
    units = SharedUnitOfWorkFactory(database, gate)
    asset = make_asset(make_upload(org_id="a"))
    async with units("a") as unit:
        assert gate.rule.held("a") == 1
        await unit.assets.add(asset)  # the unit's own repositories, through the wrapper
        await unit.commit()
        with pytest.raises(DatabaseBusy):
            async with units("a"):
                pass
    assert gate.rule.total == 0
    async with units("a") as unit:
        assert await unit.assets.get(asset.id) == asset
    with pytest.raises(ZeroDivisionError):
        async with units("a"):
            raise ZeroDivisionError
    database.unavailable_for = 1
    with pytest.raises(DatabaseUnavailable):
        async with units("a"):
            pass
    assert gate.rule.total == 0  # given back however the unit ended
