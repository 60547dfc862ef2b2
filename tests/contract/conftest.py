"""The unit of work of the repository contracts: on SQLite, on PostgreSQL, and the application
tests' in-memory fake, which keeps the same contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.domain.ports import UnitOfWorkFactory
from tests.fixtures.db import migrated_database_url
from tests.unit.fakes import FakeDatabase


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "fake"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database's URL, or "fake"."""
    if request.param == "fake":
        return "fake"
    return migrated_database_url(request, request.param, tmp_path)


@pytest.fixture
async def uow(backend: str) -> AsyncIterator[UnitOfWorkFactory]:
    """The unit of work on SQLite, on PostgreSQL, and the application tests' in-memory fake: the
    fake keeps the same contract."""
    if backend == "fake":
        yield FakeDatabase()
        return
    database = Database(backend)
    try:
        yield SqlUnitOfWorkFactory(database)
    finally:
        await database.dispose()
