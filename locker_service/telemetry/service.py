"""Temperature history of one compartment, reduced to what a chart can show.

Up to `RAW_HISTORY_MAX_HOURS` the chart is drawn from the raw readings (on PostgreSQL, today's
partition and at most yesterday's); beyond it from the per-minute rollups, which are a sixtieth of
the rows or less and outlive the raw readings' retention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.errors import NotFound
from locker_service.telemetry import repository
from locker_service.telemetry.repository import CompartmentPlace, ReadingRow
from locker_service.telemetry.schemas import TemperatureHistory, TemperaturePoint

# A few hours of raw readings every 5 s is a few thousand rows per compartment: cheap. Past that
# the minutes are as precise as any chart a screen can draw, and far fewer rows.
RAW_HISTORY_MAX_HOURS = 6.0
MINUTE_S = 60


def downsample(rows: Sequence[ReadingRow], max_points: int) -> list[TemperaturePoint]:
    """At most `max_points` points: equal slices of the rows, each averaged.

    The temperature is the mean of the slice's valid readings, the setpoint and timestamp the
    slice's last, the heater on if it was on in any reading of the slice.
    """
    if len(rows) <= max_points:
        return [
            TemperaturePoint(ts=r.ts, temp_c=r.temp_c, setpoint_c=r.setpoint_c, heater=r.heater)
            for r in rows
        ]
    points: list[TemperaturePoint] = []
    for i in range(max_points):
        chunk = rows[i * len(rows) // max_points : (i + 1) * len(rows) // max_points]
        if not chunk:
            continue
        temps = [r.temp_c for r in chunk if r.temp_c is not None]
        last = chunk[-1]
        points.append(
            TemperaturePoint(
                ts=last.ts,
                temp_c=round(sum(temps) / len(temps), 2) if temps else None,
                setpoint_c=last.setpoint_c,
                heater=any(r.heater for r in chunk),
            )
        )
    return points


async def compartment_place(session: AsyncSession, compartment_id: int) -> CompartmentPlace:
    place = await repository.compartment_place(session, compartment_id)
    if place is None:
        raise NotFound(f"no compartment {compartment_id}")
    return place


async def history(
    session: AsyncSession, place: CompartmentPlace, hours: float, max_points: int, now: datetime
) -> TemperatureHistory:
    start = now - timedelta(hours=hours)
    if hours > RAW_HISTORY_MAX_HOURS:
        return await _history_from_minutes(session, place, start, now, max_points)
    total = await repository.count_between(session, place.kiosk_id, place.number, start, now)
    if total <= max_points:
        rows = await repository.readings_between(session, place.kiosk_id, place.number, start, now)
        points = downsample(rows, max_points)
    else:
        # Aggregate in the database, in slices sized so that at most max_points come back.
        bucket_s = math.ceil((now - start).total_seconds() / (max_points - 1))
        buckets = await repository.buckets_between(
            session, place.kiosk_id, place.number, start, now, bucket_s
        )
        points = downsample(buckets, max_points)
    return TemperatureHistory(
        compartment_id=place.compartment_id,
        kiosk=place.kiosk_code,
        number=place.number,
        start=start,
        end=now,
        readings_total=total,
        points=points,
    )


async def _history_from_minutes(
    session: AsyncSession, place: CompartmentPlace, start: datetime, now: datetime, max_points: int
) -> TemperatureHistory:
    total = await repository.minute_readings_total(
        session, place.kiosk_id, place.number, start, now
    )
    # Whole minutes per slice, so that no minute is split between two points.
    minutes_per_slice = max(
        1, math.ceil((now - start).total_seconds() / MINUTE_S / (max_points - 1))
    )
    buckets = await repository.minute_buckets_between(
        session, place.kiosk_id, place.number, start, now, minutes_per_slice * MINUTE_S
    )
    return TemperatureHistory(
        compartment_id=place.compartment_id,
        kiosk=place.kiosk_code,
        number=place.number,
        start=start,
        end=now,
        readings_total=total,
        points=downsample(buckets, max_points),
    )
