"""Queries on temperature_readings and temperature_minutes: the batched insert with its minute
rollups, the buckets bridges kept while cut off (stored once each), and the history of one
compartment (raw readings, or minutes for long ranges)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    cast,
    distinct,
    func,
    insert,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from firmware_bridge import contract
from locker_service.compartments.lifecycle import FOOD_INSIDE
from locker_service.models import (
    Alert,
    Compartment,
    Kiosk,
    KioskLease,
    TemperatureBacklogBucket,
    TemperatureMinute,
    TemperatureReading,
    utcnow,
)
from locker_service.telemetry.monitor import Carried, dedupe_key
from locker_service.telemetry.partitions import DayPartitions, day_of
from locker_service.telemetry.rollups import MinuteRollup, ReadingRow, kept_bucket_rows, roll_up

__all__ = ["READING_COLUMNS", "LeaseClaims", "ReadingRow"]

READING_COLUMNS = ("kiosk_id", "number", "ts", "temp_c", "setpoint_c", "heater")

# The leases a write's rows came under: by kiosk database id, (kiosk code, holder, epoch).
LeaseClaims = Mapping[int, tuple[str, str, int]]

# The claims still true, their lease rows locked against a take or a release until the commit
# (both lock the row FOR UPDATE first; a renewal does not, and is not waited for: ADR 0100).
_LEASES_HELD_PG = """
SELECT kiosk_code FROM kiosk_leases
WHERE (kiosk_code, holder, epoch) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]))
FOR KEY SHARE
"""

# One statement merges a batch's minutes, whatever their number: arrays in, unnest, upsert.
# LEAST/GREATEST skip NULLs, so a minute of faulted readings keeps the other batches' min/max.
_MERGE_MINUTES_PG = """
INSERT INTO temperature_minutes AS m
    (kiosk_id, number, minute, temp_min_c, temp_max_c, temp_sum_c, temp_count, readings,
     heater_on, setpoint_c)
SELECT * FROM unnest($1::int[], $2::int[], $3::timestamptz[], $4::float8[], $5::float8[],
                     $6::float8[], $7::int[], $8::int[], $9::int[], $10::float8[])
ON CONFLICT (kiosk_id, number, minute) DO UPDATE SET
    temp_min_c = LEAST(m.temp_min_c, EXCLUDED.temp_min_c),
    temp_max_c = GREATEST(m.temp_max_c, EXCLUDED.temp_max_c),
    temp_sum_c = m.temp_sum_c + EXCLUDED.temp_sum_c,
    temp_count = m.temp_count + EXCLUDED.temp_count,
    readings = m.readings + EXCLUDED.readings,
    heater_on = m.heater_on + EXCLUDED.heater_on,
    setpoint_c = GREATEST(m.setpoint_c, EXCLUDED.setpoint_c)
"""


def _merge_minutes_sqlite() -> Any:
    statement = sqlite.insert(TemperatureMinute)
    new, old = statement.excluded, TemperatureMinute

    def lowest(a: Any, b: Any) -> Any:  # SQLite's min(a, b) is NULL if either is
        return func.min(func.coalesce(a, b), func.coalesce(b, a))

    def highest(a: Any, b: Any) -> Any:
        return func.max(func.coalesce(a, b), func.coalesce(b, a))

    return statement.on_conflict_do_update(
        index_elements=["kiosk_id", "number", "minute"],
        set_={
            "temp_min_c": lowest(old.temp_min_c, new.temp_min_c),
            "temp_max_c": highest(old.temp_max_c, new.temp_max_c),
            "temp_sum_c": old.temp_sum_c + new.temp_sum_c,
            "temp_count": old.temp_count + new.temp_count,
            "readings": old.readings + new.readings,
            "heater_on": old.heater_on + new.heater_on,
            "setpoint_c": highest(old.setpoint_c, new.setpoint_c),
        },
    )


def _minute_dict(m: MinuteRollup) -> dict[str, Any]:
    return {
        "kiosk_id": m.kiosk_id,
        "number": m.number,
        "minute": m.minute,
        "temp_min_c": m.temp_min_c,
        "temp_max_c": m.temp_max_c,
        "temp_sum_c": m.temp_sum_c,
        "temp_count": m.temp_count,
        "readings": m.readings,
        "heater_on": m.heater_on,
        "setpoint_c": m.setpoint_c,
    }


async def insert_readings(
    engine: AsyncEngine,
    rows: Sequence[ReadingRow],
    *,
    partitions: DayPartitions | None = None,
    rollups: bool = True,
    leases: LeaseClaims | None = None,
) -> set[int]:
    """Store a batch and merge its minute rollups, in one transaction: the minutes account for
    exactly the readings stored, whatever fails or restarts in between.

    With `leases`, the transaction proves them (ADR 0106): the rows of a kiosk whose lease row
    no longer names that holder and epoch, or that has no claim, are left out, and its id
    returned. On PostgreSQL the proof comes last, after the COPY and just before the commit,
    and locks the lease rows (`FOR KEY SHARE`) until the commit: no take or release commits in
    between, and a replica frozen in the middle of the COPY, whose session the database cannot
    time out, holds no lease row meanwhile. A lease found lost rolls the write back, and it is
    made again without that kiosk. On SQLite the proof comes first: the transaction holds the
    database's one write lock from its `BEGIN IMMEDIATE`.

    PostgreSQL: binary COPY through asyncpg, which is what sustains tens of thousands of rows a
    second (a multi-row INSERT spends its time in parameter handling), and one array upsert of
    the minutes. `partitions` first makes the partitions of days not seen before (without it a
    new day's readings wait in the default partition). SQLite: two executemany.
    """
    if not rows:
        return set()
    lost = set() if leases is None else {row.kiosk_id for row in rows} - set(leases)
    claims = None if leases is None else {k: c for k, c in leases.items() if k not in lost}
    postgres = engine.dialect.name == "postgresql"
    if postgres and partitions is not None:
        await partitions.cover(engine, {day_of(row.ts) for row in rows})
    async with engine.connect() as connection:
        if postgres:
            driver = await _driver(connection)
            while True:
                kept = _without(rows, lost)
                found = await _write_proved_pg(
                    driver, kept, roll_up(kept) if rollups else [], claims
                )
                if not found:
                    return lost
                lost |= found  # rolled back: made again without them (fewer claims each round)
                claims = {k: c for k, c in (claims or {}).items() if k not in found}
        # BEGIN IMMEDIATE (the engine's) at the first statement: the database's one write lock.
        if claims is not None:
            lost |= await _leases_lost_sqlite(connection, claims)
        kept = _without(rows, lost)
        if kept:
            await _write_sqlite(connection, kept, roll_up(kept) if rollups else [])
        await connection.commit()
    return lost


def _without(rows: Sequence[ReadingRow], lost: set[int]) -> Sequence[ReadingRow]:
    return [row for row in rows if row.kiosk_id not in lost] if lost else rows


async def _write_proved_pg(
    driver: Any,
    rows: Sequence[ReadingRow],
    minutes: list[MinuteRollup],
    claims: LeaseClaims | None,
) -> set[int]:
    """Write in the driver's own transaction (SQLAlchemy has begun none on this connection),
    then prove the claims: committed if all hold, else rolled back, and the kiosks whose lease
    was lost returned."""
    transaction = driver.transaction()
    await transaction.start()
    try:
        if rows:
            await _write_pg(driver, rows, minutes)
        lost = await _leases_lost_pg(driver, claims) if claims else set()
    except BaseException:
        await transaction.rollback()
        raise
    if lost:
        await transaction.rollback()
    else:
        await transaction.commit()
    return lost


async def _leases_lost_pg(driver: Any, leases: LeaseClaims) -> set[int]:
    claims = list(leases.items())
    held = {
        record[0]
        for record in await driver.fetch(
            _LEASES_HELD_PG,
            [code for _, (code, _, _) in claims],
            [holder for _, (_, holder, _) in claims],
            [epoch for _, (_, _, epoch) in claims],
        )
    }
    return {kiosk_id for kiosk_id, (code, _, _) in claims if code not in held}


async def _leases_lost_sqlite(connection: AsyncConnection, leases: LeaseClaims) -> set[int]:
    if not leases:
        return set()
    claims = list(leases.items())
    found = await connection.execute(
        select(KioskLease.kiosk_code).where(
            tuple_(KioskLease.kiosk_code, KioskLease.holder, KioskLease.epoch).in_(
                [claim for _, claim in claims]
            )
        )
    )
    held = set(found.scalars())
    return {kiosk_id for kiosk_id, (code, _, _) in claims if code not in held}


async def insert_kept_bucket(
    engine: AsyncEngine,
    kiosk_id: int,
    bucket: contract.TelemetryMinutes,
    *,
    partitions: DayPartitions | None = None,
) -> bool:
    """Store a bucket a kiosk's bridge kept while cut off: its row in temperature_backlog_buckets,
    one reading per compartment and the minute rollups, in one transaction. False, with nothing
    written, if the bucket was stored before: MQTT delivers at least once, and the bucket's row
    (its primary key) says it came already, even to another replica or after a restart.
    Concurrent deliveries wait on each other's insert of that row, and one of them stores."""
    rows, minutes = kept_bucket_rows(kiosk_id, bucket)
    start = bucket.minute.astimezone(UTC)
    postgres = engine.dialect.name == "postgresql"
    if postgres and partitions is not None:
        await partitions.cover(engine, {day_of(start)})
    async with engine.connect() as connection:
        if postgres:
            driver = await _driver(connection)
            async with driver.transaction():
                first = await driver.fetchval(
                    "INSERT INTO temperature_backlog_buckets (kiosk_id, minute, seconds, stored_at)"
                    " VALUES ($1, $2, $3, now()) ON CONFLICT DO NOTHING RETURNING true",
                    kiosk_id,
                    start,
                    bucket.seconds,
                )
                if first is None:
                    return False
                await _write_pg(driver, rows, minutes)
            return True
        marked = await connection.execute(
            sqlite.insert(TemperatureBacklogBucket)
            .values(kiosk_id=kiosk_id, minute=start, seconds=bucket.seconds, stored_at=utcnow())
            .on_conflict_do_nothing()
        )
        if not marked.rowcount:
            await connection.rollback()
            return False
        await _write_sqlite(connection, rows, minutes)
        await connection.commit()
        return True


async def stored_stamps(
    engine: AsyncEngine, batches: Sequence[tuple[int, int, datetime]]
) -> set[tuple[int, datetime]]:
    """Which of these batches, each (kiosk database id, one of its compartment numbers, its
    stamp), have readings stored, as (kiosk id, stamp): a batch's readings share its stamp and
    are stored together, so its reading of that compartment says (ADR 0098). Each is one
    point of the (kiosk, number, ts) index."""
    if not batches:
        return set()
    times = [ts for _, _, ts in batches]
    query = select(TemperatureReading.kiosk_id, TemperatureReading.ts).where(
        tuple_(TemperatureReading.kiosk_id, TemperatureReading.number, TemperatureReading.ts).in_(
            batches
        ),
        # The same bounds in a form the planner prunes the day partitions by.
        TemperatureReading.ts >= min(times),
        TemperatureReading.ts <= max(times),
    )
    async with engine.connect() as connection:
        found = await connection.execute(query)
        return {(kiosk, ts) for kiosk, ts in found}


async def _driver(connection: AsyncConnection) -> Any:
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return driver


async def _write_pg(driver: Any, rows: Sequence[ReadingRow], minutes: list[MinuteRollup]) -> None:
    """The readings by COPY and the minutes merged, in the caller's transaction."""
    await driver.copy_records_to_table(
        TemperatureReading.__tablename__, records=rows, columns=list(READING_COLUMNS)
    )
    if minutes:
        await driver.execute(
            _MERGE_MINUTES_PG,
            [m.kiosk_id for m in minutes],
            [m.number for m in minutes],
            [m.minute for m in minutes],
            [m.temp_min_c for m in minutes],
            [m.temp_max_c for m in minutes],
            [m.temp_sum_c for m in minutes],
            [m.temp_count for m in minutes],
            [m.readings for m in minutes],
            [m.heater_on for m in minutes],
            [m.setpoint_c for m in minutes],
        )


async def _write_sqlite(
    connection: AsyncConnection, rows: Sequence[ReadingRow], minutes: list[MinuteRollup]
) -> None:
    await connection.execute(insert(TemperatureReading), [row._asdict() for row in rows])
    if minutes:
        await connection.execute(_merge_minutes_sqlite(), [_minute_dict(m) for m in minutes])


class FirstSight(NamedTuple):
    """A compartment's first reading in this process, which the monitor has never watched."""

    kiosk_id: int
    kiosk_code: str
    number: int
    ts: datetime
    below_floor: bool  # holding and below the floor at this reading


# Values bound in one IN list: a fleet's first telemetry after a start or a takeover names
# every compartment of thousands of kiosks, past what a statement may bind (32,767 on asyncpg).
IN_LIST_MAX = 5000


def _slices(values: Sequence[Any], size: int = IN_LIST_MAX) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def compartments_with_food(
    engine: AsyncEngine, wanted: set[tuple[int, int]]
) -> set[tuple[int, int]]:
    """Which of these (kiosk id, number) compartments have food behind the door, by the
    service's own account (their state), not the board's setpoint. Asked by kiosk (a few
    thousand a statement), the numbers picked here."""
    if not wanted:
        return set()
    found: set[tuple[int, int]] = set()
    async with engine.connect() as connection:
        for kiosk_ids in _slices(sorted({k for k, _ in wanted})):
            rows = await connection.execute(
                select(Compartment.kiosk_id, Compartment.number).where(
                    Compartment.kiosk_id.in_(kiosk_ids),
                    Compartment.state.in_(sorted(FOOD_INSIDE)),
                )
            )
            found.update((int(k), int(n)) for k, n in rows.all())
    return found & wanted


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
    open_alerts: dict[str, datetime] = {}
    async with engine.connect() as connection:
        for some in _slices(list(keys)):
            rows = await connection.execute(
                select(Alert.dedupe_key, Alert.raised_at).where(
                    Alert.dedupe_key.in_(some), Alert.state != "resolved"
                )
            )
            open_alerts.update({key: raised_at for key, raised_at in rows})
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


def readings_query(
    kiosk_id: int, number: int, start: datetime, end: datetime
) -> Select[int, int, datetime, float | None, float | None, bool]:
    """Readings of one compartment in [start, end], oldest first: the (kiosk, number, ts) index,
    and on PostgreSQL only the partitions of the days in the window (the bounds are on `ts`)."""
    r = TemperatureReading
    return (
        select(r.kiosk_id, r.number, r.ts, r.temp_c, r.setpoint_c, r.heater)
        .where(*in_window(kiosk_id, number, start, end))
        .order_by(r.ts)
    )


async def readings_between(
    session: AsyncSession, kiosk_id: int, number: int, start: datetime, end: datetime
) -> Sequence[ReadingRow]:
    result = await session.execute(readings_query(kiosk_id, number, start, end))
    return [ReadingRow(*row) for row in result]


def in_window(
    kiosk_id: int, number: int, start: datetime, end: datetime
) -> list[ColumnElement[bool]]:
    return [
        TemperatureReading.kiosk_id == kiosk_id,
        TemperatureReading.number == number,
        TemperatureReading.ts >= start,
        TemperatureReading.ts <= end,
    ]


async def stamps_after(
    session: AsyncSession, kiosk_id: int, number: int, after: datetime, upto: datetime
) -> int:
    """How many distinct timestamps one compartment's readings have in (after, upto]: a
    reading stored twice counts once (a range of the (kiosk, number, ts) index)."""
    counts = await stamps_after_each(session, kiosk_id, {number: (after, upto)})
    return counts.get(number, 0)


async def stamps_after_each(
    session: AsyncSession, kiosk_id: int, windows: Mapping[int, tuple[datetime, datetime]]
) -> dict[int, int]:
    """`stamps_after` for several compartments of one kiosk, each over its own (after, upto],
    in one query: compartment number -> count (a compartment with none is left out)."""
    if not windows:
        return {}
    params: dict[str, Any] = {
        "kiosk_id": kiosk_id,
        "after": min(after for after, _ in windows.values()),
        "upto": max(upto for _, upto in windows.values()),
    }
    for i, (number, (after, upto)) in enumerate(windows.items()):
        params |= {f"n{i}": number, f"after{i}": after, f"upto{i}": upto}
    result = await session.execute(_stamps_each(len(windows)), params)
    return {number: int(count) for number, count in result.all()}


@lru_cache(maxsize=32)
def _stamps_each(windows: int) -> Select[int, int]:
    """`stamps_after_each`'s query for so many windows, built once: bound by name."""
    r = TemperatureReading
    return (
        select(r.number, func.count(distinct(r.ts)))
        .where(
            r.kiosk_id == bindparam("kiosk_id"),
            # The whole span as well as each window's: PostgreSQL then reads only its days.
            r.ts > bindparam("after", type_=r.ts.type),
            r.ts <= bindparam("upto", type_=r.ts.type),
            or_(
                *(
                    and_(
                        r.number == bindparam(f"n{i}"),
                        r.ts > bindparam(f"after{i}", type_=r.ts.type),
                        r.ts <= bindparam(f"upto{i}", type_=r.ts.type),
                    )
                    for i in range(windows)
                )
            ),
        )
        .group_by(r.number)
    )


async def readings_since_each(
    session: AsyncSession, kiosk_id: int, starts: Mapping[int, datetime], end: datetime
) -> dict[int, list[tuple[datetime, float | None]]]:
    """The temperatures of several compartments of one kiosk, each in [its start, end], oldest
    first, in one query: compartment number -> (timestamp, temperature) pairs (a compartment
    with none is left out). For a kiosk's food checks run together, which fold only these."""
    if not starts:
        return {}
    params: dict[str, Any] = {"kiosk_id": kiosk_id, "start": min(starts.values()), "end": end}
    for i, (number, start) in enumerate(starts.items()):
        params |= {f"n{i}": number, f"start{i}": start}
    found: dict[int, list[tuple[datetime, float | None]]] = {}
    for number, ts, temp_c in await session.execute(_readings_each(len(starts)), params):
        found.setdefault(number, []).append((ts, temp_c))
    return found


@lru_cache(maxsize=32)
def _readings_each(windows: int) -> Select[int, datetime, float | None]:
    """`readings_since_each`'s query for so many compartments, built once: bound by name."""
    r = TemperatureReading
    return (
        select(r.number, r.ts, r.temp_c)
        .where(
            r.kiosk_id == bindparam("kiosk_id"),
            r.ts >= bindparam("start", type_=r.ts.type),
            r.ts <= bindparam("end", type_=r.ts.type),
            or_(
                *(
                    and_(
                        r.number == bindparam(f"n{i}"),
                        r.ts >= bindparam(f"start{i}", type_=r.ts.type),
                    )
                    for i in range(windows)
                )
            ),
        )
        .order_by(r.number, r.ts)
    )


async def count_between(
    session: AsyncSession, kiosk_id: int, number: int, start: datetime, end: datetime
) -> int:
    query = select(func.count()).where(*in_window(kiosk_id, number, start, end))
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
        .where(*in_window(kiosk_id, number, start, end))
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


def _minutes_in_window(
    kiosk_id: int, number: int, start: datetime, end: datetime
) -> list[ColumnElement[bool]]:
    m = TemperatureMinute
    # Whole minutes: the one `start` falls in counts, as the chart's first point.
    first = start.replace(second=0, microsecond=0)
    return [m.kiosk_id == kiosk_id, m.number == number, m.minute >= first, m.minute <= end]


async def minute_readings_total(
    session: AsyncSession, kiosk_id: int, number: int, start: datetime, end: datetime
) -> int:
    query = select(func.coalesce(func.sum(TemperatureMinute.readings), 0)).where(
        *_minutes_in_window(kiosk_id, number, start, end)
    )
    return int(await session.scalar(query) or 0)


async def minute_buckets_between(
    session: AsyncSession,
    kiosk_id: int,
    number: int,
    start: datetime,
    end: datetime,
    bucket_s: int,
) -> Sequence[ReadingRow]:
    """One row per `bucket_s` slice (whole minutes) from the rollups: the slice's last minute,
    the mean of its readings (sums over counts, so exact), its highest setpoint, the heater on
    if it was on at all. Still there after the raw readings have been dropped."""
    m = TemperatureMinute
    epoch: ColumnElement[Any]
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        epoch = func.extract("epoch", m.minute)
    else:
        epoch = cast(func.strftime("%s", m.minute), Integer)
    bucket = func.floor(epoch / bucket_s).label("bucket")
    result = await session.execute(
        select(
            func.max(m.minute),
            func.sum(m.temp_sum_c) / func.nullif(func.sum(m.temp_count), 0),
            func.max(m.setpoint_c),
            func.sum(m.heater_on),
        )
        .where(*_minutes_in_window(kiosk_id, number, start, end))
        .group_by(bucket)
        .order_by(bucket)
    )
    return [
        ReadingRow(
            kiosk_id,
            number,
            minute,
            round(float(temp), 2) if temp is not None else None,
            setpoint,
            bool(heater),
        )
        for minute, temp, setpoint, heater in result
    ]


async def minutes_between(
    session: AsyncSession, kiosk_id: int, number: int, start: datetime, end: datetime
) -> Sequence[TemperatureMinute]:
    """The rollup rows of one compartment in the window, oldest first."""
    query = (
        select(TemperatureMinute)
        .where(*_minutes_in_window(kiosk_id, number, start, end))
        .order_by(TemperatureMinute.minute)
    )
    return (await session.scalars(query)).all()
