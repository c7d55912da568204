"""An operator's remote opening says what it is for (ADR 0120), and the door's closing on an
empty compartment ends the order as she said: handed to the purchaser, or discarded. A purpose
that does not fit the compartment's food is refused before anything is written or sent."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.models import (
    Alert,
    Compartment,
    DoorOpening,
    NotificationOutbox,
    Order,
    OrderEvent,
    Timer,
    utcnow,
)
from locker_service.orders import codes
from locker_service.timer_loop.loop import TimerLoop
from locker_service.timers.service import TimerKind
from tests.locker_service.world import (
    FakeKiosk,
    World,
    compartment,
    dropped_off,
    due_now,
    event,
    make_ready,
    merchant_heard,
    merchant_listens,
    token_of,
)


async def _open(
    client: httpx.AsyncClient,
    world: World,
    c: Compartment,
    purpose: str,
    **more: Any,
) -> httpx.Response:
    return await client.post(
        f"/api/v1/operator/compartments/{c.id}/open",
        json={"reason": "the operator's words", "purpose": purpose, **more},
        headers=world.operator(),
    )


async def _taken_out(service: ServiceContext, world: World, n: int) -> None:
    for kind in ("door_opened", "item_removed", "door_closed"):
        await event(service, world, kind, n)


async def _read(client: httpx.AsyncClient, world: World, order: dict[str, Any]) -> dict[str, Any]:
    read = await client.get(f"/api/v1/orders/{order['id']}", headers=world.merchant())
    assert read.status_code == 200, read.text
    answer: dict[str, Any] = read.json()
    return answer


async def _messages(service: ServiceContext, order: dict[str, Any]) -> set[str]:
    async with service.sessionmaker() as session:
        kinds = await session.scalars(
            select(NotificationOutbox.kind).where(
                NotificationOutbox.order_id == uuid.UUID(order["id"])
            )
        )
        return set(kinds)


async def _openings(service: ServiceContext) -> int:
    async with service.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(DoorOpening)) or 0)


async def _page(client: httpx.AsyncClient, order: dict[str, Any], lang: str) -> str:
    page = await client.get(f"/p/{token_of(order)}?lang={lang}")
    assert page.status_code == 200
    return page.text


async def _refused(
    client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    c: Compartment,
    purpose: str,
    code: str,
) -> None:
    """Refused with its code and words, and nothing written or sent."""
    before, sent = await _openings(service), len(fake_kiosk.commands)
    answer = await _open(client, world, c, purpose)
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == code and answer.json()["message"]
    assert await _openings(service) == before and len(fake_kiosk.commands) == sent


async def test_food_handed_to_her_by_staff_is_her_pickup(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """As the operator said, even when the heater faults while the door is open: without a
    purpose, staff emptying it then would be read as food taken out, not kept hot."""
    order, n = await make_ready(app_client, world, service, ref="P-hand")
    c = await compartment(service, world, n)
    assert (await _open(app_client, world, c, "handover")).status_code == 200
    await event(service, world, "door_opened", n)
    await event(service, world, "fault_raised", n, fault="heating_watchdog")
    for kind in ("item_removed", "door_closed"):
        await event(service, world, kind, n)
    read = await _read(app_client, world, order)
    assert read["state"] == "picked_up", read
    async with service.sessionmaker() as session:
        opening = await session.scalar(
            select(DoorOpening)
            .where(DoorOpening.compartment_id == c.id)
            .order_by(DoorOpening.id.desc())
            .limit(1)
        )
    assert opening is not None and opening.purpose == "handover"


async def test_ready_food_discarded_by_staff_fails_the_order_and_tells_each_person(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Not her pickup (the merchant never hears `order.picked_up` of food thrown away): the
    order fails saying staff discarded it, she is told it cannot be collected and her page
    says so in both languages, the merchant reads the notice, and no alert is raised for the
    operator's own act; the compartment is cleaned after."""
    order, n = await make_ready(app_client, world, service, ref="P-discard")
    c = await compartment(service, world, n)
    assert (await _open(app_client, world, c, "discard")).status_code == 200
    await _taken_out(service, world, n)
    read = await _read(app_client, world, order)
    assert read["state"] == "failed" and read["failure_reason"] == "discarded by staff", read
    assert [x["kind"] for x in read["notices"]] == ["discarded_by_staff"]
    assert "discarded" in await _messages(service, order)
    assert "Staff took your order out of the locker and discarded it" in await _page(
        app_client, order, "en"
    )
    assert "工作人员已将您的订单从取餐柜取出并丢弃" in await _page(app_client, order, "zh-Hans")
    async with service.sessionmaker() as session:
        assert not (await session.scalars(select(Alert))).all()
        cleaned = await session.get(Compartment, c.id)
        pending = await session.scalars(
            select(Timer.kind).where(
                Timer.order_id == uuid.UUID(order["id"]), Timer.state == "pending"
            )
        )
        assert not pending.all()  # no reminder, no hold expiry left
    assert cleaned is not None and cleaned.state == "cleaning"


async def test_food_not_kept_hot_is_never_handed_over_and_its_discard_tells_her_nothing_new(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """With a heater fault latched the food was not kept hot: a handover is refused before
    anything is sent. Discarded, the order fails saying the fault, and she is sent nothing
    new: she was told staff would contact her, and her page keeps saying it."""
    order, n = await make_ready(app_client, world, service, ref="P-heater")
    await event(service, world, "fault_raised", n, fault="heating_watchdog")
    c = await compartment(service, world, n)
    await _refused(app_client, world, service, fake_kiosk, c, "handover", "not_kept_hot")
    assert (await _open(app_client, world, c, "discard", override_cycle=True)).status_code == 200
    await _taken_out(service, world, n)
    read = await _read(app_client, world, order)
    assert read["state"] == "failed", read
    assert read["failure_reason"] == (
        "discarded by staff, after its compartment reported heating_watchdog (she was told "
        "staff would contact her)"
    )
    assert await _messages(service, order) == {"ready", "fault"}
    assert "Staff will contact you." in await _page(app_client, order, "en")


async def test_after_a_lamp_fault_the_hot_food_may_still_be_handed_to_her(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await make_ready(app_client, world, service, ref="P-lamp")
    await event(service, world, "fault_raised", n, fault="uv_timeout")
    c = await compartment(service, world, n)
    assert (await _open(app_client, world, c, "handover", override_cycle=True)).status_code == 200
    await _taken_out(service, world, n)
    assert (await _read(app_client, world, order))["state"] == "picked_up"


async def test_food_not_ready_yet_is_not_handed_over_and_its_discard_is_no_early_removal(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """Food shut in and not ready: no handover; discarded, the order fails as discarded before
    it was ready, not as food someone took out early (no `removed_during_hold` alert)."""
    order, n = await dropped_off(app_client, world, service, ref="P-early")
    c = await compartment(service, world, n)
    await _refused(app_client, world, service, fake_kiosk, c, "handover", "not_ready")
    assert (await _open(app_client, world, c, "discard", override_cycle=True)).status_code == 200
    await _taken_out(service, world, n)
    read = await _read(app_client, world, order)
    assert read["state"] == "failed", read
    assert read["failure_reason"] == "discarded by staff before it was ready"
    assert [x["kind"] for x in read["notices"]] == ["discarded_by_staff"]
    assert await _messages(service, order) == {"discarded"}
    async with service.sessionmaker() as session:
        assert not (await session.scalars(select(Alert.kind))).all()


async def test_an_expired_order_s_food_is_discarded_never_handed_over(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service, ref="P-expired")
    await due_now(service, TimerKind.HOLD_EXPIRY)
    await TimerLoop(service).run_due()
    c = await compartment(service, world, n)
    await _refused(app_client, world, service, fake_kiosk, c, "handover", "hold_over")
    assert (await _open(app_client, world, c, "discard")).status_code == 200
    await _taken_out(service, world, n)
    read = await _read(app_client, world, order)
    assert read["state"] == "expired", read  # as it was: a pickup found later still corrects it
    async with service.sessionmaker() as session:
        removed = await session.scalar(
            select(OrderEvent).where(
                OrderEvent.order_id == uuid.UUID(order["id"]), OrderEvent.action == "removed"
            )
        )
    assert removed is not None and removed.detail["purpose"] == "discard"


async def test_an_empty_compartment_is_opened_to_look_in_not_to_discard(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    c = await compartment(service, world, 1)
    await _refused(app_client, world, service, fake_kiosk, c, "discard", "nothing_to_discard")
    await _refused(app_client, world, service, fake_kiosk, c, "handover", "nothing_to_hand_over")
    assert (await _open(app_client, world, c, "inspect")).status_code == 200
    assert fake_kiosk.unlocks()[-1] == 1
    bad = await _open(app_client, world, c, "borrow")
    assert bad.status_code == 422, bad.text


async def test_a_look_in_leaves_her_food_and_her_order_as_they_were(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Shut with the food in: nothing changes, nobody is told anything."""
    order, n = await make_ready(app_client, world, service, ref="P-look")
    c = await compartment(service, world, n)
    assert (await _open(app_client, world, c, "inspect")).status_code == 200
    for kind in ("door_opened", "door_closed"):
        await event(service, world, kind, n)
    read = await _read(app_client, world, order)
    assert read["state"] == "ready" and read["notices"] == [], read
    assert await _messages(service, order) == {"ready"}
    async with service.sessionmaker() as session:
        assert not (await session.scalars(select(Alert.kind))).all()


async def test_food_taken_out_during_a_look_in_is_not_her_pickup_and_each_person_is_told(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """A look in was to leave the food in; the door shut on it empty, her code unused. Nobody
    said it was handed to her, so the merchant never hears `order.picked_up` (ADR 0129): the
    order fails saying what happened, she is told it cannot be collected from the locker and
    her page says so in both languages, the merchant reads the notice, and the operator's
    alert asks where the food went. The compartment is cleaned after."""
    await merchant_listens(app_client, world)
    order, n = await make_ready(app_client, world, service, ref="P-look-out")
    c = await compartment(service, world, n)
    assert (await _open(app_client, world, c, "inspect")).status_code == 200
    await _taken_out(service, world, n)
    read = await _read(app_client, world, order)
    reason = "taken out by staff during an inspection that was to leave it in"
    assert read["state"] == "failed" and read["failure_reason"] == reason, read
    assert [x["kind"] for x in read["notices"]] == ["taken_out_on_inspection"]
    assert await _messages(service, order) == {"ready", "taken_out"}
    assert "Staff took your order out of the locker: it cannot be collected there" in (
        await _page(app_client, order, "en")
    )
    assert "工作人员已将您的订单从取餐柜取出，无法在柜中取餐" in await _page(
        app_client, order, "zh-Hans"
    )
    status = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert status["taken_out"] and not status["discarded"], status
    async with service.sessionmaker() as session:
        alerts = (await session.scalars(select(Alert))).all()
        cleaned = await session.get(Compartment, c.id)
    assert [(a.kind, a.severity) for a in alerts] == [("taken_out_on_inspection", "warning")]
    assert "P-look-out" in alerts[0].message and reason in alerts[0].message
    assert cleaned is not None and cleaned.state == "cleaning"
    heard = [e["type"] for e in await merchant_heard(service, uuid.UUID(order["id"]))]
    assert "order.failed" in heard and "order.picked_up" not in heard, heard


async def test_a_look_in_that_frees_her_jammed_lock_is_her_pickup(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """Her lock did not open for her code: she was told staff would open it, and waits at the
    locker. Staff who open it to look in (to mend the lock) free her door: the food leaving is
    her pickup, the jam latched still or cleared by then. A jam of staff's own opening, her
    code never tried, is not hers: that food taken out during a look in is not her pickup."""
    await merchant_listens(app_client, world)
    ended = {}
    for ref in ("P-jam", "P-jam-cleared", "P-jam-staff"):
        order, n = await make_ready(app_client, world, service, ref=ref, size="S")
        if ref != "P-jam-staff":  # her code accepted, and the latch did not release
            fake_kiosk.answers["unlock"] = ["timed_out"]
            code = codes.fallback_code(service.settings.secret_key, token_of(order))
            tried = await app_client.post(
                "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
            )
            assert tried.status_code == 503 and tried.json()["error"] == "unlock_failed"
        await event(service, world, "fault_raised", n, fault="lock_jammed")
        if ref == "P-jam-cleared":
            await event(service, world, "fault_cleared", n)
        c = await compartment(service, world, n)
        assert (await _open(app_client, world, c, "inspect")).status_code == 200
        await _taken_out(service, world, n)
        ended[ref] = (await _read(app_client, world, order))["state"]
        heard = [e["type"] for e in await merchant_heard(service, uuid.UUID(order["id"]))]
        assert ("order.picked_up" in heard) is (ended[ref] == "picked_up"), (ref, heard)
    assert ended == {"P-jam": "picked_up", "P-jam-cleared": "picked_up", "P-jam-staff": "failed"}


async def test_food_taken_out_during_a_look_in_after_a_fault_she_was_told_of_sends_nothing_new(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Told staff would contact her (a lamp fault, cleared since: ADR 0128): the order fails
    saying so, and she is sent nothing new; her page keeps saying staff will contact her."""
    order, n = await make_ready(app_client, world, service, ref="P-look-fault")
    await event(service, world, "fault_raised", n, fault="uv_timeout")
    await event(service, world, "fault_cleared", n)
    c = await compartment(service, world, n)
    assert (await _open(app_client, world, c, "inspect")).status_code == 200
    await _taken_out(service, world, n)
    read = await _read(app_client, world, order)
    assert read["state"] == "failed", read
    assert read["failure_reason"] == (
        "taken out by staff during an inspection that was to leave it in, after its "
        "compartment reported uv_timeout (she was told staff would contact her)"
    )
    assert await _messages(service, order) == {"ready", "fault"}
    assert "Staff will contact you." in await _page(app_client, order, "en")
    assert [x["kind"] for x in read["notices"]] == [
        "compartment_fault",
        "taken_out_on_inspection",
    ]
    async with service.sessionmaker() as session:
        kinds = (await session.scalars(select(Alert.kind))).all()
    assert "taken_out_on_inspection" in kinds


@pytest.mark.parametrize(
    ("purpose", "untold"), [("discard", "discarded"), ("inspect", "taken_out")]
)
async def test_her_code_used_while_staff_had_it_open_is_her_pickup(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, purpose: str, untold: str
) -> None:
    """The operator opened it to discard or to look in, then she came with her code while the
    door was open, and took her food: her pickup, and nobody told otherwise."""
    order, n = await make_ready(app_client, world, service, ref=f"P-her-code-{purpose}")
    c = await compartment(service, world, n)
    assert (await _open(app_client, world, c, purpose)).status_code == 200
    await event(service, world, "door_opened", n)
    code = codes.fallback_code(service.settings.secret_key, token_of(order))
    picked = await app_client.post(
        "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
    )
    assert picked.status_code == 200, picked.text
    for kind in ("item_removed", "door_closed"):
        await event(service, world, kind, n)
    read = await _read(app_client, world, order)
    assert read["state"] == "picked_up", read
    assert untold not in await _messages(service, order)


async def test_no_handover_once_her_hold_is_over_even_before_its_expiry_runs(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service, ref="P-late")
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(order["id"]))
            .values(hold_until=utcnow() - timedelta(seconds=1))
        )
    c = await compartment(service, world, n)
    await _refused(app_client, world, service, fake_kiosk, c, "handover", "hold_over")
