"""Fixtures for the service's tests: migrated databases on SQLite and PostgreSQL, and an app.

The schema is always made by `alembic upgrade head`: once per test process into a template that
each test's database is copied from (tests/support/databases.py). Each PostgreSQL database has a
unique name and is dropped afterwards, because other test runs share the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from locker_service.config import DEFAULT_CONTACT_SCHEMES, Settings
from locker_service.context import ServiceContext
from locker_service.main import create_app
from locker_service.runtime import Runtime
from tests.locker_service.world import FakeKiosk, World, seed
from tests.support.databases import (
    create_pg_database,
    drop_pg_database,
    migrated_database,
    migrated_pg_database,
)

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database on each backend (one per test, copied from the template)."""
    url = migrated_database(str(request.param), tmp_path)
    try:
        yield url
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    url = migrated_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend, for the tests of the migrations themselves."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    url = create_pg_database("locker_empty")
    try:
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
        "webhook_allowed_networks": ["127.0.0.0/8"],  # the tests' receivers
        # These rigs' kiosks send no telemetry: the food's watch would find it unknown. Tests
        # of the watch (test_food_safety*.py) and the journeys through the simulator keep it.
        "food_unknown_limit_s": 30 * 24 * 3600.0,
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
