"""``PgCatalogueReads``: the API's hot reads (``CatalogueReads``) on asyncpg directly.

The unit of work pays for SQLAlchemy's session, a pre-ping and four round trips around every
read (``BEGIN``, ``set_config``, the query, ``ROLLBACK``). Here, on a pool of its own sized to
the concurrency, reading one asset or one job is one round trip: a call of
``heimdex_read_asset``/``heimdex_read_job`` (migration 0012), which sets the organisation with
``set_config(…, true)`` and selects the row in the one statement's own transaction, as the
runtime role under row-level security. A listing is three:

1. ``BEGIN READ ONLY; SELECT set_config('heimdex.org_id', '<org>', true)`` — one simple-protocol
   message. The organisation is a literal: it is checked against the organisation-id alphabet
   (no quote, no backslash can occur) and quoted besides. ``is_local=true`` as in the unit of
   work, so the setting ends with the transaction and row-level security confines the query to
   the organisation exactly as strictly;
2. the query, a prepared statement (asyncpg's statement cache), with its own ``org_id``
   filter as well, as every repository statement has;
3. ``ROLLBACK``: nothing was written, nothing to commit. It is also the whole reset the pool
   does (asyncpg's default would cost a fourth round trip): the pool's connections run nothing
   but these reads (no session settings, no LISTEN, no advisory locks, no cursors outside the
   transaction).

No pre-ping: a pooled connection that died (PostgreSQL restarted, a backend terminated) fails
the read, which is tried once more on a fresh connection; reads have no side effect to repeat.
What still fails because the database cannot be reached is ``DatabaseUnavailable`` (a 503),
like every other adapter's.

The pool opens on the first read (so building the services connects to nothing) and belongs to
the process: each `heimdex serve` worker has its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy.engine import make_url

from heimdex.adapters.db.repositories import ASSETS, JOBS, asset_from_row, job_from_row
from heimdex.adapters.db.unit_of_work import ORG_SETTING
from heimdex.domain.errors import DatabaseUnavailable, InvalidInput
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import (
    Asset,
    AssetFilter,
    AssetPage,
    Job,
    JobFilter,
    JobPage,
    PageCursor,
)
from heimdex.domain.storage_keys import is_valid_org_id

#: how long a read waits for a pooled connection (or for a new one to connect) before 503
ACQUIRE_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0

_ASSET_COLUMNS = ", ".join(column.name for column in ASSETS.c)
_JOB_COLUMNS = ", ".join(column.name for column in JOBS.c)
_NEWEST_FIRST = "ORDER BY created_at DESC, id DESC"

# A connection that is gone, or a server that cannot serve now: the read may be tried again on
# another connection (08 connection exception, 57P operator intervention: terminated, shutting
# down, starting up).
_RETRY_SQLSTATES = ("08", "57P")
# What says "no usable database" once the retry failed too (as ``engine.is_unavailable``).
_UNAVAILABLE_SQLSTATES = ("08", "28", "3D", "53", "57P")

_media = msgspec.json.Decoder(MediaInfo)


def asyncpg_dsn(url: str) -> str:
    """The plain libpq-style DSN asyncpg takes, from the service's SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _checked(org_id: str) -> str:
    if not org_id or not is_valid_org_id(org_id):
        # Never reached with a principal (the token codec checks the same alphabet); a literal
        # with anything else in it is refused rather than quoted.
        raise ValueError(f"not an organisation id: {org_id!r}")
    return org_id


def _begin(org_id: str) -> str:
    """The first round trip: the transaction and its organisation, in one simple query."""
    _checked(org_id)
    literal = "'" + org_id.replace("'", "''") + "'"
    return f"BEGIN READ ONLY; SELECT set_config('{ORG_SETTING}', {literal}, true)"


#: what the pool's connections are called in ``pg_stat_activity``
APPLICATION_NAME = "heimdex-reads"


async def _no_reset(_connection: asyncpg.Connection) -> None:
    """The pool's reset: nothing left to undo once the read rolled its transaction back (and
    asyncpg still rolls back a transaction a failed read left open)."""


def _sqlstate(error: BaseException) -> str:
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else ""


def _connection_lost(error: BaseException) -> bool:
    """The connection (or the server behind it) failed, not the statement: worth one retry."""
    if isinstance(error, OSError | asyncpg.InterfaceError | asyncpg.InvalidCachedStatementError):
        return True
    return _sqlstate(error).startswith(_RETRY_SQLSTATES)


def _unavailable(error: BaseException) -> bool:
    if isinstance(error, OSError | asyncio.TimeoutError | asyncpg.InterfaceError):
        return True
    return _sqlstate(error).startswith(_UNAVAILABLE_SQLSTATES)


def asset_from_record(row: Any) -> Asset:
    return asset_from_row(row, _media.decode(row["media"]))  # asyncpg answers jsonb as its text


class _Where:
    """A WHERE clause and its positional arguments, built together."""

    def __init__(self, org_id: str) -> None:
        self.args: list[Any] = [org_id]
        self.conditions = ["org_id = $1"]

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, condition: str) -> None:
        self.conditions.append(condition)

    def after(self, cursor: PageCursor | None) -> None:
        if cursor is not None:
            at, key = self.arg(cursor.created_at), self.arg(cursor.id)
            self.add(f"(created_at < {at} OR (created_at = {at} AND id < {key}))")

    def page(self, columns: str, table: str, limit: int) -> str:
        # One more than asked tells whether another page exists. Only names from the table
        # definitions and placeholders are put into the text; every value is an argument.
        conditions = " AND ".join(self.conditions)
        limit_arg = self.arg(limit + 1)
        return f"SELECT {columns} FROM {table} WHERE {conditions} {_NEWEST_FIRST} LIMIT {limit_arg}"  # noqa: S608


def _asset_listing(
    org_id: str, filters: AssetFilter, limit: int, after: PageCursor | None
) -> tuple[str, list[Any]]:
    """The statement of ``SqlAssetRepository.list``: the same filters, the same order."""
    where = _Where(org_id)
    if filters.status is not None:
        where.add(f"status = {where.arg(filters.status.value)}")
    if filters.min_duration is not None:
        where.add(f"duration >= {where.arg(filters.min_duration)}")
    if filters.max_duration is not None:
        where.add(f"duration <= {where.arg(filters.max_duration)}")
    if filters.codec is not None:
        codec = where.arg(filters.codec.lower())
        where.add(f"(video_codec = {codec} OR audio_codec = {codec})")
    if filters.min_height is not None:
        where.add(f"display_height >= {where.arg(filters.min_height)}")
    if filters.created_after is not None:
        where.add(f"created_at > {where.arg(filters.created_after)}")
    if filters.created_before is not None:
        where.add(f"created_at < {where.arg(filters.created_before)}")
    if filters.sha256 is not None:
        where.add(f"sha256 = {where.arg(filters.sha256.lower())}")
    where.after(after)
    return where.page(_ASSET_COLUMNS, "assets", limit), where.args


def _job_listing(
    org_id: str, filters: JobFilter, limit: int, after: PageCursor | None
) -> tuple[str, list[Any]]:
    """The statement of ``SqlJobRepository.list``."""
    where = _Where(org_id)
    if filters.status is not None:
        where.add(f"status = {where.arg(filters.status.value)}")
    if filters.kind is not None:
        where.add(f"kind = {where.arg(filters.kind.value)}")
    if filters.asset_id is not None:
        where.add(f"asset_id = {where.arg(filters.asset_id)}")
    if filters.created_after is not None:
        where.add(f"created_at > {where.arg(filters.created_after)}")
    if filters.created_before is not None:
        where.add(f"created_at < {where.arg(filters.created_before)}")
    where.after(after)
    return where.page(_JOB_COLUMNS, "jobs", limit), where.args


# The functions of migration 0012: set_config and the SELECT in one statement.
_GET_ASSET = "SELECT * FROM heimdex_read_asset($1, $2)"
_GET_JOB = "SELECT * FROM heimdex_read_job($1, $2)"


class PgCatalogueReads:
    """``CatalogueReads`` on an asyncpg pool of at most ``pool_size`` connections."""

    def __init__(self, url: str, *, pool_size: int) -> None:
        if pool_size < 1:
            raise ValueError("the read pool needs at least one connection")
        self._dsn = asyncpg_dsn(url)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        #: reads that met a dead connection and were tried again (for tests and diagnostics)
        self.retried = 0

    @property
    def pool(self) -> asyncpg.Pool | None:
        """The pool once a read opened it (for tests and diagnostics)."""
        return self._pool

    async def _open(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    reset=_no_reset,
                    timeout=CONNECT_TIMEOUT_SECONDS,
                    server_settings={"application_name": APPLICATION_NAME},
                )
            return self._pool

    async def _fetch(self, org_id: str, query: str, args: list[Any]) -> list[Any]:
        """``query`` in a read-only transaction scoped to ``org_id``."""
        begin = _begin(org_id)

        async def scoped(connection: PoolConnectionProxy) -> list[Any]:
            await connection.execute(begin)
            try:
                rows: list[Any] = await connection.fetch(query, *args)
            finally:
                # Also after a failed query: its transaction must not stay open (a dead
                # connection fails here too, and is retried as such).
                await connection.execute("ROLLBACK")
            return rows

        return await self._run(scoped)

    async def _call(self, query: str, org_id: str, row_id: UUID) -> list[Any]:
        """A read function of migration 0012: it scopes its own statement to ``org_id``."""
        org_id = _checked(org_id)

        async def call(connection: PoolConnectionProxy) -> list[Any]:
            rows: list[Any] = await connection.fetch(query, org_id, row_id)
            return rows

        return await self._run(call)

    async def _run(self, read: Callable[[PoolConnectionProxy], Awaitable[list[Any]]]) -> list[Any]:
        for attempt in (1, 2):
            try:
                pool = await self._open()
                async with pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
                    return await read(connection)
            except Exception as error:
                if attempt == 1 and _connection_lost(error):
                    self.retried += 1
                    continue  # a dead pooled connection: once more, on a fresh one
                if _unavailable(error):
                    raise DatabaseUnavailable(f"the database is not available: {error}") from error
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def asset(self, org_id: str, asset_id: UUID) -> Asset | None:
        rows = await self._call(_GET_ASSET, org_id, asset_id)
        return asset_from_record(rows[0]) if rows else None

    async def assets(
        self, org_id: str, filters: AssetFilter, *, limit: int, after: PageCursor | None
    ) -> AssetPage:
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        query, args = _asset_listing(org_id, filters, limit, after)
        items = [asset_from_record(row) for row in await self._fetch(org_id, query, args)]
        page, cursor = _one_page(items, limit)
        return AssetPage(items=page, next_cursor=cursor)

    async def job(self, org_id: str, job_id: UUID) -> Job | None:
        rows = await self._call(_GET_JOB, org_id, job_id)
        return job_from_row(rows[0]) if rows else None

    async def jobs(
        self, org_id: str, filters: JobFilter, *, limit: int, after: PageCursor | None
    ) -> JobPage:
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        query, args = _job_listing(org_id, filters, limit, after)
        items = [job_from_row(row) for row in await self._fetch(org_id, query, args)]
        page, cursor = _one_page(items, limit)
        return JobPage(items=page, next_cursor=cursor)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


_Row = TypeVar("_Row", Asset, Job)


def _one_page(items: list[_Row], limit: int) -> tuple[list[_Row], PageCursor | None]:
    """The first ``limit`` of ``items`` (a listing asks for one more), and where the next page
    starts when there is one."""
    if len(items) <= limit:
        return items, None
    page = items[:limit]
    return page, PageCursor(created_at=page[-1].created_at, id=page[-1].id)
