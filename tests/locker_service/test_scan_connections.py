"""A purchaser's scan has database connections of its own (ADR 0094): with every connection of
the main pool taken (a takeover's reports, each a transaction), her scan is still decided and
her door unlocked (a refused unlock's giving back uses the main pool: ADR 0094). PostgreSQL
only: SQLite has one writer, and scans share its pool."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection

from firmware_bridge import contract
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.models import Order
from locker_service.runtime import Runtime
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import FakeKiosk, World, make_ready, token_of


@pytest.fixture
def settings(pg_database_url: str) -> Settings:
    return make_settings(pg_database_url)


@contextlib.asynccontextmanager
async def main_pool_taken(service: ServiceContext) -> AsyncIterator[None]:
    """Every connection of the main pool held, as the story's handlers hold them in a takeover:
    a taker waits in the pool's queue all along, so a connection the running service gives
    back (its loops come and go) is taken again before anything asking after it gets one."""
    engine, pool = service.engine, service.engine.pool
    size = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
    held: list[AsyncConnection] = []
    full = asyncio.Event()

    async def take_every_one() -> None:
        while True:
            held.append(await engine.connect())
            if pool.checkedout() >= size:  # type: ignore[attr-defined]
                full.set()

    taker = asyncio.get_running_loop().create_task(take_every_one())
    try:
        await full.wait()
        yield
    finally:
        taker.cancel()
        with contextlib.suppress(asyncio.CancelledError, sqlalchemy.exc.TimeoutError):
            await taker  # a pool timeout of its own only when the test failed already
        for conn in held:
            await conn.close()


async def test_a_scan_is_decided_while_the_main_pool_is_taken(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    runtime: Runtime,
) -> None:
    order, n = await make_ready(app_client, world, service)
    scan = contract.Event(event_id=uuid.uuid4().hex, type="scan", data={"text": token_of(order)})
    before = len(fake_kiosk.unlocks())  # the courier's
    async with main_pool_taken(service):
        await runtime.story.on_event(world.kiosk_code, scan)  # would wait out the pool's timeout
        assert fake_kiosk.unlocks()[before:] == [n]
    async with service.sessionmaker() as session:
        stored = await session.get(Order, uuid.UUID(order["id"]))
    assert stored is not None and stored.code_used_at is not None


async def test_the_scan_connections_are_apart_from_the_main_pool(
    service: ServiceContext,
) -> None:
    assert service.scan_sessionmaker is not None
    assert service.scan_sessions.kw["bind"] is not service.engine
