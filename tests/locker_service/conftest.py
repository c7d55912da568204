"""Fixtures for the service's tests: migrated databases on SQLite and PostgreSQL, and an app.

The schema is always made by `alembic upgrade head`. Each PostgreSQL database is created with a
unique name and dropped afterwards, because other test runs share the server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from locker_service.config import DEFAULT_CONTACT_SCHEMES, Settings
from locker_service.context import ServiceContext
from locker_service.main import create_app
from locker_service.runtime import Runtime
from migrations import upgrade
from tests.conftest import PG_ADMIN_URL, unavailable
from tests.locker_service.world import FakeKiosk, World, seed

BACKENDS = ["sqlite", "postgres"]


async def _pg_admin(statement: str) -> None:
    url = make_url(PG_ADMIN_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        database=url.database,
        password=url.password,
        timeout=5,
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def make_pg_database() -> str:
    """A fresh empty PostgreSQL database; returns its URL."""
    name = f"locker_{uuid.uuid4().hex[:16]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} is not usable: {exc}")
    return (
        make_url(PG_ADMIN_URL)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )


def drop_pg_database(database_url: str) -> None:
    name = make_url(database_url).database
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database on each backend (one per test)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
        upgrade(url)
        yield url
        return
    url = make_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    url = make_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        drop_pg_database(url)


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "database_url": database_url,
        "secret_key": "test-secret-" + "x" * 32,
        "migrate_on_start": False,
        "kiosk_link_enabled": False,
        "timers_enabled": False,
        "notify_enabled": False,
        # The purchasers' phones of these tests are json:// webhooks on this machine.
        "notify_contact_schemes": [*DEFAULT_CONTACT_SCHEMES, "json"],
        "notify_contact_allowed_networks": ["127.0.0.0/8"],
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def fake_kiosk() -> FakeKiosk:
    return FakeKiosk()


@pytest.fixture
async def service_app(settings: Settings, fake_kiosk: FakeKiosk) -> AsyncIterator[FastAPI]:
    """A running app (no MQTT: commands go to `fake_kiosk`)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ctx: ServiceContext = app.state.ctx
        ctx.commander = fake_kiosk
        yield app


@pytest.fixture
def runtime(service_app: FastAPI) -> Runtime:
    """The running app's parts: its kiosk event handler, ingest, timer loop."""
    running: Runtime = service_app.state.runtime
    return running


@pytest.fixture
def service(runtime: Runtime) -> ServiceContext:
    """The running app's context."""
    return runtime.ctx


@pytest.fixture
async def app_client(service_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://locker.test") as client:
        yield client


@pytest.fixture
async def world(service: ServiceContext) -> World:
    return await seed(service.sessionmaker, service.settings)
