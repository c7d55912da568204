"""Throttling that stops guessing without punishing the innocent (docs/adr/0039), on SQLite and
PostgreSQL: a flood of wrong typed codes and made-up courier logins at one kiosk leaves another
purchaser's QR opening at once and a typed code opening within the documented delay, with one
operator alert; a code whose door never opened is no failure and comes back with the latch."""

from __future__ import annotations

import asyncio
import math
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from firmware_bridge import contract
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.kiosks.handler import StoryHandler
from locker_service.models import Alert, Order, OrderEvent, PickupAttempt
from locker_service.orders import codes
from locker_service.runtime import Runtime
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import (
    FakeKiosk,
    World,
    make_ready,
    record_pickup_answers,
    token_of,
)

# Nominal durations run 30 times faster: the kiosk's 120 s spacing (the longest a typed code
# waits after the last wrong one) is 4 s here, and the per-kiosk day 48 minutes.
TIME_SCALE = 30.0
WRONG_TYPED_CODES = 1000
MADE_UP_COURIER_LOGINS = 100
ATTACKING_ADDRESSES = 20


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, time_scale=TIME_SCALE)


@pytest.fixture
def handler(runtime: Runtime) -> StoryHandler:
    return runtime.story


def _scan(text: str) -> contract.Event:
    return contract.Event(event_id=uuid.uuid4().hex, type="scan", data={"text": text})


def _code(settings: Settings, order: dict[str, object]) -> str:
    return codes.fallback_code(settings.secret_key, token_of(order))  # type: ignore[arg-type]


async def _type(client: httpx.AsyncClient, world: World, code: str) -> httpx.Response:
    return await client.post("/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk())


async def _failures(service: ServiceContext, *where: object) -> int:
    async with service.sessionmaker() as session:
        query = select(func.count()).select_from(PickupAttempt).where(PickupAttempt.ok.is_(False))
        return int(await session.scalar(query.where(*where)) or 0)  # type: ignore[arg-type]


@pytest.mark.slow  # a flood of requests
async def test_a_flood_of_wrong_codes_and_logins_blocks_neither_qr_nor_a_typed_code(
    service_app: FastAPI,
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    handler: StoryHandler,
) -> None:
    answers = record_pickup_answers(service)
    by_qr, qr_n = await make_ready(app_client, world, service)
    by_code, code_n = await make_ready(app_client, world, service)
    right = _code(service.settings, by_code)
    # The flood comes from many addresses (a script with the kiosk's token), so the per-source
    # waits alone would let each of them through a few times: the kiosk's budget must hold.
    statuses: dict[int, int] = {}
    attackers = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service_app, client=(f"10.6.6.{i}", 4000)),
            base_url="http://locker.test",
        )
        for i in range(ATTACKING_ADDRESSES)
    ]
    for i in range(WRONG_TYPED_CODES):
        guess = f"{(int(right) + 1 + i) % 10**8:08d}"
        status = (await _type(attackers[i % ATTACKING_ADDRESSES], world, guess)).status_code
        statuses[status] = statuses.get(status, 0) + 1
    for attacker in attackers:
        await attacker.aclose()
    for i in range(MADE_UP_COURIER_LOGINS):
        login = await app_client.post(
            "/api/v1/kiosk/dropoff",
            json={"courier_code": f"nobody-{i}", "pin": "000000", "order_ref": "x"},
            headers=world.kiosk(),
        )
        assert login.status_code in (403, 429)
    assert set(statuses) == {403, 429}  # some were checked and refused, the rest had to wait
    checked = statuses[403]
    budget = service.settings.pickup_kiosk_free_failures_per_day
    assert budget <= checked < budget + 20  # the budget, then one per 4 s: not 1,000 checks
    assert await _failures(service, PickupAttempt.source.startswith("screen:")) == checked

    # Another purchaser's QR opens at once: nobody guesses 256 bits, nobody's failures count.
    unlocks = len(fake_kiosk.unlocks())
    await handler.on_event(world.kiosk_code, _scan(token_of(by_qr)))
    assert answers[-1]["ok"] is True
    assert fake_kiosk.unlocks()[unlocks:] == [qr_n]

    # A typed code opens within the documented delay: the kiosk's spacing after the last wrong.
    spacing_s = service.settings.scaled(service.settings.pickup_kiosk_spacing_s)
    answer = await _type(app_client, world, right)
    if answer.status_code == 429:
        assert answer.json()["error"] == "locked_out"
        retry_after_s = int(answer.headers["Retry-After"])
        assert 0 < retry_after_s <= math.ceil(spacing_s)
        await asyncio.sleep(retry_after_s)  # what the kiosk screen tells her to do
        answer = await _type(app_client, world, right)
    assert answer.status_code == 200, answer.text
    assert answer.json()["compartment"] == code_n

    # One operator alert for the episode, saying where.
    async with service.sessionmaker() as session:
        alerts = (
            await session.scalars(select(Alert).where(Alert.kind == "kiosk_under_attack"))
        ).all()
    assert [(a.kiosk_id, a.count, a.state) for a in alerts] == [(world.kiosk_id, 1, "open")]
    assert world.kiosk_code in alerts[0].message
    assert "wrong typed codes there now wait up to" in alerts[0].message  # many sources


async def test_a_code_whose_door_never_opened_is_no_failure_and_comes_back_with_the_latch(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    handler: StoryHandler,
) -> None:
    answers = record_pickup_answers(service)
    order, n = await make_ready(app_client, world, service)
    token = token_of(order)
    await handler.on_event(world.kiosk_code, _scan(token))
    assert fake_kiosk.unlocks()[-1] == n
    await handler.on_snapshot(world.kiosk_code, _snapshot(n, lock_released=True))
    # She does not pull the door; her next scans, however many, are told so and not counted.
    limit = service.settings.pickup_order_free_failures + 2
    for _ in range(limit):
        await handler.on_event(world.kiosk_code, _scan(token))
    assert [a.get("error") for a in answers[1:]] == ["door_unlocked"] * limit
    assert await _failures(service) == 0
    # The latch springs back with the door shut (the board's 60 s): the code is hers again.
    await handler.on_snapshot(world.kiosk_code, _snapshot(n, lock_released=False))
    async with service.sessionmaker() as session:
        stored = await session.get(Order, uuid.UUID(order["id"]))
        returned = await session.scalar(
            select(OrderEvent.detail).where(
                OrderEvent.order_id == uuid.UUID(order["id"]), OrderEvent.action == "code_returned"
            )
        )
    assert stored is not None and stored.code_used_at is None
    assert returned == {"why": "latch re-engaged"}
    unlocks = len(fake_kiosk.unlocks())
    await handler.on_event(world.kiosk_code, _scan(token))
    assert answers[-1]["ok"] is True
    assert fake_kiosk.unlocks()[unlocks:] == [n]


async def test_a_latch_seen_shut_before_the_code_was_used_gives_nothing_back(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    handler: StoryHandler,
) -> None:
    order, n = await make_ready(app_client, world, service)
    await handler.on_snapshot(world.kiosk_code, _snapshot(n, lock_released=True))
    await handler.on_event(world.kiosk_code, _scan(token_of(order)))
    # A door that opened does not give the code back when its latch catches again.
    await handler.on_event(world.kiosk_code, _door("door_opened", n))
    await handler.on_snapshot(world.kiosk_code, _snapshot(n, lock_released=False))
    async with service.sessionmaker() as session:
        stored = await session.get(Order, uuid.UUID(order["id"]))
    assert stored is not None and stored.code_used_at is not None


def _snapshot(n: int, *, lock_released: bool) -> contract.CompartmentSnapshot:
    return contract.CompartmentSnapshot(
        n=n,
        door_open=False,
        lock_released=lock_released,
        occupied=True,
        heater_on=False,
        uv_on=False,
        disinfecting=False,
        disinfect_remaining_s=0,
        temp_c=65.0,
        setpoint_c=65.0,
    )


def _door(kind: str, n: int) -> contract.Event:
    return contract.Event(event_id=uuid.uuid4().hex, type=kind, compartment=n)  # type: ignore[arg-type]


async def test_the_kill_switch_refuses_a_drop_off(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    created = await app_client.post(
        "/api/v1/orders", json=world.order_body("frozen"), headers=world.merchant()
    )
    assert created.status_code in (200, 201)
    switch = f"/api/v1/operator/sites/{world.site_id}/kill-switch"
    engaged = await app_client.post(
        switch, json={"engaged": True, "reason": "mass opening seen"}, headers=world.operator()
    )
    assert engaged.status_code == 200
    body = {"courier_code": world.courier_code, "pin": world.courier_pin, "order_ref": "frozen"}
    refused = await app_client.post("/api/v1/kiosk/dropoff", json=body, headers=world.kiosk())
    assert refused.status_code == 403 and refused.json()["error"] == "dropoffs_frozen"
    assert fake_kiosk.unlocks() == []
    async with service.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(created.json()["id"]))
    assert order is not None and order.state == "created"  # nothing reserved
    await app_client.post(
        switch, json={"engaged": False, "reason": "all clear"}, headers=world.operator()
    )
    opened = await app_client.post("/api/v1/kiosk/dropoff", json=body, headers=world.kiosk())
    assert opened.status_code == 200, opened.text


async def test_an_admin_freezes_every_site_at_once_and_it_is_audited(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    admin = {"Authorization": f"Bearer {world.admin_token}"}
    body = {"engaged": True, "reason": "attack on every site"}
    refused = await app_client.post(
        "/api/v1/operator/kill-switch", json=body, headers=world.operator()
    )
    assert refused.status_code == 403 and refused.json()["error"] == "admin_only"
    frozen = await app_client.post("/api/v1/operator/kill-switch", json=body, headers=admin)
    assert frozen.status_code == 200, frozen.text
    sites = (await app_client.get("/api/v1/operator/sites", headers=admin)).json()
    assert {s["id"] for s in sites} >= {world.site_id, world.other_site_id}
    assert all(s["kill_switch_engaged"] for s in sites)
    assert all("attack on every site" in s["kill_switch_reason"] for s in sites)
    alerts = (await app_client.get("/api/v1/operator/alerts", headers=admin)).json()
    every = [a for a in alerts if a["kind"] == "kill_switch_all"]
    assert len(every) == 1 and "Ada" in every[0]["message"]
    assert {a["site_id"] for a in alerts if a["kind"] == "kill_switch"} >= {
        world.site_id,
        world.other_site_id,
    }
    # Frozen means frozen: a typed code at the first site opens nothing.
    typed = await _type(app_client, world, "12345678")
    assert typed.status_code == 403 and typed.json()["error"] == "kill_switch_engaged"
    thawed = await app_client.post(
        "/api/v1/operator/kill-switch", json={"engaged": False, "reason": "over"}, headers=admin
    )
    assert thawed.status_code == 200
    assert not any(s["kill_switch_engaged"] for s in thawed.json())
    alerts = (await app_client.get("/api/v1/operator/alerts", headers=admin)).json()
    assert [a["state"] for a in alerts if a["kind"] == "kill_switch_all"] == ["resolved"]
