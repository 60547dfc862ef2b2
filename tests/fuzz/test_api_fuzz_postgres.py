"""The fuzz suite's operations on PostgreSQL (as the runtime role, row-level security on).

PostgreSQL refuses what SQLite stores (a NUL in text) and compares time stamps itself, so the
hostile variants of ``test_api_fuzz`` (NUL characters, JSON nested too deep, date-times that
overflow in UTC) are sent here too, with the same checks, hooks and organisation B. The
stateful runs and the link walk stay on SQLite; with fewer examples per operation this module
keeps the suite's time bounded.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from litestar.types import Receive, Scope, Send

from heimdex.bootstrap import build_adapters, build_services
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.db import PostgresCatalogue
from tests.fuzz import test_api_fuzz as fuzz

pytestmark = pytest.mark.postgres

MAX_EXAMPLES = 25
SENT: Counter[str] = Counter()


class LateApp:
    """The app is built in the fixture (the database exists only then); schemathesis needs an
    ASGI callable when the module is imported."""

    app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


APP = LateApp()
schema = fuzz.fuzzing_schema(APP)


@pytest.fixture(scope="module", autouse=True)
def org_b_on_postgres(
    postgres_catalogue: PostgresCatalogue,
    h264_aac_mp4: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    settings = Settings.from_flat(
        data_dir=tmp_path_factory.mktemp("fuzz-postgres"),
        database_url=postgres_catalogue.runtime_url,
        jwt_secret=fuzz.SECRET,
        max_upload_size_bytes=4 * 1024 * 1024,
    )
    # The fuzzer registers webhooks on any host: nothing may resolve or reach them.
    services = build_services(
        settings, dataclasses.replace(build_adapters(settings), webhook_sender=fuzz._NeverSend())
    )
    APP.app = create_app(services=services)
    yield from fuzz.serve_with_org_b(services, APP, h264_aac_mp4)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_conforms_on_postgres(case: Any) -> None:
    fuzz.check_case(case, SENT)


def test_every_hostile_variant_was_sent_to_postgres() -> None:
    assert set(SENT) == fuzz.HOSTILE_KINDS, SENT
