"""``Database``: the SQLAlchemy async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from heimdex.domain.errors import DatabaseUnavailable

# SQLSTATE classes (and one subclass) that mean "no usable connection", not "bad statement":
# 08 connection exception, 28 invalid authorisation, 3D no such database, 53 out of resources
# (too many connections), 57P operator intervention (shutdown, recovery, cannot connect now).
_UNAVAILABLE_SQLSTATES = ("08", "28", "3D", "53", "57P")

# How long a SQLite writer waits for another's lock before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 15_000


def ensure_sqlite_directory(url: str) -> None:
    """SQLite creates the file but not its directory; the embedded default's lives under data/."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached (as opposed to a bad statement)."""
    if isinstance(error, OSError | exc.TimeoutError):  # refused, reset, pool exhausted
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        # InterfaceError: the driver lost the connection; OperationalError: the server (or
        # SQLite's file: locked, unreadable, not migrated) cannot serve the statement.
        if isinstance(error, exc.InterfaceError | exc.OperationalError):
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        return isinstance(error.orig, OSError)
    return False


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn "cannot reach the database" failures into ``DatabaseUnavailable`` (a 503), and let
    every other error through unchanged: a constraint violation is not an outage."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as error:
        if not is_unavailable(error):
            raise
        reason = error.orig if isinstance(error, exc.DBAPIError) else error
        raise DatabaseUnavailable(f"the database is not available: {reason}") from error


def _sqlite_take_over_transactions(engine: AsyncEngine) -> None:
    """Make SQLite transactions real (SQLAlchemy's documented recipe for sqlite3/aiosqlite).

    The sqlite3 module's legacy mode emits no BEGIN before a SELECT nor a SAVEPOINT, so reads are
    not repeatable and savepoints do not nest. We switch it off and emit ``BEGIN IMMEDIATE``
    ourselves: taking the write lock up front makes concurrent read-then-write transactions
    queue behind ``busy_timeout`` instead of failing with "database is locked" halfway through.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")  # off by default, per connection
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")  # readers do not block the writer
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


#: SQLAlchemy's own defaults for the engine's pool, said here so the pool's size is known
POOL_SIZE = 5
MAX_OVERFLOW = 10


class Database:
    """Owns the engine; built by the composition root, disposed at shutdown.

    ``engine_options`` go to ``create_async_engine`` (tests use ``pool_size=1``).
    """

    def __init__(self, url: str, **engine_options: Any) -> None:
        ensure_sqlite_directory(url)
        self.url = url
        options: dict[str, Any] = {"pool_pre_ping": True}
        options.update(engine_options)
        #: connections the engine's pool opens at most (its size and overflow)
        self.pool_capacity = options.get("pool_size", POOL_SIZE) + options.get(
            "max_overflow", MAX_OVERFLOW
        )
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if self.engine.dialect.name == "sqlite":
            _sqlite_take_over_transactions(self.engine)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgresql"

    async def check(self) -> None:
        with database_errors():  # unreachable is DatabaseUnavailable: transient, not a bug
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
