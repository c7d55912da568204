"""Queries of the kiosk handler: the kiosk an MQTT id names, and kiosk events recorded once."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from firmware_bridge import contract
from locker_service.models import Kiosk, KioskEvent, utcnow

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
        "compartment": event.compartment,
        "ts": event.ts,
        "data": event.data if data is None else data,
        "received_at": utcnow(),
    }
    return (await session.execute(statement, values)).scalar() is not None


async def set_event_data(session: AsyncSession, event_id: str, data: dict[str, Any]) -> None:
    """Replace the stored `data` of the event `event_id` (a scan's outcome, once decided)."""
    await session.execute(update(_EVENTS).where(_EVENTS.c.event_id == event_id).values(data=data))
