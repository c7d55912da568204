"""Queries of the kiosk handler: the kiosk an MQTT id names, kiosk events recorded once, and the
openings on record that a kiosk's report of food taken out is checked against."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from firmware_bridge import contract
from locker_service.dropoff.service import DROPOFF_OPENING_WHY
from locker_service.models import DoorOpening, Kiosk, KioskEvent, Order, OrderEvent, utcnow
from locker_service.orders.lifecycle import OrderState, OrderTrigger

# The reason the drop-off door timer gives when it releases an order (timer_loop/handlers.py).
DROPOFF_TIMED_OUT = "drop-off timed out"

_EVENTS = cast(Table, KioskEvent.__table__)
# Built once, per dialect, as in orders/repository.py: both have `ON CONFLICT DO NOTHING`.
_INSERT_EVENT_IF_NEW = {
    "postgresql": pg_insert(_EVENTS)
    .on_conflict_do_nothing(index_elements=["event_id"])
    .returning(_EVENTS.c.id),
    "sqlite": sqlite_insert(_EVENTS)
    .on_conflict_do_nothing(index_elements=["event_id"])
    .returning(_EVENTS.c.id),
}


async def kiosk_by_code(session: AsyncSession, code: str) -> Kiosk | None:
    return await session.scalar(select(Kiosk).where(Kiosk.code == code))


async def record_event_if_new(
    session: AsyncSession,
    event: contract.Event,
    kiosk_id: int | None,
    data: dict[str, Any] | None = None,
) -> bool:
    """Store the event's row; False when its `event_id` is stored already (a redelivery).

    One round trip: `INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING id`. A replica
    racing with the same event waits here, on PostgreSQL, for the other's transaction and
    then finds the row, so only one of them goes on to act on it. `data` replaces the event's
    own (a scan's text is never stored, see scans.py).
    """
    statement = _INSERT_EVENT_IF_NEW[session.get_bind().dialect.name]
    values = {
        "event_id": event.event_id,
        "kiosk_id": kiosk_id,
        "type": event.type,
        "seq": event.seq,
        "compartment": event.compartment,
        "ts": event.ts,
        "data": event.data if data is None else data,
        "received_at": utcnow(),
    }
    return (await session.execute(statement, values)).scalar() is not None


async def set_event_data(session: AsyncSession, event_id: str, data: dict[str, Any]) -> None:
    """Replace the stored `data` of the event `event_id` (a scan's outcome, once decided)."""
    await session.execute(update(_EVENTS).where(_EVENTS.c.event_id == event_id).values(data=data))


async def door_opened_for_order(
    session: AsyncSession, order_id: uuid.UUID, since: datetime
) -> datetime | None:
    """When the door last opened through an opening authorised for this order at or after
    `since` (the service's clock, as the authorisation's); None if none made the door open."""
    opened: datetime | None = await session.scalar(
        select(func.max(DoorOpening.door_opened_at)).where(
            DoorOpening.order_id == order_id,
            DoorOpening.at >= since,
            DoorOpening.door_opened_at.is_not(None),
        )
    )
    return opened


async def door_opened_in_compartment(
    session: AsyncSession, compartment_id: int, since: datetime
) -> datetime | None:
    """When the door last opened for any reason on record (commanded or not) at or after
    `since`."""
    opened: datetime | None = await session.scalar(
        select(func.max(DoorOpening.door_opened_at)).where(
            DoorOpening.compartment_id == compartment_id,
            DoorOpening.at >= since,
            DoorOpening.door_opened_at.is_not(None),
        )
    )
    return opened


async def unlocked_for_order(
    session: AsyncSession, order_id: uuid.UUID, since: datetime
) -> datetime | None:
    """When the service last authorised an opening for this order, since `since` (its own
    clock), whether or not the door_opened event that would confirm it has arrived."""
    at: datetime | None = await session.scalar(
        select(func.max(DoorOpening.at)).where(
            DoorOpening.order_id == order_id, DoorOpening.at >= since
        )
    )
    return at


async def timed_out_dropoff(
    session: AsyncSession, compartment_id: int
) -> tuple[Order, datetime] | None:
    """The order of the last drop-off unlocked at this compartment, with its unlock time, if
    the drop-off's door timer released it and it still waits for a drop-off; else None."""
    opening = await session.scalar(
        select(DoorOpening)
        .where(
            DoorOpening.compartment_id == compartment_id,
            DoorOpening.why == DROPOFF_OPENING_WHY,
            DoorOpening.order_id.is_not(None),
        )
        .order_by(DoorOpening.at.desc())
        .limit(1)
    )
    if opening is None or opening.order_id is None:
        return None
    order = await session.get(Order, opening.order_id)
    if order is None or order.state != OrderState.CREATED or order.compartment_id is not None:
        return None
    released: dict[str, Any] | None = await session.scalar(
        select(OrderEvent.detail)
        .where(OrderEvent.order_id == order.id, OrderEvent.action == OrderTrigger.RELEASE.value)
        .order_by(OrderEvent.id.desc())
        .limit(1)
    )
    if released is None or released.get("reason") != DROPOFF_TIMED_OUT:
        return None  # shut empty (the courier said so by closing): not the timer's guess
    return order, opening.at
