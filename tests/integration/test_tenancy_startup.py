"""The service checks, on PostgreSQL, that row-level security binds the role it runs as."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from litestar.testing import AsyncTestClient

from heimdex.domain.errors import TenancyUnsafe
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.app import TEST_SECRET, TokenFactory, bearer
from tests.fixtures.db import PostgresCatalogue

pytestmark = pytest.mark.postgres


def settings_for(
    data_dir: Path, url: str, env: Literal["development", "production"] = "development"
) -> Settings:
    return Settings.from_flat(
        data_dir=data_dir,
        jwt_secret=TEST_SECRET,
        database_url=url,
        env=env,
    )


async def test_admin_health_reports_tenancy_as_safe_for_the_runtime_role(
    postgres_catalogue: PostgresCatalogue, data_dir: Path, make_token: TokenFactory
) -> None:
    app = create_app(settings=settings_for(data_dir, postgres_catalogue.runtime_url))
    async with AsyncTestClient(app=app) as client:
        response = await client.get(
            "/v1/admin/health", headers=bearer(make_token("ops", scopes=["admin"]))
        )
    assert response.status_code == 200, response.text
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["tenancy"]["ok"] is True


async def test_admin_health_flags_the_table_owner(
    postgres_catalogue: PostgresCatalogue, data_dir: Path, make_token: TokenFactory
) -> None:
    app = create_app(settings=settings_for(data_dir, postgres_catalogue.owner_url))
    async with AsyncTestClient(app=app) as client:
        response = await client.get(
            "/v1/admin/health", headers=bearer(make_token("ops", scopes=["admin"]))
        )
    assert response.status_code == 503
    tenancy = next(c for c in response.json()["checks"] if c["name"] == "tenancy")
    assert tenancy["ok"] is False
    assert "owner" in tenancy["error"]


async def test_production_refuses_to_start_as_a_role_that_bypasses_rls(
    postgres_catalogue: PostgresCatalogue, data_dir: Path
) -> None:
    app = create_app(
        settings=settings_for(data_dir, postgres_catalogue.superuser_url, env="production")
    )
    with pytest.raises(BaseExceptionGroup) as caught:  # the lifespan's task group wraps it
        async with AsyncTestClient(app=app):
            pass
    assert caught.group_contains(TenancyUnsafe, match="superuser", depth=None)
