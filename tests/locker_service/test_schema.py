"""The schema: made by Alembic on both backends, equal to the models; the service starts on it.

This is where `alembic upgrade head` runs on an empty database in a test of its own; every other
test gets a copy of a template that the same migrations made (tests/support/databases.py).
"""

from __future__ import annotations

import httpx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from locker_service.db import create_engine
from locker_service.models import Base
from migrations import include_name, upgrade_async

# Both backends in the everyday selection too (tests/conftest.py, ADR 0127): the subject is
# SQL written per backend, the migrations themselves.
POSTGRES_EVERY_DAY = True


async def test_migrations_match_the_models(empty_database_url: str) -> None:
    await upgrade_async(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"include_name": include_name}),
                    Base.metadata,
                )
            )
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert diff == []
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


async def test_health_and_readiness(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/healthz")).json() == {"status": "ok"}
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True}


async def test_unknown_path_is_a_json_error(app_client: httpx.AsyncClient) -> None:
    answer = await app_client.get("/api/v1/nothing-here")
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"
