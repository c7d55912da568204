"""Kiosk reports checked by the handler, and orders reconciled from snapshots (below MQTT, on
SQLite and PostgreSQL): an impossible report raises an alert and changes nothing; a snapshot
that disagrees with its compartment repairs the order or raises an alert."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import event as sa_event
from sqlalchemy import select, update

from firmware_bridge import contract
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.kiosks.handler import StoryHandler
from locker_service.models import (
    Alert,
    NotificationOutbox,
    Timer,
    utcnow,
)
from locker_service.timer_loop.loop import TimerLoop
from locker_service.timers.service import TimerKind
from tests.locker_service.world import (
    World,
    compartment,
    create_order,
    event,
    make_ready,
    order_of,
    token_of,
    trail,
)
from tests.locker_service.world import board_snapshot as snapshot


async def send_snapshot(
    ctx: ServiceContext, world: World, snap: contract.CompartmentSnapshot
) -> None:
    await StoryHandler(ctx).on_snapshot(world.kiosk_code, snap)


async def open_alerts(ctx: ServiceContext) -> list[Alert]:
    async with ctx.sessionmaker() as session:
        return list(
            (
                await session.scalars(select(Alert).where(Alert.state == "open").order_by(Alert.id))
            ).all()
        )


async def dropoff(client: httpx.AsyncClient, world: World, ref: str) -> httpx.Response:
    return await client.post(
        "/api/v1/kiosk/dropoff",
        json={"courier_code": world.courier_code, "pin": world.courier_pin, "order_ref": ref},
        headers=world.kiosk(),
    )


async def pickup_with_code(client: httpx.AsyncClient, world: World, order: dict[str, Any]) -> int:
    page = (await client.get(f"/api/v1/p/{token_of(order)}")).json()
    answer = await client.post(
        "/api/v1/kiosk/pickup", json={"code": page["fallback_code"]}, headers=world.kiosk()
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["compartment"])


# -- impossible reports ----------------------------------------------------------------------


async def test_a_cycle_reported_done_a_second_in_changes_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world, ref="early")
    n = (await dropoff(app_client, world, "early")).json()["compartment"]
    await event(service, world, "door_opened", n)
    await event(service, world, "door_closed", n, occupied=True)
    await TimerLoop(service).run_due()  # the 30-minute hold cycle is sent to the kiosk
    assert (await order_of(service, order["id"])).state == "deposited"  # the lamp not yet on
    await event(service, world, "disinfection_started", n)
    assert (await order_of(service, order["id"])).state == "disinfecting"

    await event(service, world, "disinfection_completed", n)

    assert (await order_of(service, order["id"])).state == "disinfecting"
    assert (await compartment(service, world, n)).state == "disinfecting"
    async with service.sessionmaker() as session:
        assert (await session.scalars(select(NotificationOutbox))).all() == []
    [alert] = await open_alerts(service)
    assert (alert.kind, alert.severity) == ("impossible_report", "critical")
    assert "disinfection_completed" in alert.message
    assert "after it started" in alert.message and "1800.0 s" in alert.message


async def test_a_door_closed_empty_on_a_ready_order_nobody_opened_changes_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await make_ready(app_client, world, service)
    await send_snapshot(service, world, snapshot(n, occupied=True))  # the board: food inside

    await event(service, world, "door_closed", n, occupied=False)

    ready = await order_of(service, order["id"])
    assert ready.state == "ready" and ready.code_used_at is None
    c = await compartment(service, world, n)
    assert (c.state, c.occupied) == ("awaiting_pickup", True)
    [alert] = await open_alerts(service)
    assert alert.kind == "impossible_report" and alert.compartment_id == c.id
    assert f"no door opening for order {order['external_ref']}" in alert.message
    # her code still opens the door
    assert await pickup_with_code(app_client, world, order) == n


async def test_food_left_inside_cannot_be_reported_taken_afterwards(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await make_ready(app_client, world, service)
    await pickup_with_code(app_client, world, order)
    await event(service, world, "door_opened", n)
    await event(service, world, "door_closed", n, occupied=True)  # she left it inside
    await send_snapshot(service, world, snapshot(n, occupied=True))  # shut on the food

    await event(service, world, "door_closed", n, occupied=False)

    assert (await order_of(service, order["id"])).state == "ready"
    assert [a.kind for a in await open_alerts(service)] == ["impossible_report"]


async def test_a_pickup_with_its_door_opening_is_believed(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await make_ready(app_client, world, service)
    await pickup_with_code(app_client, world, order)
    await event(service, world, "door_opened", n)
    await event(service, world, "door_closed", n, occupied=False)
    assert (await order_of(service, order["id"])).state == "picked_up"
    assert await open_alerts(service) == []


async def test_a_deposit_the_board_contradicts_changes_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world, ref="phantom")
    n = (await dropoff(app_client, world, "phantom")).json()["compartment"]
    claimed_at = utcnow()
    # the board, after the claimed closing: door shut, nothing inside
    await send_snapshot(
        service, world, snapshot(n, occupied=False, ts=claimed_at + timedelta(seconds=1))
    )
    handler = StoryHandler(service)
    await handler.on_event(
        world.kiosk_code,
        contract.Event(
            event_id=uuid.uuid4().hex,
            type="door_closed",
            compartment=n,
            ts=claimed_at,
            data={"occupied": True},
        ),
    )
    assert (await order_of(service, order["id"])).state == "assigned"
    assert (await compartment(service, world, n)).state == "reserved"
    [alert] = await open_alerts(service)
    assert alert.kind == "impossible_report" and "shows nothing inside" in alert.message


# -- allocation ------------------------------------------------------------------------------


async def test_an_occupied_compartment_is_not_given_to_a_courier(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    # layout S:1,M:3: compartment 1 is the only small one, and the board sees food in it
    await send_snapshot(service, world, snapshot(1, occupied=True))
    assert (await compartment(service, world, 1)).state == "available"
    await create_order(app_client, world, ref="small", size="S")

    answer = await dropoff(app_client, world, "small")

    assert answer.status_code == 200, answer.text
    assert answer.json()["compartment"] == 2  # the next that fits, not the one with food
    [alert] = await open_alerts(service)
    assert alert.kind == "item_in_free_compartment"
    assert alert.compartment_id == (await compartment(service, world, 1)).id
    assert alert.count == 2  # seen on the snapshot, and again when the courier came


async def test_no_compartment_when_every_fitting_one_holds_something(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    for n in (2, 3, 4):  # every medium compartment
        await send_snapshot(service, world, snapshot(n, occupied=True))
    await create_order(app_client, world, ref="medium", size="M")
    answer = await dropoff(app_client, world, "medium")
    assert answer.status_code == 409
    assert answer.json()["error"] == "no_free_compartment"
    assert sorted(a.kind for a in await open_alerts(service)) == [
        *["item_in_free_compartment"] * 3,
        "no_free_compartment",  # the courier turned away with the food
    ]


# -- reconciliation from snapshots -----------------------------------------------------------


async def test_food_deposited_while_events_were_lost_is_deposited_once(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world, ref="away")
    n = (await dropoff(app_client, world, "away")).json()["compartment"]
    # no door event arrives; the board's snapshot after the gap shows the food behind a shut door
    shut_on_food = snapshot(n, occupied=True)
    for _ in range(3):  # snapshots come again and again: only the first one acts
        await send_snapshot(service, world, shut_on_food)
    await send_snapshot(
        service, world, snapshot(n, occupied=True, ts=utcnow() + timedelta(seconds=1))
    )

    assert (await order_of(service, order["id"])).state == "deposited"
    assert (await compartment(service, world, n)).state == "occupied"
    steps = await trail(service, order["id"])
    assert steps.count("deposit") == 1 and steps.count("reconciled") == 1
    await TimerLoop(service).run_due()  # and its cycle is sent to the kiosk
    lamp_on = snapshot(
        n,
        occupied=True,
        uv_on=True,
        disinfecting=True,
        disinfect_remaining_s=1800,
        ts=utcnow() + timedelta(seconds=2),
    )
    await send_snapshot(service, world, lamp_on)  # the kiosk reports the lamp on
    assert (await order_of(service, order["id"])).state == "disinfecting"
    assert await open_alerts(service) == []


async def test_food_taken_while_events_were_lost_is_picked_up(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await make_ready(app_client, world, service)
    await pickup_with_code(app_client, world, order)  # the unlock is on record
    # the door events are lost; the board shows the compartment empty behind a shut door
    await send_snapshot(service, world, snapshot(n, occupied=False))
    await send_snapshot(service, world, snapshot(n, occupied=False))

    assert (await order_of(service, order["id"])).state == "picked_up"
    assert (await compartment(service, world, n)).state == "cleaning"
    assert (await trail(service, order["id"])).count("pick_up") == 1
    assert await open_alerts(service) == []


async def test_a_kiosk_s_whole_report_is_one_transaction_each_snapshot_handled_as_alone(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """The report a kiosk sends when asked (ADR 0091), handed over at once (ADR 0095): one
    commit, and what each snapshot says happens as it would have alone: a pickup and a deposit
    whose events were lost, something in a free compartment, an unknown compartment skipped."""
    ready, picked_n = await make_ready(app_client, world, service)
    await pickup_with_code(app_client, world, ready)  # the unlock is on record
    dropped = await create_order(app_client, world, ref="lost-events")
    dropped_n = (await dropoff(app_client, world, "lost-events")).json()["compartment"]
    free = sorted({1, 2, 3, 4} - {picked_n, dropped_n})
    report = [
        snapshot(picked_n, occupied=False),  # she took her food; the door events were lost
        snapshot(dropped_n, occupied=True),  # the courier's, likewise
        snapshot(free[0], occupied=True),  # nobody's
        snapshot(free[1], occupied=False),
        snapshot(99, occupied=False),  # no such compartment: skipped, the others handled
    ]
    commits: list[int] = []
    sa_event.listen(service.engine.sync_engine, "commit", lambda _conn: commits.append(1))
    await StoryHandler(service).on_snapshots(world.kiosk_code, report)

    assert commits == [1]
    assert (await order_of(service, ready["id"])).state == "picked_up"
    assert (await compartment(service, world, picked_n)).state == "cleaning"
    assert (await order_of(service, dropped["id"])).state == "deposited"
    assert (await compartment(service, world, dropped_n)).state == "occupied"
    [alert] = await open_alerts(service)
    assert alert.kind == "item_in_free_compartment" and f"compartment {free[0]}" in alert.message
    for n in (free[1], picked_n):
        shown = await compartment(service, world, n)
        assert shown.snapshot_at is not None and not shown.occupied and shown.temp_c == 64.0


async def test_a_snapshot_that_nothing_explains_raises_an_alert_and_changes_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await make_ready(app_client, world, service)
    await send_snapshot(service, world, snapshot(n, occupied=False))  # no unlock for her order
    await send_snapshot(service, world, snapshot(n, occupied=False, ts=utcnow()))

    assert (await order_of(service, order["id"])).state == "ready"
    assert (await compartment(service, world, n)).state == "awaiting_pickup"
    [alert] = await open_alerts(service)
    assert (alert.kind, alert.severity, alert.count) == ("snapshot_unexplained", "critical", 2)
    assert "no unlock for it on record" in alert.message


async def _door_timer_runs_now(ctx: ServiceContext) -> None:
    async with session_scope(ctx.sessionmaker) as session:
        await session.execute(
            update(Timer)
            .where(Timer.kind == TimerKind.DROPOFF_TIMEOUT.value)
            .values(due_at=utcnow(), locked_until=None)
        )
    await TimerLoop(ctx).run_due()


async def test_a_drop_off_its_door_timer_released_before_the_kiosk_was_heard_is_deposited(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """A restarted service runs the due door timer before the broker hands over what the
    kiosk said meanwhile: the timer sees only the unlock's snapshot (latch released, door shut,
    empty), which proves nothing, so it waits; the kiosk's reports then deposit the food."""
    order = await create_order(app_client, world, ref="raced")
    n = (await dropoff(app_client, world, "raced")).json()["compartment"]
    await send_snapshot(service, world, snapshot(n, occupied=False, lock_released=True))
    await _door_timer_runs_now(service)
    assert (await order_of(service, order["id"])).state == "assigned"  # no guess

    await event(service, world, "door_opened", n)  # what the broker kept, handled late
    await event(service, world, "door_closed", n, occupied=True)
    await send_snapshot(service, world, snapshot(n, occupied=True))

    deposited = await order_of(service, order["id"])
    assert deposited.state == "deposited" and deposited.compartment_id is not None
    assert (await compartment(service, world, n)).state == "occupied"
    assert await open_alerts(service) == []
    assert "release" not in await trail(service, order["id"])


async def test_a_bag_in_a_compartment_the_courier_shut_empty_is_not_the_order(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world, ref="empty-then-bag")
    n = (await dropoff(app_client, world, "empty-then-bag")).json()["compartment"]
    await event(service, world, "door_opened", n)
    await event(service, world, "door_closed", n, occupied=False)  # the courier said: empty
    assert (await order_of(service, order["id"])).state == "created"

    await send_snapshot(service, world, snapshot(n, occupied=True))  # a bag, later

    assert (await order_of(service, order["id"])).state == "created"
    assert (await compartment(service, world, n)).state == "available"
    assert [a.kind for a in await open_alerts(service)] == ["item_in_free_compartment"]
