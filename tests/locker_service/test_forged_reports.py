"""Forged kiosk reports over MQTT, on the kiosk's own topic: a real Mosquitto, the service with its
kiosk link and timers, and a scripted kiosk whose client publishes the forgeries. Neither moves an
order; each raises an `impossible_report` alert; a compartment with food in it is not given to
the next courier (ADR 0037)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from locker_service.context import ServiceContext
from locker_service.main import create_app
from locker_service.models import (
    Alert,
    Compartment,
    DisinfectionCycle,
    KioskEvent,
    NotificationOutbox,
    Order,
)
from tests.locker_service.conftest import make_settings
from tests.locker_service.test_story_mqtt import Rig, until
from tests.locker_service.world import seed
from tests.support.mosquitto import MosquittoProcess
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]

TIME_SCALE = 600.0  # the service's nominal minutes pass in tenths of a second
# The kiosk's cycles run in real time (30 minutes): each test ends the cycle it needs ended
# (`complete_cycle`), so a starved test never sees one run out before its forged report.
KIOSK_TIME_SCALE = 1.0


@pytest.fixture
async def rig(database_url: str, private_mosquitto: MosquittoProcess) -> AsyncIterator[Rig]:
    kiosk_code = f"forge-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        database_url,
        kiosk_link_enabled=True,
        timers_enabled=True,
        mqtt_url=private_mosquitto.url,
        replica_id=f"forge-{uuid.uuid4().hex[:6]}",
        time_scale=TIME_SCALE,
        dropoff_door_timeout_s=6000.0,  # 10 s: the scripted courier is never that slow
        reminder_after_s=1e6,
        timer_poll_s=0.1,
        command_timeout_s=5.0,
        # The food's deadline and the purchaser's hold (4 nominal hours each: 24 s here) far
        # out: a test starved beside other work must not see its order end as unsafe or expired.
        food_cooking_limit_s=360000.0,
        hold_limit_s=360000.0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ctx: ServiceContext = app.state.ctx
        world = await seed(ctx.sessionmaker, settings, kiosk_code=kiosk_code)
        kiosk = ScriptedKiosk(
            private_mosquitto.host,
            private_mosquitto.port,
            kiosk_code,
            compartments=4,
            time_scale=KIOSK_TIME_SCALE,
        ).start()
        try:
            await until(lambda: app.state.runtime.link.ready, 10, "the kiosk link")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield Rig(ctx, client, world, kiosk)
        finally:
            with contextlib.suppress(Exception):
                kiosk.stop()


async def _order(rig: Rig, order_id: str) -> Order:
    async with rig.ctx.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(order_id))
        assert order is not None
        return order


async def _compartment(rig: Rig, n: int) -> Compartment:
    async with rig.ctx.sessionmaker() as session:
        found = await session.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == rig.world.kiosk_id, Compartment.number == n
            )
        )
        assert found is not None
        return found


async def _alerts(rig: Rig, kind: str) -> list[Alert]:
    async with rig.ctx.sessionmaker() as session:
        return list((await session.scalars(select(Alert).where(Alert.kind == kind))).all())


async def _handled(rig: Rig, event_id: str) -> bool:
    async with rig.ctx.sessionmaker() as session:
        found = await session.scalar(select(KioskEvent.id).where(KioskEvent.event_id == event_id))
        return found is not None


async def _create(rig: Rig, ref: str, **overrides: Any) -> str:
    answer = await rig.client.post(
        "/api/v1/orders", json=rig.world.order_body(ref, **overrides), headers=rig.world.merchant()
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


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


async def _cycle_runs_out(rig: Rig, n: int) -> None:
    """Once the service's clock has passed the running cycle's end (an end reported before it
    is impossible), the board's cycle runs out."""
    cycle = await _running_cycle(rig, n)
    # asyncio sleeps on the monotonic clock, the service judges by the wall's: a little more.
    await asyncio.sleep(max((cycle.ends_at - rig.ctx.clock()).total_seconds(), 0.0) + 0.05)
    assert rig.ctx.clock() >= cycle.ends_at
    rig.kiosk.complete_cycle(n)


async def _running_cycle(rig: Rig, n: int) -> DisinfectionCycle:
    c = await _compartment(rig, n)
    async with rig.ctx.sessionmaker() as session:
        cycle = await session.scalar(
            select(DisinfectionCycle).where(
                DisinfectionCycle.compartment_id == c.id, DisinfectionCycle.state == "running"
            )
        )
    assert cycle is not None
    return cycle


async def _deposit(rig: Rig, ref: str) -> int:
    n = await _drop_off(rig, ref)
    rig.kiosk.open_door(n)
    rig.kiosk.place_item(n)
    rig.kiosk.close_door(n)
    return n


async def test_a_forged_cycle_end_at_the_start_of_the_cycle_changes_nothing(rig: Rig) -> None:
    order_id = await _create(rig, "forged-cycle")
    n = await _deposit(rig, "forged-cycle")
    await rig.kiosk.wait_for_command("start_disinfection", n)
    assert rig.kiosk.compartments[n].uv_on  # the lamp is on: the cycle has only begun

    # The service's clock stands a tenth into the cycle until the forged end is judged: its 3 s
    # at this time scale would otherwise run out under a descheduled test, and the end be true.
    real_clock = rig.ctx.clock
    cycle = await _running_cycle(rig, n)
    inside = cycle.started_at + (cycle.ends_at - cycle.started_at) / 10
    rig.ctx.clock = lambda: inside
    try:
        forged = rig.kiosk.publish_event("disinfection_completed", n)
        await until(lambda: _handled(rig, forged.event_id), 10, "the forged report handled")
    finally:
        rig.ctx.clock = real_clock
    order = await _order(rig, order_id)
    assert order.state == "disinfecting" and order.ready_at is None
    assert (await _compartment(rig, n)).state == "disinfecting"
    async with rig.ctx.sessionmaker() as session:
        told = (await session.scalars(select(NotificationOutbox.kind))).all()
    assert "ready" not in told  # the purchaser is not called to a lamp that is still on
    [alert] = await _alerts(rig, "impossible_report")
    assert "disinfection_completed" in alert.message and alert.severity == "critical"

    # the cycle's own end, when it comes, makes the order ready
    await _cycle_runs_out(rig, n)

    async def ready() -> bool:
        return (await _order(rig, order_id)).state == "ready"

    await until(ready, 20, "the order ready after its real cycle")


async def test_a_forged_empty_closing_of_a_ready_order_changes_nothing(rig: Rig) -> None:
    order_id = await _create(rig, "forged-close", size="S")
    n = await _deposit(rig, "forged-close")
    assert n == 1  # layout S:1,M:3: the small compartment
    await rig.kiosk.wait_for_command("start_disinfection", n)
    await _cycle_runs_out(rig, n)

    async def ready() -> bool:
        return (await _order(rig, order_id)).state == "ready"

    await until(ready, 20, "the order ready")
    assert rig.kiosk.compartments[n].occupied  # 450 g of food behind a shut door

    forged = rig.kiosk.publish_event("door_closed", n, {"occupied": False})

    await until(lambda: _handled(rig, forged.event_id), 10, "the forged report handled")
    order = await _order(rig, order_id)
    assert (order.state, order.code_used_at, order.picked_up_at) == ("ready", None, None)
    c = await _compartment(rig, n)
    assert (c.state, c.occupied) == ("awaiting_pickup", True)
    [alert] = await _alerts(rig, "impossible_report")
    assert "door_closed" in alert.message and "no door opening for order" in alert.message

    # the next small drop-off is not given the compartment with her food in it
    await _create(rig, "next-small", size="S")
    assert await _drop_off(rig, "next-small") != n


async def test_a_free_compartment_with_something_inside_is_not_given_to_a_courier(
    rig: Rig,
) -> None:
    rig.kiosk.open_door(1, force=True)  # someone leaves a bag in the small compartment
    rig.kiosk.place_item(1)
    rig.kiosk.close_door(1)

    async def seen() -> bool:
        return (await _compartment(rig, 1)).occupied and bool(
            await _alerts(rig, "item_in_free_compartment")
        )

    await until(seen, 10, "the bag seen")
    assert (await _compartment(rig, 1)).state == "available"
    await _create(rig, "small", size="S")
    n = await _drop_off(rig, "small")
    assert n != 1
    assert rig.kiosk.compartments[n].lock_released and not rig.kiosk.compartments[1].lock_released
