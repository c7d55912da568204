"""Exceptions with food inside, driven through the kiosk handler and the timers (ADR 0047):
what the purchaser's page and messages say, what the merchant API shows, which alerts the
operator has, and that a cycle the board cannot run is not retried."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from firmware_bridge import contract
from locker_service.context import ServiceContext
from locker_service.kiosks.handler import StoryHandler
from locker_service.models import (
    Alert,
    NotificationOutbox,
    Order,
    OrderEvent,
    Timer,
    utcnow,
)
from locker_service.timer_loop.loop import TimerLoop
from locker_service.timers.service import TimerKind
from tests.locker_service.world import (
    FakeKiosk,
    World,
    board_snapshot,
    compartment,
    create_order,
    due_now,
    event,
    fault_told_before_ready,
    make_ready,
    token_of,
)


async def _reserved(
    client: httpx.AsyncClient, world: World, ctx: ServiceContext, ref: str
) -> tuple[dict[str, Any], int]:
    """An order whose courier has just been given a compartment: (order, its number)."""
    await StoryHandler(ctx).on_status(
        world.kiosk_code, contract.KioskStatus(state="online", board_online=True)
    )
    order = await create_order(client, world, ref=ref)
    dropped = await client.post(
        "/api/v1/kiosk/dropoff", json=world.dropoff_body(ref), headers=world.kiosk()
    )
    assert dropped.status_code == 200, dropped.text
    return order, int(dropped.json()["compartment"])


async def _deposit(
    client: httpx.AsyncClient, world: World, ctx: ServiceContext, ref: str
) -> tuple[dict[str, Any], int]:
    order, n = await _reserved(client, world, ctx, ref)
    for kind in ("door_opened", "item_placed", "door_closed"):
        await event(ctx, world, kind, n)
    return order, n


async def _alerts(ctx: ServiceContext) -> dict[str, Alert]:
    async with ctx.sessionmaker() as session:
        return {a.kind: a for a in (await session.scalars(select(Alert))).all()}


async def _outbox(ctx: ServiceContext, order_id: str) -> dict[str, NotificationOutbox]:
    async with ctx.sessionmaker() as session:
        rows = await session.scalars(
            select(NotificationOutbox).where(NotificationOutbox.order_id == uuid.UUID(order_id))
        )
        return {row.kind: row for row in rows}


async def _pending(ctx: ServiceContext, kind: str) -> list[Timer]:
    async with ctx.sessionmaker() as session:
        rows = await session.scalars(
            select(Timer).where(Timer.kind == kind, Timer.state == "pending")
        )
        return list(rows)


async def _page(client: httpx.AsyncClient, order: dict[str, Any], lang: str) -> str:
    """The purchaser page's status line, and the minutes line when it shows one."""
    page = await client.get(f"/p/{token_of(order)}?lang={lang}")
    assert page.status_code == 200
    shown = re.findall(r'<p [^>]*id="(?:status|minutes-left)"[^>]*>([^<]*)</p>', page.text)
    assert shown, page.text
    return " / ".join(shown)


async def _merchant_notices(
    client: httpx.AsyncClient, world: World, order: dict[str, Any]
) -> list[dict[str, Any]]:
    read = await client.get(f"/api/v1/orders/{order['id']}", headers=world.merchant())
    assert read.status_code == 200, read.text
    notices: list[dict[str, Any]] = read.json()["notices"]
    return notices


async def test_heater_fault_during_the_hold_tells_everyone_and_starts_nothing_again(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await _deposit(app_client, world, service, "F-1")
    timers = TimerLoop(service)
    await timers.run_due()
    await event(service, world, "disinfection_started", n)
    assert "kept hot" in await _page(app_client, order, "en")

    await event(service, world, "fault_raised", n, fault="heating_watchdog")
    await event(service, world, "disinfection_aborted", n)  # the board aborts on any fault

    alert = (await _alerts(service))["compartment_fault"]
    assert alert.state == "open" and alert.severity == "critical"
    assert "heating_watchdog with food inside" in alert.message
    assert "abort the cycle and open" in alert.message
    assert not await _pending(service, TimerKind.START_HOLD_CYCLE)  # no retry against a fault
    assert not await _pending(service, TimerKind.CYCLE_WATCHDOG)  # and no "overdue" later
    assert not await _pending(service, TimerKind.REMINDER)  # never "come and collect it" now

    fault_message = (await _outbox(service, order["id"]))["fault"]
    assert "staff will contact you" in fault_message.body
    page_en = await _page(app_client, order, "en")
    assert "A fault occurred in your compartment. Staff will contact you." in page_en
    assert "kept hot" not in page_en and "min left" not in page_en
    page_zh = await _page(app_client, order, "zh-Hans")
    assert "您的柜格出现故障，工作人员会与您联系。" in page_zh and "保温" not in page_zh
    status = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert status["fault"] is True  # the open page reloads on it

    notices = await _merchant_notices(app_client, world, order)
    assert [x["kind"] for x in notices] == ["compartment_fault"]
    assert "F-1" in notices[0]["message"] and "heating_watchdog" in notices[0]["message"]

    # The fault reported again (a snapshot) tells nobody twice.
    await event(service, world, "fault_raised", n, fault="heating_watchdog")
    assert len(await _merchant_notices(app_client, world, order)) == 1


@pytest.mark.parametrize(
    "fault, then",
    [
        ("heating_watchdog", "staff"),
        ("heating_watchdog", "hold_ends"),
        ("heating_watchdog", "cleared_then_hold_ends"),
        ("heating_watchdog", "told_before_ready_then_hold_ends"),
        ("uv_timeout", "hold_ends"),
        ("uv_timeout", "staff"),
        ("lock_jammed", "staff"),
    ],
)
async def test_a_ready_order_after_a_fault_ends_as_what_happened(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fault: str, then: str
) -> None:
    """Her food is ready when its compartment faults; she is told staff will contact her, staff
    to take it out, the merchant that they will. Staff taking it out while its heater is
    faulted: the order failed, saying why (the merchant never hears `order.picked_up` of food
    thrown away). Her hold running out, the fault cleared since or not: it expired saying the
    fault, not that she did not collect it, and nothing new is sent her; staff have the task to
    take the food out. Her page keeps saying what she was told. Staff opening after a lamp
    fault (the food disinfected and hot) or a jammed lock: her pickup, as before."""
    order, n = await make_ready(app_client, world, service, ref=f"F-{fault}-{then}")
    await event(service, world, "fault_raised", n, fault=fault)
    if then != "staff" and then != "hold_ends":
        await event(service, world, "fault_cleared", n)
    if then == "told_before_ready_then_hold_ends":
        await fault_told_before_ready(service, order)
        await due_now(service, TimerKind.HOLD_EXPIRY)
        await TimerLoop(service).run_due()
        read = await _merchant_read(app_client, world, order)
        assert read["failure_reason"] == "not collected within the hold limit"
        assert "expired" in await _outbox(service, order["id"])  # told as any expiry
        return
    if then != "staff":
        await due_now(service, TimerKind.HOLD_EXPIRY)
        await TimerLoop(service).run_due()
        read = await _merchant_read(app_client, world, order)
        assert read["state"] == "expired", read
        assert read["failure_reason"] == (
            f"not collected by the end of its hold, after its compartment reported {fault} "
            "(she was told staff would contact her)"
        )
        assert "expired" not in await _outbox(service, order["id"])  # not "you did not come"
        kinds = [x["kind"] for x in read["notices"]]
        assert kinds == ["compartment_fault", "expired_after_fault"]
        task = (await _alerts(service))["expired_food"]
        assert task.state == "open" and "Remove the food" in task.message
        assert "Staff will contact you." in await _page(app_client, order, "en")
        assert "工作人员会与您联系" in await _page(app_client, order, "zh-Hans")
        return
    c = await compartment(service, world, n)
    opened = await app_client.post(
        f"/api/v1/operator/compartments/{c.id}/open",
        json={"reason": "as the alert says"},
        headers=world.operator(),
    )
    assert opened.status_code == 200, opened.text
    for kind in ("door_opened", "item_removed", "door_closed"):
        await event(service, world, kind, n)
    read = await _merchant_read(app_client, world, order)
    if fault != "heating_watchdog":
        assert read["state"] == "picked_up"
        return
    assert read["state"] == "failed", read
    assert read["failure_reason"] == (
        "taken out by staff, after its compartment reported heating_watchdog (she was told "
        "staff would contact her)"
    )
    async with service.sessionmaker() as session:
        actions = (
            await session.scalars(
                select(OrderEvent.action).where(OrderEvent.order_id == uuid.UUID(order["id"]))
            )
        ).all()
    assert "fail" in actions and "pick_up" not in actions
    assert not await _pending(service, TimerKind.HOLD_EXPIRY)  # nothing left to expire
    await event(service, world, "fault_cleared", n)  # repaired: her page still tells the truth
    assert "Staff will contact you." in await _page(app_client, order, "en")


async def _merchant_read(
    client: httpx.AsyncClient, world: World, order: dict[str, Any]
) -> dict[str, Any]:
    read = await client.get(f"/api/v1/orders/{order['id']}", headers=world.merchant())
    assert read.status_code == 200, read.text
    answer: dict[str, Any] = read.json()
    return answer


async def test_a_heater_failing_while_the_courier_holds_the_door_is_a_fault_with_food(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """The heater fails between the courier's door opening and his shutting the food in: once
    the food is inside, everyone is told as for any fault with food inside (ADR 0047), not
    left to a cycle that only fails to start."""
    order, n = await _reserved(app_client, world, service, "F-R")
    await event(service, world, "door_opened", n)
    await event(service, world, "fault_raised", n, fault="heating_watchdog")
    assert "with food inside" not in (await _alerts(service))["compartment_fault"].message
    for kind in ("item_placed", "door_closed"):
        await event(service, world, kind, n)
    alert = (await _alerts(service))["compartment_fault"]
    assert alert.state == "open" and "heating_watchdog with food inside" in alert.message
    notices = await _merchant_notices(app_client, world, order)
    assert [x["kind"] for x in notices] == ["compartment_fault"]
    assert "staff will contact you" in (await _outbox(service, order["id"]))["fault"].body
    assert "A fault occurred in your compartment." in await _page(app_client, order, "en")


async def test_a_cycle_start_on_a_faulted_compartment_is_decided_once(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await _deposit(app_client, world, service, "F-2")
    await event(service, world, "fault_raised", n, fault="sensor_open")
    sent_before = len(fake_kiosk.commands)  # the unlock, and the preheat at the drop-off
    await TimerLoop(service).run_due()

    assert fake_kiosk.commands[sent_before:] == []  # the board would refuse them
    alerts = await _alerts(service)
    assert (
        "cycle_not_started" in alerts and "not tried again" in alerts["cycle_not_started"].message
    )
    assert "timer_failed" not in alerts
    assert not await _pending(service, TimerKind.START_HOLD_CYCLE)
    async with service.sessionmaker() as session:
        stored = await session.get(Order, uuid.UUID(order["id"]))
    assert stored is not None and stored.state == "deposited"  # never shown disinfecting
    assert "A fault occurred" in await _page(app_client, order, "en")


async def test_a_board_refusing_the_setpoint_for_a_fault_is_not_asked_fifty_times(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    _, n = await _deposit(app_client, world, service, "F-3")
    # The fault's own report is not in yet: the refusal itself says the board is faulted.
    fake_kiosk.answers["set_heater"] = ["failed:faulted"]
    await TimerLoop(service).run_due()

    assert fake_kiosk.actions(n).count("set_heater") == 2  # the preheat, then the hold
    assert "start_disinfection" not in fake_kiosk.actions(n)
    assert "cycle_not_started" in await _alerts(service)
    assert not await _pending(service, TimerKind.START_HOLD_CYCLE)
    assert not await _pending(service, TimerKind.CYCLE_WATCHDOG)


async def test_an_order_never_dropped_off_expires_telling_purchaser_and_merchant(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world, ref="E-1")
    await due_now(service, TimerKind.ORDER_EXPIRY)  # the system's own clock, brought forward
    await TimerLoop(service).run_due()

    message = (await _outbox(service, order["id"]))["never_dropped_off"]
    assert "never dropped off" in message.body and "contact the merchant" in message.body
    notices = await _merchant_notices(app_client, world, order)
    assert [x["kind"] for x in notices] == ["expired_never_dropped_off"]
    page = await _page(app_client, order, "en")
    assert "it was never dropped off" in page and "not collected" not in page
    assert "expired_food" not in await _alerts(service)  # no compartment to empty


async def test_an_order_whose_drop_off_ends_empty_after_its_expiry_still_expires(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Its expiry comes while a courier has its compartment open; he shuts it empty, and the
    order waits for a courier again, past its expiry: it is still expired once the drop-off is
    over, and the purchaser and merchant told, not left waiting for ever."""
    order, n = await _reserved(app_client, world, service, "E-1b")
    await due_now(service, TimerKind.ORDER_EXPIRY)
    await TimerLoop(service).run_due()  # mid drop-off: nothing ends, it is looked at later
    [again] = await _pending(service, TimerKind.ORDER_EXPIRY)
    assert again.due_at > utcnow()
    for kind in ("door_opened", "door_closed"):  # nothing put in
        await event(service, world, kind, n)
    async with service.sessionmaker() as session:
        waiting = await session.get(Order, uuid.UUID(order["id"]))
        assert waiting is not None and waiting.state == "created"
    await due_now(service, TimerKind.ORDER_EXPIRY)  # the drop-off's timeout, brought forward
    await TimerLoop(service).run_due()
    async with service.sessionmaker() as session:
        ended = await session.get(Order, uuid.UUID(order["id"]))
        assert ended is not None and ended.state == "expired"
    assert "never_dropped_off" in await _outbox(service, order["id"])
    notices = await _merchant_notices(app_client, world, order)
    assert [x["kind"] for x in notices] == ["expired_never_dropped_off"]
    read = (await app_client.get(f"/api/v1/orders/{order['id']}", headers=world.merchant())).json()
    assert read["closed_at"] is not None and read["failure_reason"] == "never dropped off"


async def test_an_uncollected_order_expires_without_saying_it_was_removed(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await make_ready(app_client, world, service, ref="E-2")
    await due_now(service, TimerKind.HOLD_EXPIRY)
    await TimerLoop(service).run_due()

    message = (await _outbox(service, order["id"]))["expired"]
    assert "removed" not in message.body
    assert "will be discarded" in message.body and "contact the merchant" in message.body
    page = await _page(app_client, order, "en")
    assert "will be discarded" in page and "removed" not in page
    assert "餐品将被丢弃" in await _page(app_client, order, "zh-Hans")
    notices = await _merchant_notices(app_client, world, order)
    assert [x["kind"] for x in notices] == ["expired_uncollected"]
    task = (await _alerts(service))["expired_food"]  # the operator's task to empty it
    assert task.state == "open" and f"compartment {n}" in task.message
    assert "remove the food" in task.message


async def test_food_taken_out_during_the_hold_tells_purchaser_merchant_and_operator(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await _deposit(app_client, world, service, "R-1")
    await TimerLoop(service).run_due()
    await event(service, world, "door_opened", n)  # forced: no command behind it
    await event(service, world, "item_removed", n)
    await event(service, world, "door_closed", n)

    message = (await _outbox(service, order["id"]))["removed_early"]
    assert "before it was ready" in message.body and "contact the merchant" in message.body
    assert [x["kind"] for x in await _merchant_notices(app_client, world, order)] == [
        "removed_early"
    ]
    assert "removed_during_hold" in await _alerts(service)
    assert "could not be completed" in await _page(app_client, order, "en")


async def test_the_purchaser_page_names_the_fault_the_board_reported(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """A jammed lock during the hold keeps the food hot: her page still says so (the lock only
    matters once she comes), where a heater fault would say a fault occurred."""
    order, n = await _deposit(app_client, world, service, "F-lock")
    await TimerLoop(service).run_due()
    await event(service, world, "disinfection_started", n)
    await event(service, world, "fault_raised", n, fault="lock_jammed")

    status = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert (status["fault"], status["fault_code"]) == (True, "lock_jammed")
    page_en = await _page(app_client, order, "en")
    assert "kept hot" in page_en and "A fault occurred" not in page_en


async def test_a_door_left_open_after_her_pickup_is_shut_by_staff_then_cleaned(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service, ref="D-1")
    page = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    answer = await app_client.post(
        "/api/v1/kiosk/pickup", json={"code": page["fallback_code"]}, headers=world.kiosk()
    )
    assert answer.status_code == 200, answer.text
    await event(service, world, "door_opened", n)
    await event(service, world, "item_removed", n)  # she takes her food and walks away
    [check] = await _pending(service, TimerKind.DOOR_LEFT_OPEN)
    assert check.due_at > utcnow() + timedelta(seconds=50)  # a minute: nobody bothered before

    await due_now(service, TimerKind.DOOR_LEFT_OPEN)
    timers = TimerLoop(service)
    await timers.run_due()
    alert = (await _alerts(service))["door_left_open"]
    assert alert.state == "open" and f"compartment {n}" in alert.message
    assert "after a pickup: the compartment is cleaned once it is shut" in alert.message
    assert "start_disinfection" not in fake_kiosk.actions(n)[-1:]  # no cycle with the door open

    await event(service, world, "door_closed", n, occupied=False)  # staff shut it
    assert (await _alerts(service))["door_left_open"].state == "resolved"
    assert await _order_state(service, order) == "picked_up"
    assert "collected" in (await _page(app_client, order, "en")).lower()
    await timers.run_due()
    assert fake_kiosk.actions(n)[-1] == "start_disinfection"  # the cleaning runs now


async def test_a_door_opened_again_after_the_drop_off_holds_the_cycle_and_tells_staff(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await _deposit(app_client, world, service, "D-2")
    await event(service, world, "door_opened", n)  # the courier comes back for a second bag
    await due_now(service, TimerKind.DOOR_LEFT_OPEN)
    await TimerLoop(service).run_due()
    alert = (await _alerts(service))["door_left_open"]
    assert "with food inside: its cycle waits until it is shut" in alert.message
    assert "start_disinfection" not in fake_kiosk.actions(n)
    # Nobody tells her of a disinfection that does not run: her food is in the locker.
    assert await _order_state(service, order) == "deposited"
    assert "Your food is in the locker" in await _page(app_client, order, "en")
    # Its door_closed is lost; the board's snapshot shows the door shut: resolved all the same.
    await StoryHandler(service).on_snapshot(world.kiosk_code, board_snapshot(n, occupied=True))
    assert (await _alerts(service))["door_left_open"].state == "resolved"


async def test_a_door_shut_within_the_minute_raises_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    _, n = await _deposit(app_client, world, service, "D-3")
    await event(service, world, "door_opened", n)
    await event(service, world, "door_closed", n, occupied=True)
    assert await _pending(service, TimerKind.DOOR_LEFT_OPEN) == []
    assert "door_left_open" not in await _alerts(service)


async def test_a_kiosk_offline_with_food_inside_tells_staff_and_her_page_the_truth(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, _ = await make_ready(app_client, world, service, ref="O-1")
    handler = StoryHandler(service)
    await handler.on_status(world.kiosk_code, contract.KioskStatus(state="offline"))

    alert = (await _alerts(service))["kiosk_offline"]
    assert alert.state == "open" and alert.severity == "critical"
    assert "with food in 1 compartment" in alert.message
    assert "can still open with their QR codes if its PC is running" in alert.message
    shown = await _page(app_client, order, "en")
    assert "offline for the moment; your food is still inside" in shown
    assert "scanning your QR code at the locker can still open" in shown  # ADR 0077
    assert "取餐柜暂时离线" in await _page(app_client, order, "zh-Hans")
    # Where offline pickups are switched off, her page does not promise one.
    object.__setattr__(service.settings, "offline_supply_refresh_s", 0.0)
    closed = await _page(app_client, order, "en")
    assert "once the locker is back online" in closed and "QR" not in closed
    object.__setattr__(service.settings, "offline_supply_refresh_s", 30.0)
    assert await _merchant_notices(app_client, world, order) == []  # most outages are short

    await handler.on_status(
        world.kiosk_code, contract.KioskStatus(state="online", board_online=True)
    )
    assert (await _alerts(service))["kiosk_offline"].state == "resolved"
    assert "offline" not in await _page(app_client, order, "en")


async def _order_state(ctx: ServiceContext, order: dict[str, Any]) -> str:
    async with ctx.sessionmaker() as session:
        row = await session.get(Order, uuid.UUID(order["id"]))
        assert row is not None
        return str(row.state)


async def test_a_fault_cleared_with_her_food_inside_leaves_staff_the_task_until_it_leaves(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """She was told staff would contact her; the board clearing the fault does not do that.
    The operator's task stays open, saying what is left to decide, until the food leaves."""
    order, n = await make_ready(app_client, world, service, ref="F-cleared-task")
    await event(service, world, "fault_raised", n, fault="heating_watchdog")
    await event(service, world, "fault_cleared", n)
    task = (await _alerts(service))["compartment_fault"]
    assert task.state == "open", task.message
    assert "cleared with order F-cleared-task's food inside" in task.message
    assert "hand the food over or to discard it" in task.message
    c = await compartment(service, world, n)
    opened = await app_client.post(
        f"/api/v1/operator/compartments/{c.id}/open",
        json={"reason": "called her, she is here", "purpose": "handover"},
        headers=world.operator(),
    )
    assert opened.status_code == 200, opened.text
    for kind in ("door_opened", "item_removed", "door_closed"):
        await event(service, world, kind, n)
    assert (await _merchant_read(app_client, world, order))["state"] == "picked_up"
    assert (await _alerts(service))["compartment_fault"].state == "resolved"
