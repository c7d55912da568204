"""Pickups a kiosk decided alone while it could not reach the service, replayed (ADR 0077).

The bridge journals each one as an `offline_pickup` event in its outbox, before the unlock, so
it reaches the service ahead of the door's own events and in the kiosk's order. Here it becomes
what an online pickup would have written: the code's single use claimed, an audited opening at
the moment the kiosk decided (so the door_opened event that follows finds its reason), and the
timer that gives the code back should the door never have opened. The door's closing then
completes the pickup through the story as usual.

A pickup decided before the service expired the order on its own clock (the hold ran out, or
the food check found no reading, while the kiosk could not report) stands (ADR 0112): its code's
use is claimed on the expired order, and the door's closing on an empty compartment corrects the
order to picked up (`kiosks.story`), telling everyone the expiry was wrong. Judged with the
kiosk's clock at its latest: its stamp plus how far behind ours its clock may be.

A pickup the service would not have allowed (the order cancelled, expired before the kiosk
decided, collected or opened remotely meanwhile: the kiosk could not know) is not undone and not
lost: the opening is recorded as what it was, the order's history says so, and an
`offline_pickup_conflict` alert asks staff to look. The order itself is not moved.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from firmware_bridge import contract
from locker_service.alerts.service import raise_compartment_alert
from locker_service.compartments import openings
from locker_service.compartments import service as doors
from locker_service.context import ServiceContext
from locker_service.models import Compartment, DoorOpening, Kiosk, Order, utcnow
from locker_service.orders import repository as orders
from locker_service.orders.lifecycle import OrderState
from locker_service.pickup import repository
from locker_service.pickup import service as pickups
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

log = logging.getLogger(__name__)

METHODS = {"qr": openings.PickupMethod.QR_OFFLINE, "code": openings.PickupMethod.KEYPAD_OFFLINE}


async def replay(
    session: AsyncSession,
    ctx: ServiceContext,
    kiosk: Kiosk,
    compartment: Compartment,
    event: contract.Event,
) -> str:
    """Record one offline pickup in the caller's transaction; what it came to: `claimed`,
    `reclaimed` (a retry of a code whose door had not opened), `conflict` or `invalid`."""
    method = METHODS.get(str(event.data.get("method")))
    # Locked: an expiry committing meanwhile either came first (judged below) or waits.
    order = await _order(session, event.data.get("order_id"), lock=True)
    if method is None or order is None or order.compartment_id != compartment.id:
        await _alert(
            session,
            ctx,
            kiosk,
            compartment,
            f"the kiosk reports an offline pickup ({event.data.get('method')}) of an order "
            f"that is not in compartment {compartment.number}: nothing was changed",
            key=f"offline_pickup_conflict:{compartment.id}:{event.event_id}",
        )
        return "invalid"
    request_id = event.data.get("request_id")
    # The kiosk's clock: believed back to when it was cut off, never ahead of ours (a time to
    # come would keep the code's use and the opening from ever being judged over).
    decided_at = min(event.ts, utcnow())
    # The latest it can have been by our clock: when judging it against an end we decided.
    behind_s = ctx.commander.clock_behind_s(kiosk.code) if ctx.commander is not None else 0.0
    latest = min(decided_at + timedelta(seconds=behind_s), utcnow())
    detail: dict[str, object] = {
        "method": method.value,
        "decided_at": decided_at.isoformat(),
        "kiosk": kiosk.code,
    }
    in_time = order.state == OrderState.EXPIRED and decided_before_end(order, latest)
    if in_time:
        detail["before_end"] = True  # collected before the service expired it (ADR 0112)
    outcome = await _claim(session, order, decided_at, in_time)
    doors.authorise(
        session,
        compartment,
        who=openings.purchaser(method),  # `purchaser:qr_offline`: the audit says it was offline
        why="pickup",  # what the code-release timer and `opened_since` look for, as online
        order_id=order.id,
        at=decided_at,
        request_id=request_id if isinstance(request_id, str) else None,
    )
    if outcome == "conflict":
        orders.add_event(
            session,
            order.id,
            "kiosk",
            kiosk.code,
            "offline_pickup_conflict",
            {**detail, "order_state": order.state},
        )
        await _alert(
            session,
            ctx,
            kiosk,
            compartment,
            f"while cut off from the service the kiosk opened compartment {compartment.number} "
            f"for order {order.external_ref}, which is {_state_words(order)}: the order was "
            "not changed; check the compartment and call the purchaser",
            key=f"offline_pickup_conflict:{order.id}",
        )
        return outcome
    orders.add_event(session, order.id, "purchaser", kiosk.code, "offline_pickup", detail)
    if order.state != OrderState.READY:
        return outcome  # expired since: the door's closing decides (no code to give back)
    # As online: the code comes back if the door never opens. Counted from now, not from the
    # kiosk's decision: the door's events are queued right behind this one.
    await timers.schedule_now(
        session,
        TimerKind.CODE_RELEASE,
        utcnow() + timedelta(seconds=doors.authorisation_window_s(ctx)),
        order_id=order.id,
        compartment_id=compartment.id,
    )
    return outcome


async def unlock_refused(
    session: AsyncSession,
    ctx: ServiceContext,
    kiosk: Kiosk,
    compartment: Compartment,
    event: contract.Event,
) -> str:
    """The board refused the unlock of an offline pickup: nothing released. Its authorised
    opening is withdrawn (it must not explain a door forced later) and her code is hers again,
    as online; `withdrawn` or `invalid`."""
    order = await _order(session, event.data.get("order_id"))
    request_id = event.data.get("request_id")
    if order is None or order.compartment_id != compartment.id or not isinstance(request_id, str):
        await _alert(
            session,
            ctx,
            kiosk,
            compartment,
            f"the kiosk reports a refused offline unlock of an order that is not in compartment "
            f"{compartment.number}: nothing was changed",
            key=f"offline_pickup_conflict:{compartment.id}:{event.event_id}",
        )
        return "invalid"
    await session.execute(
        delete(DoorOpening).where(
            DoorOpening.compartment_id == compartment.id,
            DoorOpening.request_id == request_id,
            DoorOpening.door_opened_at.is_(None),
        )
    )
    await pickups.return_unopened_code(
        session,
        order,
        "kiosk",
        kiosk.code,
        {"why": "the board refused the offline unlock", "status": event.data.get("status")},
    )
    return "withdrawn"


async def _order(session: AsyncSession, raw: object, *, lock: bool = False) -> Order | None:
    try:
        order_id = uuid.UUID(str(raw))
    except ValueError:
        return None
    if not lock:
        return await session.get(Order, order_id)
    found: Order | None = await session.scalar(
        select(Order)
        .where(Order.id == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return found


def before_end(order: Order, at: datetime) -> bool:
    """Was `at` before every end the service put on the expired `order` (its hold, its food's
    deadline, the food check's verdict, the moment it expired), once it had been ready? Pure."""
    if order.state != OrderState.EXPIRED or order.ready_at is None:
        return False
    ends = (order.hold_until, order.food_deadline, order.food_unsafe_at, order.closed_at)
    return all(at < end for end in ends if end is not None)


def correction(order: Order, collected_at: datetime, picked_up_at: datetime) -> dict[str, Any]:
    """What the expired `order`'s record said, for the event of its correction to picked up
    (ADR 0112): the day's HACCP record reads it back (ADR 0118). Pure."""

    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at is not None else None

    return {
        "collected_at": collected_at.isoformat(),
        "expired_at": iso(order.closed_at),
        "expired_because": order.failure_reason,
        "food_unsafe_at": iso(order.food_unsafe_at),
        "picked_up_at": picked_up_at.isoformat(),
    }


def decided_before_end(order: Order, latest: datetime) -> bool:
    """A kiosk's offline decision, at the latest our clock may have read then: before the
    expired `order`'s end, and not before it was ready (within the clocks' skew: a kiosk
    restarted with its clock set back stamps long before). Pure."""
    ready = order.ready_at
    return before_end(order, latest) and ready is not None and latest >= ready - doors.CLOCK_SKEW


async def _claim(session: AsyncSession, order: Order, decided_at: datetime, in_time: bool) -> str:
    """`in_time`: an expired order's end came after the kiosk decided (`decided_before_end`)."""
    if order.state != OrderState.READY and not in_time:
        return "conflict"
    if order.code_used_at is None:
        if await orders.mark_code_used(session, order, decided_at, OrderState(order.state)):
            return "claimed"
        return "conflict"
    # Used already: her own earlier try whose door did not open (the kiosk gave the code back
    # to her when the latch came back), or a use online whose door has opened since. On an
    # expired order, only a try of hers before its end used it (online, or offline judged so):
    # this one, before the end too, is hers again (she shut the door on the food, or the
    # closing is not heard of yet), and the closing decides (ADR 0112).
    if order.state == OrderState.READY and await repository.opened_since(
        session, order.id, order.code_used_at
    ):
        return "conflict"
    return "reclaimed"


def _state_words(order: Order) -> str:
    if order.state == OrderState.READY:
        return "ready, but its code had opened the door already"
    return str(order.state).replace("_", " ")


async def _alert(
    session: AsyncSession,
    ctx: ServiceContext,
    kiosk: Kiosk,
    compartment: Compartment,
    what: str,
    *,
    key: str,
) -> None:
    log.warning("kiosk %s compartment %s: %s", kiosk.code, compartment.number, what)
    await raise_compartment_alert(
        session,
        ctx.hub,
        kiosk,
        compartment,
        kind="offline_pickup_conflict",
        severity="critical",
        what=what,
        dedupe_key=key,
    )
