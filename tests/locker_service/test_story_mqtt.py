"""The story's edges at the MQTT boundary: a real Mosquitto, the service with its kiosk link and
timers, and a scripted kiosk. (The whole story with the purchaser's message is in
test_notifications_story.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from firmware_bridge import contract
from locker_service.context import ServiceContext
from locker_service.main import create_app
from locker_service.models import Alert, Compartment, KioskEvent, Order, OrderEvent, utcnow
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import World, seed
from tests.support.mosquitto import MosquittoProcess
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]


@dataclass
class Rig:
    ctx: ServiceContext
    client: httpx.AsyncClient
    world: World
    kiosk: ScriptedKiosk


async def until(predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def rig(database_url: str, private_mosquitto: MosquittoProcess) -> AsyncIterator[Rig]:
    kiosk_code = f"edge-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        database_url,
        kiosk_link_enabled=True,
        timers_enabled=True,
        mqtt_url=private_mosquitto.url,
        replica_id=f"edge-{uuid.uuid4().hex[:6]}",
        disinfection_s=2.0,
        cleaning_s=1.0,
        timer_poll_s=0.1,
        command_timeout_s=5.0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ctx: ServiceContext = app.state.ctx
        world = await seed(ctx.sessionmaker, settings, kiosk_code=kiosk_code)
        kiosk = ScriptedKiosk(
            private_mosquitto.host, private_mosquitto.port, kiosk_code, compartments=4
        ).start()
        try:
            await until(lambda: app.state.runtime.link.ready, 10, "the kiosk link")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield Rig(ctx, client, world, kiosk)
        finally:
            with contextlib.suppress(Exception):  # a crashed kiosk has no connection to close
                kiosk.stop()


async def _order(rig: Rig, order_id: str) -> Order:
    async with rig.ctx.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(order_id))
        assert order is not None
        return order


async def _compartment_state(rig: Rig, n: int) -> str:
    async with rig.ctx.sessionmaker() as session:
        state = await session.scalar(
            select(Compartment.state).where(
                Compartment.kiosk_id == rig.world.kiosk_id, Compartment.number == n
            )
        )
        return str(state)


async def _alert_kinds(rig: Rig) -> list[str]:
    async with rig.ctx.sessionmaker() as session:
        return list((await session.scalars(select(Alert.kind).where(Alert.state == "open"))).all())


async def _drop_off(rig: Rig, ref: str) -> int:
    answer = await rig.client.post(
        "/api/v1/kiosk/dropoff",
        json={
            "courier_code": rig.world.courier_code,
            "pin": rig.world.courier_pin,
            "order_ref": ref,
        },
        headers=rig.world.kiosk(),
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["compartment"])


async def test_courier_shuts_an_empty_compartment(rig: Rig) -> None:
    created = await rig.client.post(
        "/api/v1/orders", json=rig.world.order_body("empty"), headers=rig.world.merchant()
    )
    order_id = created.json()["id"]
    n = await _drop_off(rig, "empty")
    assert rig.kiosk.compartments[n].lock_released  # the unlock went over MQTT and was done
    rig.kiosk.open_door(n)
    rig.kiosk.close_door(n)

    async def released() -> bool:
        return (await _order(rig, order_id)).state == "created"

    await until(released, 10, "the order back to created")
    assert await _compartment_state(rig, n) == "available"
    assert not any(c.command.action == "start_disinfection" for c in rig.kiosk.received)


async def _made_ready(rig: Rig, ref: str) -> tuple[dict[str, Any], int]:
    """An order created, dropped off with food inside and taken through its cycle to ready,
    all over MQTT: (the order as created, its compartment number)."""
    created = await rig.client.post(
        "/api/v1/orders", json=rig.world.order_body(ref), headers=rig.world.merchant()
    )
    order_id = created.json()["id"]
    n = await _drop_off(rig, ref)
    rig.kiosk.open_door(n)
    rig.kiosk.place_item(n)
    rig.kiosk.close_door(n)

    async def ready() -> bool:
        return (await _order(rig, order_id)).state == "ready"

    await until(ready, 20, "the order ready")
    return created.json(), n


async def test_food_in_then_cycle_then_ready_with_heat(rig: Rig) -> None:
    _, n = await _made_ready(rig, "hot")
    assert rig.kiosk.compartments[n].setpoint_c == 65.0
    assert await _compartment_state(rig, n) == "awaiting_pickup"


async def test_the_order_disinfects_only_once_the_kiosk_reports_the_lamp_on(rig: Rig) -> None:
    rig.kiosk.script("start_disinfection", "accept_only")  # taken, the lamp not on yet
    created = await rig.client.post(
        "/api/v1/orders", json=rig.world.order_body("late-lamp"), headers=rig.world.merchant()
    )
    order_id = created.json()["id"]
    n = await _drop_off(rig, "late-lamp")
    rig.kiosk.open_door(n)
    rig.kiosk.place_item(n)
    rig.kiosk.close_door(n)
    await until(
        lambda: any(r.command.action == "start_disinfection" for r in rig.kiosk.received),
        10,
        "the cycle sent to the kiosk",
    )
    await until(
        lambda: any(r.status == "accepted" for r in rig.kiosk.replies), 10, "the kiosk's accept"
    )
    assert (await _order(rig, order_id)).state == "deposited"  # nobody told of a cycle not on

    rig.kiosk.start_cycle(n, duration_s=2)  # the lamp comes on

    async def disinfecting() -> bool:
        return (await _order(rig, order_id)).state in ("disinfecting", "ready")

    await until(disinfecting, 10, "the order disinfecting")
    order = await _order(rig, order_id)
    assert order.disinfecting_at is not None
    await until(lambda: _is(rig, order_id, "ready"), 20, "the order ready")


async def _is(rig: Rig, order_id: str, state: str) -> bool:
    return (await _order(rig, order_id)).state == state


async def test_a_forced_door_raises_an_alert(rig: Rig) -> None:
    rig.kiosk.open_door(3, force=True)

    async def alerted() -> bool:
        return "door_opened_unexplained" in await _alert_kinds(rig)

    await until(alerted, 10, "the unexplained-opening alert")


async def test_a_kiosk_that_dies_raises_offline(rig: Rig) -> None:
    rig.kiosk.crash()  # no DISCONNECT: the broker publishes its last will

    async def offline() -> bool:
        return "kiosk_offline" in await _alert_kinds(rig)

    await until(offline, 60, "the offline alert")  # keepalive 30 s x 1.5 at worst


async def test_redelivered_and_malformed_events_change_nothing(rig: Rig) -> None:
    event = rig.kiosk.publish_event("door_opened", 2, {"forced": True})
    for _ in range(3):
        rig.kiosk.republish_event(event)
    rig.kiosk.publish_raw("events", b'{"event_id": 5, "type": "door_opened"}')
    rig.kiosk.publish_raw("events", b"not json")

    async def handled() -> bool:
        async with rig.ctx.sessionmaker() as session:
            ids = (await session.scalars(select(KioskEvent.event_id))).all()
        return event.event_id in ids

    await until(handled, 10, "the event handled")
    await asyncio.sleep(0.5)
    async with rig.ctx.sessionmaker() as session:
        alerts = (await session.scalars(select(Alert))).all()
        events = (await session.scalars(select(KioskEvent))).all()
    assert [(a.kind, a.count) for a in alerts] == [("door_opened_unexplained", 1)]
    assert len(events) == 1


async def _metric(rig: Rig, line_start: str) -> float:
    text = (await rig.client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


async def test_a_replayed_scan_opens_nothing_and_keeps_the_code(rig: Rig) -> None:
    """A scan stamped long ago (the bridge replaying its disk buffer after an outage) and one
    stamped ahead of the skew allowance open nothing and leave the code unused; a scan now
    opens the door."""
    created, n = await _made_ready(rig, "replay")
    order_id = created["id"]
    token = str(created["purchaser_url"]).rsplit("/p/", 1)[1]
    stale_before = await _metric(rig, 'locker_scans_ignored_total{reason="stale"}')
    ahead_before = await _metric(rig, 'locker_scans_ignored_total{reason="ahead"}')
    settings = rig.ctx.settings
    late_s = settings.scan_max_age_s + settings.scan_clock_skew_s + 1.0
    replayed = [
        contract.Event(
            event_id=uuid.uuid4().hex,
            type="scan",
            ts=utcnow() - timedelta(seconds=late_s + 120),  # a two-minute outage
            data={"text": token},
        ),
        contract.Event(
            event_id=uuid.uuid4().hex,
            type="scan",
            ts=utcnow() + timedelta(seconds=late_s),
            data={"text": token},
        ),
    ]
    commands_before = len(rig.kiosk.received)
    for event in replayed:
        rig.kiosk.republish_event(event)

    async def recorded() -> bool:
        async with rig.ctx.sessionmaker() as session:
            ids = (
                await session.scalars(
                    select(KioskEvent.event_id).where(
                        KioskEvent.event_id.in_([e.event_id for e in replayed])
                    )
                )
            ).all()
        return len(ids) == len(replayed)

    await until(recorded, 10, "both scans recorded")
    await asyncio.sleep(0.5)  # an unlock, were one (wrongly) sent, would have gone out by now
    assert not [r for r in rig.kiosk.received[commands_before:] if r.command.action == "unlock"]
    assert not rig.kiosk.compartments[n].lock_released
    order = await _order(rig, order_id)
    assert order.code_used_at is None  # the single-use code is still hers
    async with rig.ctx.sessionmaker() as session:
        audit = (
            await session.scalars(
                select(OrderEvent).where(
                    OrderEvent.order_id == order.id, OrderEvent.action == "scan_ignored"
                )
            )
        ).all()
    assert sorted(str(e.detail["reason"]) for e in audit) == ["ahead", "stale"]
    stale_after = await _metric(rig, 'locker_scans_ignored_total{reason="stale"}')
    ahead_after = await _metric(rig, 'locker_scans_ignored_total{reason="ahead"}')
    assert (stale_after - stale_before, ahead_after - ahead_before) == (1.0, 1.0)

    rig.kiosk.scan(token)  # she is at the kiosk now
    await until(lambda: rig.kiosk.compartments[n].lock_released, 10, "the unlock")
    assert (await _order(rig, order_id)).code_used_at is not None
