"""Who may take the next database connection: each organisation's share of a pool.

A pool of ``capacity`` connections is shared by every organisation. One organisation holds at
most ``per_org`` of them at once, so the rest stay open to the others however many requests it
sends; when a connection comes free, the waiting organisation that holds the fewest takes it
(the one waiting longest among equals), so an organisation under its share is served before one
that already holds more. Pure bookkeeping: the caller does the waiting (``ConnectionShare`` in
``application/connection_share.py``).
"""

from __future__ import annotations

from collections.abc import Mapping


def share_of(capacity: int, fraction: float) -> int:
    """The connections one organisation may hold of a pool of ``capacity``: ``fraction`` of it
    rounded down, and at least one (a pool of one is shared in turns)."""
    if capacity < 1:
        raise ValueError("a pool has at least one connection")
    if not 0 < fraction <= 1:
        raise ValueError("a share is a fraction of the pool, above 0 and at most 1")
    return max(1, int(capacity * fraction))


class FairShare:
    """The connections each organisation holds of one pool, and who takes the next one."""

    __slots__ = ("_capacity", "_held", "_per_org", "_total")

    def __init__(self, capacity: int, per_org: int) -> None:
        if capacity < 1 or per_org < 1:
            raise ValueError("a pool and a share have at least one connection")
        self._capacity = capacity
        self._per_org = min(per_org, capacity)
        self._held: dict[str, int] = {}
        self._total = 0

    @property
    def per_org(self) -> int:
        return self._per_org

    @property
    def capacity(self) -> int:
        return self._capacity

    def held(self, org_id: str) -> int:
        """How many connections ``org_id`` holds now."""
        return self._held.get(org_id, 0)

    @property
    def total(self) -> int:
        return self._total

    def at_share(self, org_id: str) -> bool:
        """``org_id`` holds all it may: its next request waits for one of its own to end."""
        return self.held(org_id) >= self._per_org

    def may_take(self, org_id: str) -> bool:
        """A connection is free and ``org_id`` is under its share."""
        return self._total < self._capacity and not self.at_share(org_id)

    def next_in_turn(self, waiting: Mapping[str, int]) -> str | None:
        """Of the organisations ``waiting`` (each with when its longest-waiting request came, a
        number that grows with each request), the one to serve now: among those that may take a
        connection, the one that holds the fewest, the one waiting longest of equals. ``None``:
        nobody may."""
        if self._total >= self._capacity:
            return None
        chosen: str | None = None
        best = (self._per_org, 0)
        for org_id, since in waiting.items():
            rank = (self.held(org_id), since)
            if rank[0] < self._per_org and (chosen is None or rank < best):
                chosen, best = org_id, rank
        return chosen

    def take(self, org_id: str) -> None:
        """``org_id`` takes a connection (``may_take`` must hold)."""
        if not self.may_take(org_id):
            raise RuntimeError(f"{org_id!r} may not take a connection now")
        self._held[org_id] = self.held(org_id) + 1
        self._total += 1

    def give_back(self, org_id: str) -> None:
        """``org_id`` is done with a connection it took."""
        held = self.held(org_id)
        if held < 1:
            raise RuntimeError(f"{org_id!r} holds no connection")
        if held == 1:
            del self._held[org_id]  # no entry left behind per organisation ever seen
        else:
            self._held[org_id] = held - 1
        self._total -= 1
