"""A kill switch refuses every code at its site (ADR 0039): her hold does not run out meanwhile
(ADR 0123). Its end waits for the release, which gives back the time her code was refused,
never past her food's safety deadline, and tells her until when, in her language, and the
merchant (`order.hold_extended`); no reminder sends her to a door that stays shut."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.models import (
    NotificationOutbox,
    Order,
    Site,
    Timer,
    utcnow,
)
from locker_service.timer_loop.loop import TimerLoop
from locker_service.timers.service import TimerKind
from tests.locker_service.world import (
    World,
    due_now,
    event,
    make_ready,
    merchant_heard,
    merchant_listens,
    published,
)


async def _switch(client: httpx.AsyncClient, world: World, engaged: bool) -> None:
    answer = await client.post(
        f"/api/v1/operator/sites/{world.site_id}/kill-switch",
        json={"engaged": engaged, "reason": "suspected mass-open attempt"},
        headers=world.operator(),
    )
    assert answer.status_code == 200, answer.text


async def _order(service: ServiceContext, made: dict[str, Any]) -> Order:
    async with service.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(made["id"]))
    assert order is not None
    return order


async def _hold_ends_now(service: ServiceContext, order_id: str, **values: Any) -> None:
    """Her hold's end is here (and the order's times as given), as if she had waited it out."""
    now = utcnow()
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order).where(Order.id == uuid.UUID(order_id)).values(hold_until=now, **values)
        )
        await session.execute(
            update(Timer)
            .where(Timer.kind == TimerKind.HOLD_EXPIRY, Timer.state == "pending")
            .values(due_at=now - timedelta(seconds=1))
        )


async def test_a_hold_waits_out_the_kill_switch_and_gets_its_time_back(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await merchant_listens(app_client, world)
    made, _ = await make_ready(app_client, world, service, ref="K-1", purchaser_language="zh-Hans")
    await _switch(app_client, world, True)
    frozen_for = timedelta(hours=1)
    async with session_scope(service.sessionmaker) as session:  # an hour ago, she was ready
        await session.execute(
            update(Site)
            .where(Site.id == world.site_id)
            .values(kill_switch_at=utcnow() - frozen_for)
        )
    await _switch(app_client, world, True)  # engaged again (a new reason): held since the first
    await _hold_ends_now(
        service,
        made["id"],
        ready_at=utcnow() - 2 * frozen_for,
        food_deadline=utcnow() + 4 * frozen_for,
    )
    await TimerLoop(service).run_due()
    waited = await _order(service, made)
    assert waited.state == "ready"  # not "not collected": her code was refused
    async with service.sessionmaker() as session:
        pending = (
            await session.scalars(
                select(Timer.due_at).where(
                    Timer.kind == TimerKind.HOLD_EXPIRY, Timer.state == "pending"
                )
            )
        ).all()
    assert len(pending) == 1 and pending[0] > utcnow()  # it looks again later

    with service.hub.subscription() as live:
        await _switch(app_client, world, False)
        streamed = await published(service.hub, live)
    # The operators' live stream hears the order whose hold moved (the dashboard reads it again).
    assert ("order", made["id"]) in [(m.kind, m.data.get("id")) for m in streamed]
    released = await _order(service, made)
    assert released.hold_until is not None and waited.hold_until is not None
    given = released.hold_until - waited.hold_until
    assert frozen_for <= given <= frozen_for + timedelta(minutes=1)  # the time it was refused
    window = service.settings.scaled(service.settings.food_min_pickup_window_s)
    assert released.hold_until >= utcnow() + timedelta(seconds=window - 5)  # time to come
    async with service.sessionmaker() as session:
        told = await session.scalar(
            select(NotificationOutbox).where(NotificationOutbox.kind == "resumed")
        )
        due = (
            await session.scalars(
                select(Timer.due_at).where(
                    Timer.kind == TimerKind.HOLD_EXPIRY, Timer.state == "pending"
                )
            )
        ).all()
    assert told is not None and told.subject == "您的订单 K-1 可以再次取餐"
    assert told.attachment == "qr"
    assert due == [released.hold_until]  # her hold now ends at the time given back
    heard = await merchant_heard(service, released.id)
    extended = [e for e in heard if e["type"] == "order.hold_extended"]
    assert len(extended) == 1, [e["type"] for e in heard]
    assert extended[0]["data"]["state"] == "ready"
    assert extended[0]["data"]["hold_until"] == released.hold_until.isoformat()


async def _told(service: ServiceContext, order_id: str) -> tuple[list[str], list[str]]:
    """The messages queued for her (kinds), and the merchant's events (types)."""
    async with service.sessionmaker() as session:
        kinds = (
            await session.scalars(
                select(NotificationOutbox.kind)
                .where(NotificationOutbox.order_id == uuid.UUID(order_id))
                .order_by(NotificationOutbox.id)
            )
        ).all()
    heard = [e["type"] for e in await merchant_heard(service, uuid.UUID(order_id))]
    return list(kinds), heard


async def _reminder_timer(service: ServiceContext, order_id: str) -> Timer:
    async with service.sessionmaker() as session:
        timer = await session.scalar(
            select(Timer).where(
                Timer.order_id == uuid.UUID(order_id), Timer.kind == TimerKind.REMINDER
            )
        )
    assert timer is not None
    return timer


async def test_no_reminder_sends_her_to_a_door_the_kill_switch_keeps_shut(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Her reminder falls due while codes are refused: no "still waiting, collect it by", which
    would send her to a shut door by a time the release moves; it waits for the release, whose
    `resumed` tells her that her code works and until when, so no reminder follows it."""
    await merchant_listens(app_client, world)
    made, _ = await make_ready(app_client, world, service, ref="K-4")
    waited = timedelta(seconds=service.settings.scaled(service.settings.reminder_after_s) + 60)
    async with session_scope(service.sessionmaker) as session:  # ready long enough ago
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(made["id"]))
            .values(ready_at=utcnow() - waited)
        )
    await _switch(app_client, world, True)
    await due_now(service, TimerKind.REMINDER, made["id"])
    await TimerLoop(service).run_due()
    kinds, heard = await _told(service, made["id"])
    assert "reminder" not in kinds and "order.reminder_sent" not in heard
    waiting = await _reminder_timer(service, made["id"])
    assert waiting.state == "pending" and waiting.due_at > utcnow()  # it looks again later

    await _switch(app_client, world, False)
    await due_now(service, TimerKind.REMINDER, made["id"])
    await TimerLoop(service).run_due()
    kinds, heard = await _told(service, made["id"])
    assert "resumed" in kinds  # told when her code works again, and until when
    assert "reminder" not in kinds and "order.reminder_sent" not in heard  # not twice
    assert (await _reminder_timer(service, made["id"])).state == "done"


async def test_a_reminder_due_in_a_second_freeze_is_sent_after_its_release(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """`resumed` goes once an order: after a first freeze, released before her reminder fell
    due, the reminder that falls due in a second freeze is sent once that one is released."""
    await merchant_listens(app_client, world)
    made, _ = await make_ready(app_client, world, service, ref="K-5")
    await _switch(app_client, world, True)
    await _switch(app_client, world, False)  # told she can collect it: before her reminder
    await _switch(app_client, world, True)
    await due_now(service, TimerKind.REMINDER, made["id"])
    await TimerLoop(service).run_due()
    kinds, _ = await _told(service, made["id"])
    assert kinds.count("resumed") == 1 and "reminder" not in kinds
    await _switch(app_client, world, False)
    await due_now(service, TimerKind.REMINDER, made["id"])
    await TimerLoop(service).run_due()
    kinds, heard = await _told(service, made["id"])
    assert kinds.count("resumed") == 1 and kinds[-1] == "reminder", kinds
    assert heard.count("order.reminder_sent") == 1


async def test_a_kill_switch_held_past_her_food_s_safe_time_ends_it_as_unsafe(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    made, _ = await make_ready(app_client, world, service, ref="K-2")
    await _switch(app_client, world, True)
    await _hold_ends_now(service, made["id"], food_deadline=utcnow() - timedelta(seconds=1))
    await TimerLoop(service).run_due()
    ended = await _order(service, made)
    assert ended.state == "expired" and ended.food_unsafe_at is not None
    assert ended.failure_reason == (
        "food no longer safe: its safe time ran out while openings at the site were paused"
    )


async def test_a_release_after_her_food_s_safe_time_ends_it_as_unsafe_not_uncollected(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Released after the food's safe time ran out, before her hold's timer looked again:
    nothing to give back, no message that she can collect it, and the food ends as unsafe
    because openings were paused, never as not collected."""
    await merchant_listens(app_client, world)
    made, _ = await make_ready(app_client, world, service, ref="K-3")
    await _switch(app_client, world, True)
    await _hold_ends_now(service, made["id"], food_deadline=utcnow() - timedelta(seconds=1))
    await _switch(app_client, world, False)
    await TimerLoop(service).run_due()
    ended = await _order(service, made)
    assert ended.state == "expired", ended.state
    assert ended.failure_reason == (
        "food no longer safe: its safe time ran out while openings at the site were paused"
    )
    async with service.sessionmaker() as session:
        kinds = set(
            (
                await session.scalars(
                    select(NotificationOutbox.kind).where(NotificationOutbox.order_id == ended.id)
                )
            ).all()
        )
    assert "resumed" not in kinds and "expired" not in kinds and "food_unsafe" in kinds
    heard = [e["type"] for e in await merchant_heard(service, ended.id)]
    assert "order.hold_extended" not in heard and "order.food_unsafe" in heard


async def test_the_release_tells_her_she_can_collect_only_where_nothing_told_her_otherwise(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """`resumed` says her code works again. Not after she was told staff would contact her:
    a fault latched in her compartment (a jammed lock too: "the lock did not open, staff will
    contact you"), or one she was told of since she was ready, cleared since without anyone
    looking at the food (ADR 0128). A jammed lock freed since then is a door that opens again."""
    made = {
        ref: (await make_ready(app_client, world, service, ref=ref, size="S"))
        for ref in ("jammed", "freed", "hot", "lamp")
    }
    faults = {"jammed": "lock_jammed", "freed": "lock_jammed", "hot": "heating_watchdog"}
    faults["lamp"] = "uv_timeout"
    for ref, (_, n) in made.items():
        await event(service, world, "fault_raised", n, fault=faults[ref])
    for ref in ("freed", "lamp"):
        await event(service, world, "fault_cleared", made[ref][1])
    await _switch(app_client, world, True)
    await _switch(app_client, world, False)
    told = {ref: (await _told(service, order["id"]))[0] for ref, (order, _) in made.items()}
    assert [ref for ref, kinds in told.items() if "resumed" in kinds] == ["freed"], told
