"""The story driven through the kiosk handler, below MQTT: events in, state and commands out.

The kiosk here is a stand-in that answers commands; tests over a real broker are in
test_story_mqtt.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from firmware_bridge import contract
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.kiosks import handler as handler_module
from locker_service.kiosks.handler import StoryHandler
from locker_service.models import (
    Alert,
    Compartment,
    DisinfectionCycle,
    DoorOpening,
    NotificationOutbox,
    Order,
    OrderEvent,
    Timer,
    utcnow,
)
from locker_service.runtime import Runtime
from locker_service.sites import service as admin
from locker_service.timer_loop.loop import TimerLoop
from locker_service.timers.service import TimerKind
from tests.locker_service.world import (
    COURIER_PIN,
    FakeKiosk,
    World,
    compartment,
    create_order,
    cycles_have_run,
    database_away,
    order_of,
    token_of,
    trail,
)

# Both backends in the everyday selection too (tests/conftest.py, ADR 0127): the subject is
# SQL written per backend, the kiosk events' insert-if-new (a redelivered event counts once).
POSTGRES_EVERY_DAY = True

Emit = Callable[..., Awaitable[contract.Event]]


@pytest.fixture
def emit(runtime: Runtime, world: World) -> Emit:
    handler: StoryHandler = runtime.story

    async def send(type_: str, n: int | None = None, **data: Any) -> contract.Event:
        event = contract.Event(
            event_id=uuid.uuid4().hex,
            type=type_,
            compartment=n,
            data=data,  # type: ignore[arg-type]
        )
        await handler.on_event(world.kiosk_code, event)
        return event

    return send


async def _dropoff(client: httpx.AsyncClient, world: World, ref: str) -> httpx.Response:
    return await client.post(
        "/api/v1/kiosk/dropoff",
        json={"courier_code": world.courier_code, "pin": world.courier_pin, "order_ref": ref},
        headers=world.kiosk(),
    )


async def test_whole_story(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    emit: Emit,
) -> None:
    order = await create_order(app_client, world, ref="S-1")
    timers = TimerLoop(service)

    dropped = await _dropoff(app_client, world, "S-1")
    assert dropped.status_code == 200, dropped.text
    n = dropped.json()["compartment"]
    assert n == 2  # layout S:1,M:3: the smallest fitting compartment is the first M
    assert fake_kiosk.unlocks() == [2]
    assert (await order_of(service, order["id"])).state == "assigned"

    await emit("door_opened", n)
    await emit("item_placed", n)
    await emit("door_closed", n)
    assert (await order_of(service, order["id"])).state == "deposited"
    assert (await compartment(service, world, n)).state == "occupied"

    assert await timers.run_due() >= 1
    assert fake_kiosk.actions(n)[-2:] == ["set_heater", "start_disinfection"]
    heater = [c for c in fake_kiosk.commands if c[1] == "set_heater"][-1]
    assert heater[3] == {"setpoint_c": 65.0}
    cycle = [c for c in fake_kiosk.commands if c[1] == "start_disinfection"][-1]
    assert cycle[3] == {"duration_s": 1800}  # nominal: the kiosk scales its own clock
    # Sent, not yet confirmed: the order is not said to disinfect before the lamp is on.
    assert (await order_of(service, order["id"])).state == "deposited"
    assert (await compartment(service, world, n)).state == "disinfecting"

    await emit("disinfection_started", n)
    assert (await order_of(service, order["id"])).state == "disinfecting"
    cycles_have_run(service)
    await emit("disinfection_completed", n)
    ready = await order_of(service, order["id"])
    assert ready.state == "ready"
    assert ready.hold_until is not None
    async with service.sessionmaker() as session:
        outbox = (await session.scalars(select(NotificationOutbox))).all()
    assert [(row.kind, row.attachment, row.status) for row in outbox] == [
        ("ready", "qr", "pending")
    ]
    assert outbox[0].channel == "json://127.0.0.1:9/hook"

    page = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert page["ready"] is True and page["compartment_number"] == n
    code = page["fallback_code"]
    assert len(code) == 8 and code.isdigit()
    qr = await app_client.get(f"/p/{token_of(order)}/qr.png")
    assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG")

    picked = await app_client.post(
        "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
    )
    assert picked.status_code == 200, picked.text
    assert picked.json()["compartment"] == n
    assert fake_kiosk.unlocks() == [2, 2]

    await emit("door_opened", n)
    await emit("item_removed", n)
    await emit("door_closed", n)
    assert (await order_of(service, order["id"])).state == "picked_up"
    assert (await compartment(service, world, n)).state == "cleaning"

    await timers.run_due()
    cleaning = [c for c in fake_kiosk.commands if c[1] == "start_disinfection"][-1]
    assert cleaning[3] == {"duration_s": 300}
    await emit("disinfection_completed", n)
    assert (await compartment(service, world, n)).state == "available"

    steps = await trail(service, order["id"])
    async with service.sessionmaker() as session:
        openings = (await session.scalars(select(DoorOpening).order_by(DoorOpening.id))).all()
        cycles = (
            await session.scalars(select(DisinfectionCycle).order_by(DisinfectionCycle.id))
        ).all()
        alerts = (await session.scalars(select(Alert))).all()
    assert [a for a in steps if a != "door_opened"] == [
        "create",
        "assign",
        "deposit",
        "start_cycle",
        "complete_cycle",
        "code_accepted",
        "pick_up",
    ]
    assert [(o.who, o.why) for o in openings] == [
        (f"courier:{world.courier_code}", "drop-off"),
        ("purchaser:keypad", "pickup"),
    ]
    assert all(o.request_id and o.door_opened_at for o in openings)
    assert [(c.kind, c.state) for c in cycles] == [("hold", "completed"), ("cleaning", "completed")]
    assert alerts == []


async def test_door_shut_with_nothing_inside_releases_the_compartment(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, emit: Emit
) -> None:
    order = await create_order(app_client, world, ref="S-2")
    told: list[tuple[str, dict[str, Any]]] = []
    publish = service.hub.publish

    def recording(kind: str, data: dict[str, Any], site_id: int | None = None) -> None:
        told.append((kind, data))
        publish(kind, data, site_id)

    service.hub.publish = recording  # type: ignore[method-assign]
    n = (await _dropoff(app_client, world, "S-2")).json()["compartment"]
    await emit("door_opened", n)
    await emit("door_closed", n)
    released = await order_of(service, order["id"])
    assert released.state == "created" and released.compartment_id is None
    assert (await compartment(service, world, n)).state == "available"
    dropoffs = [data for kind, data in told if kind == "dropoff"]
    assert [(d["compartment"], d["outcome"]) for d in dropoffs] == [(n, "empty")]
    # the order can be dropped off again
    assert (await _dropoff(app_client, world, "S-2")).status_code == 200


async def test_unexplained_opening_raises_one_alert(
    world: World, service: ServiceContext, emit: Emit
) -> None:
    await emit("door_opened", 3, forced=True)
    await emit("door_closed", 3)
    await emit("door_opened", 3, forced=True)
    async with service.sessionmaker() as session:
        alerts = (await session.scalars(select(Alert))).all()
        openings = (await session.scalars(select(DoorOpening))).all()
    assert [(a.kind, a.severity, a.count) for a in alerts] == [
        ("door_opened_unexplained", "critical", 2)
    ]
    assert len(openings) == 2 and all(o.request_id is None for o in openings)


async def test_a_redelivered_event_is_handled_once(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    runtime: Runtime,
    emit: Emit,
) -> None:
    await create_order(app_client, world, ref="S-3")
    n = (await _dropoff(app_client, world, "S-3")).json()["compartment"]
    handler: StoryHandler = runtime.story
    await emit("door_opened", n)
    await emit("item_placed", n)
    closed = await emit("door_closed", n)
    await handler.on_event(world.kiosk_code, closed)
    await handler.on_event(world.kiosk_code, closed)
    async with service.sessionmaker() as session:
        deposits = (
            await session.scalars(select(OrderEvent).where(OrderEvent.action == "deposit"))
        ).all()
        starts = (
            await session.scalars(select(Timer).where(Timer.kind == "start_hold_cycle"))
        ).all()
    assert len(deposits) == 1 and len(starts) == 1


async def test_a_rolled_back_message_leaves_the_kiosk_usable_for_the_next(
    world: World, service: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kiosk looked up (and cached) in a transaction that then rolls back still serves the
    kiosk's next messages: no event may be lost to a stale copy."""
    handler = StoryHandler(service)  # its kiosk cache starts empty
    real_by_number = handler_module.compartments.by_number
    calls = 0

    async def failing_once(*args: Any, **kwargs: Any) -> Compartment | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("the database went away mid-transaction")
        return await real_by_number(*args, **kwargs)

    monkeypatch.setattr(handler_module.compartments, "by_number", failing_once)

    def opened() -> contract.Event:
        return contract.Event(
            event_id=uuid.uuid4().hex, type="door_opened", compartment=3, data={"forced": True}
        )

    with pytest.raises(ConnectionResetError):
        await handler.on_event(world.kiosk_code, opened())
    await handler.on_event(world.kiosk_code, opened())
    async with service.sessionmaker() as session:
        alerts = (await session.scalars(select(Alert))).all()
    assert [a.kind for a in alerts] == ["door_opened_unexplained"]


async def test_kiosk_offline_raises_and_online_resolves(
    world: World, service: ServiceContext, runtime: Runtime
) -> None:
    handler: StoryHandler = runtime.story
    await handler.on_status(world.kiosk_code, contract.KioskStatus(state="offline"))
    async with service.sessionmaker() as session:
        alert = await session.scalar(select(Alert).where(Alert.kind == "kiosk_offline"))
    assert alert is not None and alert.state == "open"
    await handler.on_status(
        world.kiosk_code, contract.KioskStatus(state="online", board_online=True)
    )
    async with service.sessionmaker() as session:
        alert = await session.scalar(select(Alert).where(Alert.kind == "kiosk_offline"))
    assert alert is not None and alert.state == "resolved"


async def test_a_failed_unlock_gives_the_compartment_back(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order = await create_order(app_client, world, ref="S-4")
    fake_kiosk.answers["unlock"] = ["failed"]
    answer = await _dropoff(app_client, world, "S-4")
    assert answer.status_code == 503
    assert answer.json()["error"] == "unlock_failed"
    assert (await order_of(service, order["id"])).state == "created"
    assert (await compartment(service, world, 2)).state == "available"
    async with service.sessionmaker() as session:
        assert (await session.scalars(select(DoorOpening))).all() == []


async def _dropoff_timers(service: ServiceContext, order_id: str) -> list[Timer]:
    async with service.sessionmaker() as session:
        return list(
            (
                await session.scalars(
                    select(Timer).where(
                        Timer.kind == TimerKind.DROPOFF_TIMEOUT.value,
                        Timer.order_id == uuid.UUID(order_id),
                        Timer.state == "pending",
                    )
                )
            ).all()
        )


async def test_an_unconfirmed_unlock_keeps_the_compartment_for_the_courier(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    emit: Emit,
) -> None:
    """The kiosk took the unlock and went quiet: the lock may have released, so the courier is
    told which compartment to look at and it stays his; the food he puts in is his drop-off."""
    order = await create_order(app_client, world, ref="U-1")
    fake_kiosk.answers["unlock"] = ["no_final_answer"]
    answer = await _dropoff(app_client, world, "U-1")
    assert answer.status_code == 504
    n = fake_kiosk.unlocks()[-1]
    assert answer.json()["error"] == "dropoff_unconfirmed"
    assert answer.json()["compartment"] == n
    assert f"compartment {n}" in answer.json()["message"]
    assert (await order_of(service, order["id"])).state == "assigned"
    assert (await compartment(service, world, n)).state == "reserved"
    assert len(await _dropoff_timers(service, order["id"])) == 1  # it frees a door never opened
    await emit("door_opened", n)
    await emit("door_closed", n, occupied=True)
    assert (await order_of(service, order["id"])).state == "deposited"
    async with service.sessionmaker() as session:
        opening = await session.scalar(select(DoorOpening))
        alerts = (await session.scalars(select(Alert))).all()
    assert opening is not None and opening.door_opened_at is not None  # explained
    assert alerts == []


async def test_the_courier_asking_again_opens_the_same_compartment(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    emit: Emit,
) -> None:
    """His unlock unconfirmed and the door shut, the courier touches Try again: the
    compartment his drop-off holds opens again, on the order's record, with its door timer
    started over; no second compartment is taken."""
    order = await create_order(app_client, world, ref="U-2")
    fake_kiosk.answers["unlock"] = ["no_final_answer"]
    n = (await _dropoff(app_client, world, "U-2")).json()["compartment"]
    first_timer = (await _dropoff_timers(service, order["id"]))[0]
    again = await _dropoff(app_client, world, "U-2")
    assert again.status_code == 200, again.text
    assert again.json()["compartment"] == n
    assert fake_kiosk.unlocks() == [n, n]
    assert fake_kiosk.request_ids[0] != fake_kiosk.request_ids[-1]  # a new opening
    assert [c.state for c in [await compartment(service, world, k) for k in (2, 3, 4)]].count(
        "reserved"
    ) == 1
    timers_now = await _dropoff_timers(service, order["id"])
    assert len(timers_now) == 1 and timers_now[0].due_at > first_timer.due_at
    assert (await trail(service, order["id"]))[-2:] == ["assign", "opened_again"]
    async with service.sessionmaker() as session:
        openings = (await session.scalars(select(DoorOpening))).all()
    assert len(openings) == 2
    await emit("door_opened", n)
    await emit("door_closed", n, occupied=True)
    assert (await order_of(service, order["id"])).state == "deposited"


async def test_a_door_locked_again_before_the_courier_pulled_it_opens_again(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """The unlock succeeded but the latch caught before he pulled: asking again opens his
    compartment instead of refusing an order that is already assigned."""
    order = await create_order(app_client, world, ref="U-3")
    n = (await _dropoff(app_client, world, "U-3")).json()["compartment"]
    again = await _dropoff(app_client, world, "U-3")
    assert again.status_code == 200, again.text
    assert again.json()["compartment"] == n
    assert fake_kiosk.unlocks() == [n, n]
    assert (await order_of(service, order["id"])).state == "assigned"


async def test_a_drop_off_held_elsewhere_says_where_and_opens_nothing_here(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """An order whose drop-off holds a compartment (its unlock unconfirmed) is named at another
    kiosk of the site, or by another courier: each is told where it is, and nothing opens."""
    async with session_scope(service.sessionmaker) as session:
        second = await admin.create_kiosk(
            session, world.site_code, "k2-" + world.kiosk_code, "Hall", "M:2"
        )
        await admin.create_courier(
            session,
            service.settings.secret_key,
            "c2-" + world.courier_code,
            "Kim",
            world.merchant_id,
            None,
            COURIER_PIN,
        )
    await create_order(app_client, world, ref="U-5")
    fake_kiosk.answers["unlock"] = ["no_final_answer"]
    n = (await _dropoff(app_client, world, "U-5")).json()["compartment"]
    at_the_other_kiosk = await app_client.post(
        "/api/v1/kiosk/dropoff",
        json={"courier_code": world.courier_code, "pin": COURIER_PIN, "order_ref": "U-5"},
        headers={"Authorization": f"Bearer {second.secret}"},
    )
    another_courier = await app_client.post(
        "/api/v1/kiosk/dropoff",
        json={"courier_code": "c2-" + world.courier_code, "pin": COURIER_PIN, "order_ref": "U-5"},
        headers=world.kiosk(),
    )
    for answer in (at_the_other_kiosk, another_courier):
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == "dropoff_in_progress"
        assert (answer.json()["kiosk"], answer.json()["compartment"]) == ("Lobby", n)
    assert fake_kiosk.unlocks() == [n]


async def test_a_delivery_courier_s_reference_means_the_order_still_waiting_for_him(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """Two merchants number their orders alike, and one's order 1042 was collected last month:
    a delivery company's courier typing 1042 is given the one still waiting for a courier, not
    told to type an order id he never sees; nor is food collected an hour ago his. One that
    ended today without reaching a locker may be the food in his hands (expired while he was on
    his way): then, as with two waiting, he must say which."""
    async with session_scope(service.sessionmaker) as session:
        other = await admin.create_merchant(session, "Dumpling Hut", [world.site_code])
        await admin.create_courier(
            session,
            service.settings.secret_key,
            "d-" + world.courier_code,
            "Dee",
            None,
            "Fast Wheels",
            COURIER_PIN,
        )
    assert other.secret is not None

    async def ordered(ref: str, key: str) -> str:
        made = await app_client.post(
            "/api/v1/orders", json=world.order_body(ref), headers={"X-API-Key": key}
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    async def ended(order_id: str, ago: timedelta) -> None:
        async with session_scope(service.sessionmaker) as session:
            await session.execute(
                update(Order)
                .where(Order.id == uuid.UUID(order_id))
                .values(state="expired", closed_at=utcnow() - ago)
            )

    async def drop(ref: str) -> httpx.Response:
        body = {"courier_code": "d-" + world.courier_code, "pin": COURIER_PIN, "order_ref": ref}
        return await app_client.post("/api/v1/kiosk/dropoff", json=body, headers=world.kiosk())

    await ended(await ordered("1042", world.merchant_key), timedelta(days=30))
    waiting = await ordered("1042", other.secret)
    given = await drop("1042")
    assert given.status_code == 200, given.text
    async with service.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(waiting))
        assert order is not None and order.state == "assigned"
    # Ended an hour ago, or waiting too: which is meant cannot be told from the reference.
    await ended(await ordered("2077", world.merchant_key), timedelta(hours=1))
    await ordered("2077", other.secret)
    await ordered("3088", world.merchant_key)
    await ordered("3088", other.secret)
    for ref in ("2077", "3088"):
        unclear = await drop(ref)
        assert unclear.status_code == 409 and unclear.json()["error"] == "ambiguous_order", ref
    # Food already through a locker (collected an hour ago) is not in his hands.
    collected = await ordered("4099", world.merchant_key)
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(collected))
            .values(
                state="picked_up",
                deposited_at=utcnow() - timedelta(hours=2),
                picked_up_at=utcnow() - timedelta(hours=1),
            )
        )
    theirs = await ordered("4099", other.secret)
    assert (await drop("4099")).status_code == 200
    async with service.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(theirs))
        assert order is not None and order.state == "assigned"


async def test_a_retry_the_kiosk_refuses_keeps_the_compartment_for_its_door_timer(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """The retry's latch did not release, but the first unlock's outcome is still unknown:
    the food may be in. The compartment stays his; its door timer frees it once the board shows
    it shut, latched and empty."""
    order = await create_order(app_client, world, ref="U-4")
    fake_kiosk.answers["unlock"] = ["no_final_answer", "failed"]
    n = (await _dropoff(app_client, world, "U-4")).json()["compartment"]
    again = await _dropoff(app_client, world, "U-4")
    assert again.status_code == 503
    assert again.json()["error"] == "unlock_failed"
    assert fake_kiosk.unlocks() == [n, n]
    assert (await order_of(service, order["id"])).state == "assigned"
    assert (await compartment(service, world, n)).state == "reserved"
    assert len(await _dropoff_timers(service, order["id"])) == 1


async def test_a_retry_once_the_food_is_in_opens_nothing_and_the_door_shutting_deposits_it(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    emit: Emit,
) -> None:
    """Unconfirmed, yet the door opened and the food went in; the courier touches Try again
    before shutting it: he is told where his food is, and nothing is opened or freed."""
    order = await create_order(app_client, world, ref="U-6")
    fake_kiosk.answers["unlock"] = ["no_final_answer", "failed"]
    n = (await _dropoff(app_client, world, "U-6")).json()["compartment"]
    await emit("door_opened", n)
    await emit("item_placed", n)
    again = await _dropoff(app_client, world, "U-6")
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "dropoff_in_progress"
    assert again.json()["compartment"] == n
    assert fake_kiosk.unlocks() == [n]
    assert (await compartment(service, world, n)).state == "reserved"
    await emit("door_closed", n, occupied=True)
    assert (await order_of(service, order["id"])).state == "deposited"


async def test_no_free_compartment_of_the_size(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """The courier is turned away with the food, and his screen says to call the operator: the
    operator has an alert (one per kiosk, however many are turned away) and the merchant
    reads it on the order, which still waits for a courier."""
    order = await create_order(app_client, world, ref="S-5", size="L")
    for _ in range(2):
        answer = await _dropoff(app_client, world, "S-5")
        assert answer.status_code == 409
        assert answer.json()["error"] == "no_free_compartment"
    async with service.sessionmaker() as session:
        [alert] = (
            await session.scalars(select(Alert).where(Alert.kind == "no_free_compartment"))
        ).all()
    assert alert.state == "open" and alert.count == 2 and alert.kiosk_id == world.kiosk_id
    assert "hot order S-5 (size L)" in alert.message
    read = (await app_client.get(f"/api/v1/orders/{order['id']}", headers=world.merchant())).json()
    assert read["state"] == "created"
    assert [x["kind"] for x in read["notices"]] == ["no_free_compartment"]  # once a kiosk


async def test_ambient_food_prefers_an_unheated_compartment(
    service: ServiceContext, service_app: FastAPI, fake_kiosk: FakeKiosk
) -> None:
    from tests.locker_service.world import seed

    world = await seed(
        service.sessionmaker, service.settings, layout="M:3", unheated=frozenset({3})
    )
    transport = httpx.ASGITransport(app=service_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await create_order(client, world, ref="cold", temperature_class="ambient")
        await create_order(client, world, ref="hot")
        assert (await _dropoff(client, world, "cold")).json()["compartment"] == 3
        assert (await _dropoff(client, world, "hot")).json()["compartment"] == 1


async def test_wrong_courier_pin_is_refused_then_locked_out(
    app_client: httpx.AsyncClient, world: World, fake_kiosk: FakeKiosk
) -> None:
    await create_order(app_client, world, ref="S-6")
    for _ in range(5):
        wrong = await app_client.post(
            "/api/v1/kiosk/dropoff",
            json={"courier_code": world.courier_code, "pin": "000000", "order_ref": "S-6"},
            headers=world.kiosk(),
        )
        assert wrong.status_code == 403
    locked = await _dropoff(app_client, world, "S-6")
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert fake_kiosk.unlocks() == []


async def test_a_faulted_free_compartment_leaves_the_pool_until_cleared(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, emit: Emit
) -> None:
    for n in (2, 3, 4):  # every medium compartment
        await emit("fault_raised", n, fault="sensor_open")
    assert (await compartment(service, world, 2)).state == "faulted"
    await create_order(app_client, world, ref="F-1")
    assert (await _dropoff(app_client, world, "F-1")).status_code == 409
    await emit("fault_cleared", 3)
    assert (await compartment(service, world, 3)).state == "available"
    assert (await _dropoff(app_client, world, "F-1")).json()["compartment"] == 3
    async with service.sessionmaker() as session:
        alerts = (await session.scalars(select(Alert).order_by(Alert.id))).all()
    assert [(a.kind, a.state) for a in alerts] == [
        ("compartment_fault", "open"),  # 2
        ("compartment_fault", "resolved"),  # 3
        ("compartment_fault", "open"),  # 4
        ("no_free_compartment", "open"),  # the courier turned away meanwhile
    ]


async def test_door_closed_carries_what_was_inside(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, emit: Emit
) -> None:
    order = await create_order(app_client, world, ref="S-7")
    n = (await _dropoff(app_client, world, "S-7")).json()["compartment"]
    await emit("door_opened", n)
    # the item event was lost or is still on its way; the door's own report decides
    await emit("door_closed", n, occupied=True)
    assert (await order_of(service, order["id"])).state == "deposited"


async def test_hot_drop_off_preheats_and_an_empty_shut_switches_it_off(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    emit: Emit,
) -> None:
    await create_order(app_client, world, ref="S-8")
    n = (await _dropoff(app_client, world, "S-8")).json()["compartment"]
    assert fake_kiosk.commands[-2:] == [
        (world.kiosk_code, "unlock", n, fake_kiosk.commands[-2][3]),
        (world.kiosk_code, "set_heater", n, {"setpoint_c": 65.0}),
    ]
    await emit("door_opened", n)
    await emit("door_closed", n)  # nothing put in
    await TimerLoop(service).run_due()
    assert fake_kiosk.commands[-1] == (world.kiosk_code, "set_heater", n, {"setpoint_c": None})


async def test_ambient_food_is_not_preheated(
    app_client: httpx.AsyncClient, world: World, fake_kiosk: FakeKiosk
) -> None:
    await create_order(app_client, world, ref="S-9", temperature_class="ambient")
    n = (await _dropoff(app_client, world, "S-9")).json()["compartment"]
    assert fake_kiosk.actions(n) == ["unlock"]


async def test_the_database_going_away_once_the_door_is_unlocked_does_not_fail_the_drop_off(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The courier's door is unlocked: he is told which one and the preheat goes out, whatever
    the database does from then on (ADR 0086)."""
    await create_order(app_client, world, ref="S-11")
    command = fake_kiosk.command

    async def then_the_database_goes(*args: Any, **kwargs: Any) -> contract.Reply:
        reply = await command(*args, **kwargs)
        if args[1] == "unlock":
            monkeypatch.setattr(service, "sessionmaker", database_away)
        return reply

    fake_kiosk.command = then_the_database_goes  # type: ignore[method-assign]
    answer = await _dropoff(app_client, world, "S-11")
    assert answer.status_code == 200, answer.text
    n = answer.json()["compartment"]
    assert fake_kiosk.actions(n) == ["unlock", "set_heater"]


async def test_a_failed_preheat_does_not_fail_the_drop_off(
    app_client: httpx.AsyncClient, world: World, fake_kiosk: FakeKiosk
) -> None:
    await create_order(app_client, world, ref="S-10")
    fake_kiosk.answers["set_heater"] = ["failed"]
    answer = await _dropoff(app_client, world, "S-10")
    assert answer.status_code == 200
