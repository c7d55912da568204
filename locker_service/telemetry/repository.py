"""Queries on temperature_readings: the batched insert and the history of one compartment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Integer, cast, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from locker_service.models import Alert, Compartment, Kiosk, TemperatureReading
from locker_service.telemetry.monitor import Carried, dedupe_key

READING_COLUMNS = ("kiosk_id", "number", "ts", "temp_c", "setpoint_c", "heater")


class ReadingRow(NamedTuple):
    """One row as inserted, in READING_COLUMNS order (what COPY takes)."""

    kiosk_id: int
    number: int
    ts: datetime
    temp_c: float | None
    setpoint_c: float | None
    heater: bool


async def insert_readings(engine: AsyncEngine, rows: Sequence[ReadingRow]) -> None:
    """Store a batch in one transaction.

    PostgreSQL: binary COPY through asyncpg, which is what sustains tens of thousands of rows a
    second (a multi-row INSERT spends its time in parameter handling). SQLite: one executemany.
    """
    if not rows:
        return
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.copy_records_to_table(
                TemperatureReading.__tablename__, records=rows, columns=list(READING_COLUMNS)
            )
        else:
            await connection.execute(insert(TemperatureReading), [row._asdict() for row in rows])
        await connection.commit()


class FirstSight(NamedTuple):
    """A compartment's first reading in this process, which the monitor has never watched."""

    kiosk_id: int
    kiosk_code: str
    number: int
    ts: datetime
    below_floor: bool  # holding and below the floor at this reading


async def carried_watches(
    engine: AsyncEngine, sights: Sequence[FirstSight], floor_c: float, recovered_c: float
) -> dict[tuple[str, int], Carried]:
    """What the database knows of each compartment's watch: its open temperature alerts and,
    when it reads below the floor now, when that stretch began (the readings since it last read
    `recovered_c` or more, or stopped holding). The readings of `ts` are already stored."""
    keys = {
        dedupe_key(kind, s.kiosk_code, s.number): s
        for s in sights
        for kind in ("below_floor", "above_ceiling")
    }
    carried: dict[tuple[str, int], Carried] = {}
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(Alert.dedupe_key, Alert.raised_at).where(
                Alert.dedupe_key.in_(keys), Alert.state != "resolved"
            )
        )
        open_alerts: dict[str, datetime] = {key: raised_at for key, raised_at in rows}
        for s in sights:
            floor_key = dedupe_key("below_floor", s.kiosk_code, s.number)
            ceiling_key = dedupe_key("above_ceiling", s.kiosk_code, s.number)
            below_since = None
            if s.below_floor:
                below_since = await _below_floor_since(connection, s, floor_c, recovered_c)
            carried[(s.kiosk_code, s.number)] = Carried(
                below_since=below_since or open_alerts.get(floor_key),
                floor_raised=floor_key in open_alerts,
                above_since=open_alerts.get(ceiling_key),
                ceiling_raised=ceiling_key in open_alerts,
            )
    return carried


async def _below_floor_since(
    connection: AsyncConnection, sight: FirstSight, floor_c: float, recovered_c: float
) -> datetime | None:
    r = TemperatureReading
    same = (r.kiosk_id == sight.kiosk_id, r.number == sight.number)
    last_fine = await connection.scalar(
        select(func.max(r.ts)).where(
            *same,
            r.ts < sight.ts,
            (r.temp_c >= recovered_c) | r.setpoint_c.is_(None) | (r.setpoint_c < floor_c),
        )
    )
    stretch = [*same, r.ts <= sight.ts, r.temp_c < floor_c, r.setpoint_c >= floor_c]
    if last_fine is not None:
        stretch.append(r.ts > last_fine)
    first: datetime | None = await connection.scalar(select(func.min(r.ts)).where(*stretch))
    return first


class CompartmentPlace(NamedTuple):
    compartment_id: int
    kiosk_id: int
    kiosk_code: str
    site_id: int
    number: int


async def compartment_place(session: AsyncSession, compartment_id: int) -> CompartmentPlace | None:
    row = (
        await session.execute(
            select(Compartment.id, Kiosk.id, Kiosk.code, Kiosk.site_id, Compartment.number)
            .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
            .where(Compartment.id == compartment_id)
        )
    ).first()
    return CompartmentPlace(*row) if row is not None else None


async def compartment_id_of(session: AsyncSession, kiosk_id: int, number: int) -> int | None:
    return await session.scalar(
        select(Compartment.id).where(Compartment.kiosk_id == kiosk_id, Compartment.number == number)
    )


async def readings_between(
    session: AsyncSession, kiosk_id: int, number: int, start: datetime, end: datetime
) -> Sequence[ReadingRow]:
    """Readings of one compartment in [start, end], oldest first (the (kiosk, number, ts) index)."""
    result = await session.execute(
        select(
            TemperatureReading.kiosk_id,
            TemperatureReading.number,
            TemperatureReading.ts,
            TemperatureReading.temp_c,
            TemperatureReading.setpoint_c,
            TemperatureReading.heater,
        )
        .where(
            TemperatureReading.kiosk_id == kiosk_id,
            TemperatureReading.number == number,
            TemperatureReading.ts >= start,
            TemperatureReading.ts <= end,
        )
        .order_by(TemperatureReading.ts)
    )
    return [ReadingRow(*row) for row in result]


def _in_window(
    kiosk_id: int, number: int, start: datetime, end: datetime
) -> list[ColumnElement[bool]]:
    return [
        TemperatureReading.kiosk_id == kiosk_id,
        TemperatureReading.number == number,
        TemperatureReading.ts >= start,
        TemperatureReading.ts <= end,
    ]


async def count_between(
    session: AsyncSession, kiosk_id: int, number: int, start: datetime, end: datetime
) -> int:
    query = select(func.count()).where(*_in_window(kiosk_id, number, start, end))
    return int(await session.scalar(query) or 0)


async def buckets_between(
    session: AsyncSession,
    kiosk_id: int,
    number: int,
    start: datetime,
    end: datetime,
    bucket_s: int,
) -> Sequence[ReadingRow]:
    """One row per `bucket_s` slice of the window, aggregated in the database: the slice's last
    timestamp, mean temperature, highest setpoint, heater on if it was on at all. A week of
    readings every few seconds is far too many rows to carry into Python for one chart."""
    epoch: ColumnElement[Any]
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        epoch = func.extract("epoch", TemperatureReading.ts)
    else:
        epoch = cast(func.strftime("%s", TemperatureReading.ts), Integer)
    bucket = func.floor(epoch / bucket_s).label("bucket")
    result = await session.execute(
        select(
            func.max(TemperatureReading.ts),
            func.avg(TemperatureReading.temp_c),
            func.max(TemperatureReading.setpoint_c),
            func.max(cast(TemperatureReading.heater, Integer)),
        )
        .where(*_in_window(kiosk_id, number, start, end))
        .group_by(bucket)
        .order_by(bucket)
    )
    return [
        ReadingRow(
            kiosk_id,
            number,
            ts,
            round(float(temp), 2) if temp is not None else None,
            setpoint,
            bool(heater),
        )
        for ts, temp, setpoint, heater in result
    ]
