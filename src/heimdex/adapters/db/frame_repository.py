"""``SqlFrameRepository``: the exact Hamming search over frame fingerprints, in plain SQL that
SQLite and PostgreSQL answer alike.

Multi-index hashing (``heimdex.domain.frames``): each fingerprint's eight 8-bit bands are
columns indexed with the organisation. A query's candidates are the union of eight B-tree
look-ups, one per band (``org_id = :org AND b<i> = :band``); any fingerprint within a distance
below eight shares at least one band with the query, so none is missed. The exact distance is
computed in SQL on the candidates only: per band, the XOR of the two values
(``(a | b) - (a & b)``, the operators both databases share) indexes a 256-character string of
bit counts (``substr``) — no extension, no user function, the same integers on both.

Ties are broken by asset id then time; a UUID compares as its 16 bytes on both databases (the
GUID type stores bytes on SQLite), which is the order of its text form, the one
``order_key`` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Integer,
    Table,
    and_,
    cast,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    union,
)
from sqlalchemy.sql import ColumnElement

from heimdex.adapters.db.repositories import ASSETS, _OrgRepository
from heimdex.adapters.db.tables import metadata
from heimdex.domain.errors import InvalidInput
from heimdex.domain.frames import (
    BANDS,
    MAX_DISTANCE,
    FrameFingerprint,
    FrameMatch,
    FramePair,
    bands,
    to_hex,
)
from heimdex.domain.model import AssetStatus

FRAMES: Table = metadata.tables["frames"]
# The number of set bits of 0…255, one character each: position v + 1 holds popcount(v).
_BIT_COUNTS = "".join(str(value.bit_count()) for value in range(256))
# Rows per INSERT statement: well under SQLite's 32,766 bound parameters (11 columns each).
_INSERT_BATCH = 1000


def _band(table: Any, index: int) -> ColumnElement[int]:
    column: ColumnElement[int] = table.c[f"b{index}"]
    return column


def _bits(a: ColumnElement[int] | int, b: ColumnElement[int] | int) -> ColumnElement[int]:
    """popcount(a XOR b) of two 8-bit values, in SQL both databases run."""
    left = a if not isinstance(a, int) else literal_column(str(int(a)), Integer)
    right = b if not isinstance(b, int) else literal_column(str(int(b)), Integer)
    xor = left.op("|")(right) - left.op("&")(right)
    return cast(func.substr(_BIT_COUNTS, xor + 1, 1), Integer)


def _distance(
    left: Sequence[ColumnElement[int] | int], right: Sequence[ColumnElement[int]]
) -> ColumnElement[int]:
    total = _bits(left[0], right[0])
    for a, b in zip(left[1:], right[1:], strict=True):
        total = total + _bits(a, b)
    return total


def _check(max_distance: int) -> None:
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise InvalidInput(f"max_distance must be between 0 and {MAX_DISTANCE}")


class SqlFrameRepository(_OrgRepository):
    """The organisation's fingerprinted frames; another organisation's never appear."""

    async def replace(self, asset_id: UUID, frames: Sequence[FrameFingerprint]) -> None:
        await self._change(
            delete(FRAMES).where(FRAMES.c.org_id == self._org_id, FRAMES.c.asset_id == asset_id)
        )
        rows = [self._row(asset_id, frame) for frame in frames]
        for start in range(0, len(rows), _INSERT_BATCH):
            await self._execute(insert(FRAMES).values(rows[start : start + _INSERT_BATCH]))

    def _row(self, asset_id: UUID, frame: FrameFingerprint) -> dict[str, Any]:
        row: dict[str, Any] = {
            "org_id": self._org_id,
            "asset_id": asset_id,
            "time": frame.time,
            "fingerprint": to_hex(frame.fingerprint),
        }
        for index, value in enumerate(bands(frame.fingerprint)):
            row[f"b{index}"] = value
        return row

    async def of_asset(self, asset_id: UUID) -> list[FrameFingerprint]:
        result = await self._execute(
            select(FRAMES.c.time, FRAMES.c.fingerprint)
            .where(FRAMES.c.org_id == self._org_id, FRAMES.c.asset_id == asset_id)
            .order_by(FRAMES.c.time, FRAMES.c.id)
        )
        return [
            FrameFingerprint(time=float(row.time), fingerprint=int(row.fingerprint, 16))
            for row in result
        ]

    async def nearest(self, fingerprint: int, *, max_distance: int, limit: int) -> list[FrameMatch]:
        _check(max_distance)
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        query = bands(fingerprint)
        candidates = union(
            *(
                select(FRAMES.c.id).where(
                    FRAMES.c.org_id == self._org_id, _band(FRAMES, index) == query[index]
                )
                for index in range(BANDS)
            )
        ).subquery("candidates")
        scored = (
            select(
                FRAMES.c.asset_id,
                FRAMES.c.time,
                _distance(list(query), [_band(FRAMES, i) for i in range(BANDS)]).label("distance"),
            )
            .where(FRAMES.c.org_id == self._org_id, FRAMES.c.id.in_(select(candidates.c.id)))
            .subquery("scored")
        )
        result = await self._execute(
            select(scored)
            .where(scored.c.distance <= max_distance)
            .order_by(scored.c.distance, scored.c.asset_id, scored.c.time)
            .limit(limit)
        )
        return [
            FrameMatch(
                asset_id=UUID(str(row.asset_id)), time=float(row.time), distance=int(row.distance)
            )
            for row in result
        ]

    async def shared(self, asset_id: UUID, *, max_distance: int) -> list[FramePair]:
        _check(max_distance)
        mine, other = FRAMES.alias("mine"), FRAMES.alias("other")
        pairs = union(
            *(
                select(mine.c.id.label("mine_id"), other.c.id.label("other_id"))
                .join(
                    other,
                    and_(
                        other.c.org_id == mine.c.org_id,
                        _band(other, index) == _band(mine, index),
                    ),
                )
                .where(
                    mine.c.org_id == self._org_id,
                    mine.c.asset_id == asset_id,
                    other.c.asset_id != asset_id,
                )
                for index in range(BANDS)
            )
        ).subquery("pairs")
        a, b = FRAMES.alias("a"), FRAMES.alias("b")
        scored = (
            select(
                a.c.time.label("time"),
                b.c.asset_id.label("other_asset_id"),
                b.c.time.label("other_time"),
                _distance(
                    [_band(a, i) for i in range(BANDS)], [_band(b, i) for i in range(BANDS)]
                ).label("distance"),
            )
            .select_from(pairs)
            .join(a, a.c.id == pairs.c.mine_id)
            .join(b, b.c.id == pairs.c.other_id)
            .where(a.c.org_id == self._org_id, b.c.org_id == self._org_id)
            .subquery("scored")
        )
        result = await self._execute(
            select(scored)
            .where(scored.c.distance <= max_distance)
            .order_by(scored.c.time, scored.c.other_asset_id, scored.c.other_time)
        )
        return [
            FramePair(
                time=float(row.time),
                other_asset_id=UUID(str(row.other_asset_id)),
                other_time=float(row.other_time),
                distance=int(row.distance),
            )
            for row in result
        ]

    async def unindexed_assets(self, *, after: UUID | None, limit: int) -> list[UUID]:
        conditions: list[ColumnElement[bool]] = [
            ASSETS.c.org_id == self._org_id,
            ASSETS.c.status == AssetStatus.READY.value,
            ASSETS.c.video_codec.is_not(None),
            ~exists().where(FRAMES.c.org_id == self._org_id, FRAMES.c.asset_id == ASSETS.c.id),
        ]
        if after is not None:
            conditions.append(ASSETS.c.id > after)
        result = await self._execute(
            select(ASSETS.c.id).where(*conditions).order_by(ASSETS.c.id).limit(limit)
        )
        return [UUID(str(value)) for value in result.scalars()]
