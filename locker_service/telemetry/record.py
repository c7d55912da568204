"""The food's own record: what one order's food went through, from the drop-off to the pickup
(or to the end of the order): its compartment's temperatures, the door openings, the cycles,
and the order's steps (the excursion that made it unsafe among them). Shown to operators on the
order (`GET /api/v1/operator/orders/{id}/record`) and, summed up, to the purchaser on her page
("kept at about 65 °C, never below 63 °C, for 42 minutes since it arrived")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.models import (
    DisinfectionCycle,
    DoorOpening,
    Order,
    OrderEvent,
    TemperatureReading,
    utcnow,
)
from locker_service.telemetry import repository
from locker_service.telemetry.repository import CompartmentPlace
from locker_service.telemetry.schemas import TemperaturePoint
from locker_service.telemetry.service import downsample

RECORD_MAX_POINTS = 500
TRACE_MAX_POINTS = 60  # the purchaser's page: a phone-wide line


class Kept(BaseModel):
    """The food's temperatures summed up over its stay."""

    since: datetime
    until: datetime
    minutes: int
    readings: int
    mean_c: float | None
    min_c: float | None
    max_c: float | None


class RecordEntry(BaseModel):
    at: datetime
    what: str = Field(description="door_opened, cycle_started, cycle_ended, or an order step")
    detail: str


class FoodRecord(BaseModel):
    order_id: str
    external_ref: str
    state: str
    kiosk: str | None
    compartment_number: int | None
    cooked_at: datetime | None
    deposited_at: datetime | None
    ready_at: datetime | None
    picked_up_at: datetime | None
    food_deadline: datetime | None
    food_unsafe_at: datetime | None
    failure_reason: str | None
    kept: Kept | None
    points: list[TemperaturePoint] = Field(description="at most 500, each a slice's mean")
    entries: list[RecordEntry] = Field(description="what happened, oldest first")


@dataclass(frozen=True, slots=True)
class Stay:
    """Where the food was and from when to when: drop-off to pickup (or the order's end)."""

    place: CompartmentPlace
    since: datetime
    until: datetime


async def stay_of(session: AsyncSession, order: Order) -> Stay | None:
    if order.deposited_at is None or order.compartment_id is None:
        return None
    place = await repository.compartment_place(session, order.compartment_id)
    if place is None:
        return None
    return Stay(place, order.deposited_at, order.picked_up_at or order.closed_at or utcnow())


async def kept(session: AsyncSession, stay: Stay) -> Kept:
    """The food's temperatures over its stay, summed up in the database."""
    r = TemperatureReading
    window = repository.in_window(stay.place.kiosk_id, stay.place.number, stay.since, stay.until)
    count, mean, low, high = (
        await session.execute(
            select(
                func.count(r.temp_c), func.avg(r.temp_c), func.min(r.temp_c), func.max(r.temp_c)
            ).where(*window)
        )
    ).one()
    return Kept(
        since=stay.since,
        until=stay.until,
        minutes=int((stay.until - stay.since).total_seconds() // 60),
        readings=int(count or 0),
        mean_c=round(float(mean), 1) if mean is not None else None,
        min_c=float(low) if low is not None else None,
        max_c=float(high) if high is not None else None,
    )


async def trace(
    session: AsyncSession, stay: Stay, max_points: int = TRACE_MAX_POINTS
) -> list[TemperaturePoint]:
    """The food's temperatures over its stay, at most `max_points` slice means."""
    rows = await repository.readings_between(
        session, stay.place.kiosk_id, stay.place.number, stay.since, stay.until
    )
    return downsample(rows, max_points)


def ended(cycle: DisinfectionCycle) -> str:
    """How a cycle ended, with its UV-C proof when the board gave one: `completed: lamp lit
    1800 s of 1800 s, 108.0 mJ/cm2 (102.6 required)`."""
    lamp = cycle.lamp or {}
    if cycle.outcome == "impossible":
        return f"{cycle.state}: the board's lamp record cannot be true"
    if not lamp:
        return cycle.state + (": dose not reported by the board" if cycle.outcome else "")
    said = (
        f"{cycle.state}: lamp lit {lamp.get('lamp_on_s', 0):g} s of {lamp.get('duration_s', 0):g} s"
    )
    if lamp.get("interruptions"):
        said += f", dark {lamp['interruptions']} time(s)"
    if cycle.dose_mj_cm2 is not None and cycle.dose_required_mj_cm2 is not None:
        said += f", {cycle.dose_mj_cm2:.1f} mJ/cm2 ({cycle.dose_required_mj_cm2:.1f} required)"
    return said


async def food_record(session: AsyncSession, order: Order) -> FoodRecord:
    stay = await stay_of(session, order)
    points: list[TemperaturePoint] = []
    entries: list[RecordEntry] = []
    if stay is not None:
        since, until = stay.since, stay.until
        points = await trace(session, stay, RECORD_MAX_POINTS)
        openings = await session.scalars(
            select(DoorOpening).where(
                DoorOpening.compartment_id == order.compartment_id,
                DoorOpening.at >= since,
                DoorOpening.at <= until,
            )
        )
        for o in openings:
            what = "door_opened" if o.door_opened_at is not None else "door_unlocked"
            at = o.door_opened_at or o.at
            entries.append(RecordEntry(at=at, what=what, detail=f"{o.who}: {o.why}"))
        cycles = await session.scalars(
            select(DisinfectionCycle).where(DisinfectionCycle.order_id == order.id)
        )
        for c in cycles:
            entries.append(RecordEntry(at=c.started_at, what="cycle_started", detail=c.kind))
            if c.finished_at is not None:
                entries.append(RecordEntry(at=c.finished_at, what="cycle_ended", detail=ended(c)))
    steps = await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id))
    for e in steps:
        reason = e.detail.get("reason") or e.detail.get("message") or ""
        entries.append(RecordEntry(at=e.at, what=e.action, detail=str(reason)))
    entries.sort(key=lambda entry: entry.at)
    return FoodRecord(
        order_id=str(order.id),
        external_ref=order.external_ref,
        state=order.state,
        kiosk=stay.place.kiosk_code if stay else None,
        compartment_number=stay.place.number if stay else None,
        cooked_at=order.cooked_at,
        deposited_at=order.deposited_at,
        ready_at=order.ready_at,
        picked_up_at=order.picked_up_at,
        food_deadline=order.food_deadline,
        food_unsafe_at=order.food_unsafe_at,
        failure_reason=order.failure_reason,
        kept=await kept(session, stay) if stay else None,
        points=points,
        entries=entries,
    )
