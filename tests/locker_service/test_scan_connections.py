"""A purchaser's pickup has database connections of its own (ADR 0094): with every connection
of the main pool taken (a takeover's reports), her scan or typed code is still decided, her
door unlocked, and her code given back if the board refused the unlock. PostgreSQL only: SQLite
has one writer, and pickups share its pool."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select

from firmware_bridge import contract
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.models import Compartment, DoorOpening, Order, OrderEvent
from locker_service.orders import codes
from locker_service.runtime import Runtime
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import FakeKiosk, World, create_order, make_ready, token_of
from tests.support.pools import main_pool_taken


@pytest.fixture
def settings(pg_database_url: str) -> Settings:
    return make_settings(pg_database_url)


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


async def test_a_typed_code_and_a_refused_unlock_s_give_back_use_them_too(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
) -> None:
    """She types her code at the screen: the board refuses the first unlock and her code is
    given back at once; her second try opens. All while the main pool is taken."""
    order, n = await make_ready(app_client, world, service)
    code = codes.fallback_code(service.settings.secret_key, token_of(order))
    fake_kiosk.answers["unlock"] = ["failed"]
    before = len(fake_kiosk.unlocks())  # the courier's
    async with main_pool_taken(service):
        refused = await app_client.post(
            "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
        )
        assert refused.status_code == 503 and refused.json()["error"] == "unlock_failed"
        opened = await app_client.post(
            "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
        )
        assert opened.status_code == 200 and opened.json()["compartment"] == n
    assert fake_kiosk.unlocks()[before:] == [n, n]
    async with service.sessionmaker() as session:
        returned = await session.scalar(
            select(OrderEvent).where(
                OrderEvent.order_id == uuid.UUID(order["id"]), OrderEvent.action == "code_returned"
            )
        )
        pickups = await session.scalar(
            select(func.count()).select_from(DoorOpening).where(DoorOpening.why == "pickup")
        )
    assert returned is not None and returned.detail["why"] == "unlock failed"
    assert pickups == 1  # the refused unlock's opening was withdrawn at once


async def test_a_courier_s_drop_off_uses_them_too(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
) -> None:
    """The courier signs in with his PIN and names the order at the screen; the board refuses
    the first unlock (the compartment is given back), the second opens. All while the main pool
    is taken."""
    order = await create_order(app_client, world, ref="takeover-lunch")
    fake_kiosk.answers["unlock"] = ["failed"]
    body = world.dropoff_body(order["external_ref"])
    async with main_pool_taken(service):
        refused = await app_client.post("/api/v1/kiosk/dropoff", json=body, headers=world.kiosk())
        assert refused.status_code == 503, refused.text
        opened = await app_client.post("/api/v1/kiosk/dropoff", json=body, headers=world.kiosk())
        assert opened.status_code == 200, opened.text
    n = opened.json()["compartment"]
    assert fake_kiosk.unlocks()[-1] == n
    async with service.sessionmaker() as session:
        stored = await session.get(Order, uuid.UUID(order["id"]))
        reserved = await session.scalar(
            select(func.count())
            .select_from(Compartment)
            .where(Compartment.kiosk_id == world.kiosk_id, Compartment.state == "reserved")
        )
        openings = await session.scalar(select(func.count()).select_from(DoorOpening))
    assert stored is not None and stored.state == "assigned" and reserved == 1
    assert openings == 1  # the refused unlock's opening was withdrawn at once


async def test_the_attended_connections_are_apart_from_the_main_pool(
    service: ServiceContext,
) -> None:
    assert service.attended_sessionmaker is not None
    assert service.attended_sessions.kw["bind"] is not service.engine
