"""``SqlFrameRepository``: the exact Hamming search over frame fingerprints, in plain SQL that
SQLite and PostgreSQL answer alike.

Multi-index hashing (``heimdex.domain.frames``): each fingerprint's four 16-bit bands are
columns indexed with the organisation. A query's candidates are the union of four B-tree
look-ups, one per band, each of the band's value and its 16 one-bit neighbours
(``org_id = :org AND b<i> IN (…)``); any fingerprint within distance 7 has a band among those,
so none is missed. The exact distance is computed in SQL on the candidates only: per band, the
XOR of the two values (``(a | b) - (a & b)``, the operators both databases share), each of its
two bytes indexing a 256-character string of bit counts (``substr``) — no extension, no user
function, the same integers on both.

Ties are broken by asset id then time; a UUID compares as its 16 bytes on both databases (the
GUID type stores bytes on SQLite), which is the order of its text form, the one
``order_key`` uses.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import (
    CompoundSelect,
    Float,
    Integer,
    Select,
    String,
    Table,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    select,
    union,
    union_all,
)
from sqlalchemy.engine import Result
from sqlalchemy.sql import ColumnElement, Executable

from heimdex.adapters.db.engine import database_errors
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
    probes,
    to_hex,
)
from heimdex.domain.model import AssetStatus

FRAMES: Table = metadata.tables["frames"]
# The number of set bits of 0…255, one character each: position v + 1 holds popcount(v).
_BIT_COUNTS = "".join(str(value.bit_count()) for value in range(256))
# Rows per INSERT statement: well under SQLite's 32,766 bound parameters (11 columns each).
_INSERT_BATCH = 1000


def bands_of(table: Any) -> list[ColumnElement[int]]:
    return [_band(table, index) for index in range(BANDS)]


def _band(table: Any, index: int) -> ColumnElement[int]:
    column: ColumnElement[int] = table.c[f"b{index}"]
    return column


def _xor(a: ColumnElement[int], b: ColumnElement[int]) -> ColumnElement[int]:
    """a XOR b of two non-negative integers, in SQL both databases run."""
    return a.op("|")(b) - a.op("&")(b)


def _byte_bits(byte: ColumnElement[int]) -> ColumnElement[int]:
    return cast(func.substr(_BIT_COUNTS, byte + 1, 1), Integer)


def _bits(a: ColumnElement[int], b: ColumnElement[int]) -> ColumnElement[int]:
    """popcount(a XOR b) of two 16-bit bands: the bit counts of its two bytes."""
    xor = _xor(a, b)
    return _byte_bits(xor.op(">>")(8)) + _byte_bits(xor.op("&")(0xFF))


def _distance(
    left: Sequence[ColumnElement[int]], right: Sequence[ColumnElement[int]]
) -> ColumnElement[int]:
    total = _bits(left[0], right[0])
    for a, b in zip(left[1:], right[1:], strict=True):
        total = total + _bits(a, b)
    return total


# Frames of an asset per statement in ``shared``.
_SHARED_BATCH = 16


def _check(max_distance: int) -> None:
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise InvalidInput(f"max_distance must be between 0 and {MAX_DISTANCE}")


# -- the statements: built once, their values bound at each call ------------------------------
# (Building the expression trees costs milliseconds; compiled once, a query is a cache hit.)
def _near_values(prefix: str, fingerprint: int) -> dict[str, int]:
    """The bound values of ``_near(prefix)`` for ``fingerprint``: its bands and their probes."""
    values: dict[str, int] = {}
    for index, band in enumerate(bands(fingerprint)):
        values[f"{prefix}q{index}"] = band
        for number, probe in enumerate(probes(band)):
            values[f"{prefix}p{index}_{number}"] = probe
    return values


def _near(prefix: str) -> Select[Any]:
    """The organisation's (``:org``) frames within ``:<prefix>max`` of a fingerprint (its
    bands ``:<prefix>q<i>``, their probes ``:<prefix>p<i>_<n>``): (asset_id, time, distance)."""
    query = [bindparam(f"{prefix}q{i}", type_=Integer) for i in range(BANDS)]
    org = bindparam("org", type_=String)
    # Each band's look-up reads its rows (an index scan under the organisation); the union
    # drops a row two bands found. No join back by id: the plan has no choice to get wrong.
    candidates = union(
        *(
            select(FRAMES.c.id, FRAMES.c.asset_id, FRAMES.c.time, *bands_of(FRAMES)).where(
                FRAMES.c.org_id == org,
                _band(FRAMES, index).in_(
                    [
                        bindparam(f"{prefix}p{index}_{n}", type_=Integer)
                        for n in range(len(probes(0)))
                    ]
                ),
            )
            for index in range(BANDS)
        )
    ).subquery(f"{prefix}candidates")
    scored = select(
        candidates.c.asset_id,
        candidates.c.time,
        _distance(query, bands_of(candidates)).label("distance"),
    ).subquery(f"{prefix}scored")
    return select(scored).where(scored.c.distance <= bindparam(f"{prefix}max", type_=Integer))


@functools.cache
def _nearest_statement() -> Select[Any]:
    near = _near("").subquery("near")
    return (
        select(near)
        .order_by(near.c.distance, near.c.asset_id, near.c.time)
        .limit(bindparam("limit", type_=Integer))
    )


@functools.cache
def _shared_statement(frames: int) -> CompoundSelect[Any]:
    """``frames`` queries (``f<n>_``) at once, each answer with its frame's time, the asset's
    own frames (``:asset``) left out."""
    parts = []
    for number in range(frames):
        near = _near(f"f{number}_").subquery(f"f{number}_near")
        parts.append(
            select(
                bindparam(f"f{number}_time", type_=Float).label("mine_time"),
                near.c.asset_id,
                near.c.time,
                near.c.distance,
            ).where(near.c.asset_id != bindparam("asset", type_=FRAMES.c.asset_id.type))
        )
    return union_all(*parts)


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
        params = {"org": self._org_id, "limit": limit, **_near_values("", fingerprint)}
        params["max"] = max_distance
        result = await self._run(_nearest_statement(), params)
        return [
            FrameMatch(
                asset_id=UUID(str(row.asset_id)), time=float(row.time), distance=int(row.distance)
            )
            for row in result
        ]

    async def shared(self, asset_id: UUID, *, max_distance: int) -> list[FramePair]:
        _check(max_distance)
        own = await self.of_asset(asset_id)
        pairs: list[FramePair] = []
        # Each frame of the asset is a query of its own (the index look-ups of ``nearest``),
        # ``_SHARED_BATCH`` of them to a statement. (One join of the asset's frames with every
        # probe lets PostgreSQL's planner choose to hash the probes and scan the whole table.)
        for start in range(0, len(own), _SHARED_BATCH):
            batch = own[start : start + _SHARED_BATCH]
            params: dict[str, Any] = {"org": self._org_id, "asset": asset_id}
            for number, frame in enumerate(batch):
                params |= _near_values(f"f{number}_", frame.fingerprint)
                params[f"f{number}_max"] = max_distance
                params[f"f{number}_time"] = frame.time
            result = await self._run(_shared_statement(len(batch)), params)
            pairs.extend(
                FramePair(
                    time=float(row.mine_time),
                    other_asset_id=UUID(str(row.asset_id)),
                    other_time=float(row.time),
                    distance=int(row.distance),
                )
                for row in result
            )
        return sorted(pairs, key=lambda p: (p.time, str(p.other_asset_id), p.other_time))

    async def _run(self, statement: Executable, params: dict[str, Any]) -> Result[Any]:
        with database_errors():
            return await self._session.execute(statement, params)

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
