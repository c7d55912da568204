"""temperature_readings partitioned by day on PostgreSQL: made ahead and on demand, readings of a
day without a partition kept in the default one and moved out, old days dropped whole while their
minutes stay, a chart's query planned on the partitions of its window only; the migration converts
a table with rows. The day arithmetic is pure and tested first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from locker_service.db import create_engine, create_sessionmaker
from locker_service.kiosk_link.directory import KioskDirectory
from locker_service.models import TemperatureMinute, TemperatureReading
from locker_service.telemetry import partitions
from locker_service.telemetry.ingest import TelemetryIngest
from locker_service.telemetry.partitions import (
    day_bounds,
    day_of,
    day_of_partition,
    days_ahead,
    days_to_drop,
    partition_name,
)
from locker_service.telemetry.repository import (
    ReadingRow,
    insert_readings,
    minutes_between,
    readings_between,
    readings_query,
)
from locker_service.telemetry.retention import RetentionLoop
from locker_service.telemetry.rollups import minute_of
from migrations import alembic_config, upgrade
from tests.locker_service.test_telemetry_ingest import seed, telemetry
from tests.support.databases import create_pg_database, drop_pg_database

# --- pure day arithmetic ---------------------------------------------------------------------


def test_a_day_is_its_utc_day_and_named_by_it() -> None:
    late = datetime(2026, 12, 3, 23, 30, tzinfo=UTC)
    assert day_of(late) == date(2026, 12, 3)
    plus_two = late.astimezone(datetime.fromisoformat("2026-12-04T01:30:00+02:00").tzinfo)
    assert day_of(plus_two) == date(2026, 12, 3)  # 01:30 at +02:00 is still the 3rd in UTC
    assert partition_name(date(2026, 12, 3)) == "temperature_readings_p20261203"
    assert day_of_partition("temperature_readings_p20261203") == date(2026, 12, 3)
    assert day_of_partition("temperature_readings_default") is None
    assert day_bounds(date(2026, 12, 31)) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_days_ahead_and_days_to_drop() -> None:
    today = date(2026, 12, 3)
    assert days_ahead(today, 2) == [today, date(2026, 12, 4), date(2026, 12, 5)]
    days = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3), today]
    # A cutoff inside the 2nd keeps the 2nd whole: only days that ended before it go.
    assert days_to_drop(days, datetime(2026, 11, 2, 10, tzinfo=UTC)) == [date(2026, 11, 1)]
    assert days_to_drop(days, datetime(2026, 11, 3, tzinfo=UTC)) == days[:2]


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
async def pg_engine(pg_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_database_url)
    yield engine
    await engine.dispose()


async def partition_days(engine: AsyncEngine) -> set[date]:
    async with engine.connect() as connection:
        return await partitions.existing_days(connection)


async def rows_in(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_the_migration_makes_today_and_a_week_ahead(pg_engine: AsyncEngine) -> None:
    today = datetime.now(UTC).date()
    assert await partition_days(pg_engine) >= set(days_ahead(today))
    assert await rows_in(pg_engine, partitions.DEFAULT_PARTITION) == 0


async def test_the_retention_round_makes_partitions_ahead(pg_engine: AsyncEngine) -> None:
    later = datetime.now(UTC) + timedelta(days=20)  # the loop's clock three weeks on
    await RetentionLoop(pg_engine, retention_days=30).run_once(later)
    assert await partition_days(pg_engine) >= set(days_ahead(later.date()))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_a_reading_of_a_new_day_is_stored(engine: AsyncEngine) -> None:
    """Both databases; on PostgreSQL the day gets its partition on demand."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    new_day = datetime.now(UTC) + timedelta(days=12)  # beyond the days made ahead
    ingest.submit(seeded.kiosk_code, telemetry(new_day, {1: 65.0, 2: 64.0}))
    if engine.dialect.name == "postgresql":
        assert day_of(new_day) not in await partition_days(engine)
    assert await ingest.flush() == 2
    async with sessionmaker() as session:
        stored = await readings_between(session, seeded.kiosk_id, 2, new_day, new_day)
    assert [(r.ts, r.temp_c) for r in stored] == [(new_day, 64.0)]
    if engine.dialect.name == "postgresql":
        assert day_of(new_day) in await partition_days(engine)
        assert await rows_in(engine, partition_name(day_of(new_day))) == 2
        assert await rows_in(engine, partitions.DEFAULT_PARTITION) == 0


async def test_a_partition_that_cannot_be_made_leaves_the_batch_to_the_default(
    pg_engine: AsyncEngine,
) -> None:
    """Another transaction holds the partition lock past the timeout: the batch is stored
    anyway, in the default partition, and the retention round gives it its day later."""
    sessionmaker = create_sessionmaker(pg_engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(pg_engine, KioskDirectory(sessionmaker))
    new_day = datetime.now(UTC) + timedelta(days=15)
    async with pg_engine.connect() as holder:
        await holder.execute(
            text("SELECT pg_advisory_lock(:id)"), {"id": partitions.PARTITION_LOCK_ID}
        )
        ingest.submit(seeded.kiosk_code, telemetry(new_day, {1: 65.0}))
        assert await ingest.flush() == 1
        await holder.execute(
            text("SELECT pg_advisory_unlock(:id)"), {"id": partitions.PARTITION_LOCK_ID}
        )
    assert await rows_in(pg_engine, partitions.DEFAULT_PARTITION) == 1
    await RetentionLoop(pg_engine, retention_days=30).run_once(datetime.now(UTC))
    assert await rows_in(pg_engine, partitions.DEFAULT_PARTITION) == 0
    assert await rows_in(pg_engine, partition_name(day_of(new_day))) == 1


async def test_the_default_partition_catches_a_day_without_one_and_gives_it_up(
    pg_engine: AsyncEngine,
) -> None:
    seeded = await seed(create_sessionmaker(pg_engine))
    stray = datetime.now(UTC) + timedelta(days=40)
    # Written without the ingest's partition memory: the insert still succeeds.
    await insert_readings(
        pg_engine,
        [ReadingRow(seeded.kiosk_id, 1, stray, 65.0, 65.0, True)] * 3,
    )
    assert await rows_in(pg_engine, partitions.DEFAULT_PARTITION) == 3
    assert await partitions.ensure_days(pg_engine, [day_of(stray)]) == [day_of(stray)]
    assert await rows_in(pg_engine, partitions.DEFAULT_PARTITION) == 0
    assert await rows_in(pg_engine, partition_name(day_of(stray))) == 3
    assert await rows_in(pg_engine, "temperature_readings") == 3
    assert await partitions.ensure_days(pg_engine, [day_of(stray)]) == []  # made once


async def test_retention_drops_old_days_whole_and_keeps_their_minutes(
    pg_engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(pg_engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(pg_engine, KioskDirectory(sessionmaker))
    now = datetime.now(UTC)
    for days in (45, 31, 29, 0):
        for i in range(10):
            ts = now - timedelta(days=days, minutes=i)
            ingest.submit(seeded.kiosk_code, telemetry(ts, {1: 65.0}))
    await ingest.flush()
    # One more from 40 days ago that reached only the default partition (no partition for it).
    old = now - timedelta(days=40)
    await insert_readings(pg_engine, [ReadingRow(seeded.kiosk_id, 1, old, 60.0, 65.0, True)])
    assert await rows_in(pg_engine, partitions.DEFAULT_PARTITION) == 1
    minutes_before = await rows_in(pg_engine, "temperature_minutes")

    await RetentionLoop(pg_engine, retention_days=30).run_once(now)

    days = await partition_days(pg_engine)
    cutoff = now - timedelta(days=30)
    assert all(day_bounds(day)[1] > cutoff for day in days)
    assert day_of(now - timedelta(days=29)) in days
    assert await rows_in(pg_engine, partitions.DEFAULT_PARTITION) == 0
    async with pg_engine.connect() as connection:
        oldest = (await connection.execute(select(func.min(TemperatureReading.ts)))).scalar_one()
        minutes = await connection.execute(select(func.min(TemperatureMinute.minute)))
    assert oldest is not None and oldest >= day_bounds(day_of(cutoff))[0]
    # A day ends at most a day after its readings: those older than 31 days are always gone.
    assert await rows_in(pg_engine, "temperature_readings") == 20
    assert minutes.scalar_one() <= now - timedelta(days=45)  # the minutes stay
    assert await rows_in(pg_engine, "temperature_minutes") == minutes_before


async def test_a_chart_of_the_last_hour_plans_only_its_days_partitions(
    pg_engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(pg_engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(pg_engine, KioskDirectory(sessionmaker))
    now = datetime.now(UTC)
    for back in (timedelta(days=3), timedelta(days=1), timedelta(minutes=10)):
        ingest.submit(seeded.kiosk_code, telemetry(now - back, {1: 65.0}))
    await ingest.flush()
    await partitions.ensure_days(pg_engine, [day_of(now - timedelta(days=3))])
    start = now - timedelta(hours=1)
    query = readings_query(seeded.kiosk_id, 1, start, now)
    # The statement as the service sends it: the same SQL, the bounds as parameters.
    compiled = query.compile(dialect=postgresql.asyncpg.dialect())  # type: ignore[attr-defined]
    assert compiled.positiontup is not None
    params = [compiled.params[name] for name in compiled.positiontup]
    async with pg_engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        # SQLAlchemy's connection decodes json itself: the plan comes back as a list.
        plan = await driver.fetchval(f"EXPLAIN (FORMAT JSON) {compiled}", *params)

    def relations(node: dict[str, object]) -> Iterator[str]:
        if "Relation Name" in node:
            yield str(node["Relation Name"])
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            yield from relations(child)

    expected = {partition_name(day) for day in {day_of(start), day_of(now)}}
    assert set(relations(plan[0]["Plan"])) == expected
    assert len(await partition_days(pg_engine)) > len(expected) + 3  # others there, not planned


# --- the migration on a table with rows -------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_migration_keeps_the_rows_rolls_them_up_and_goes_back(
    backend: str, tmp_path: Path
) -> None:
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    url = sqlite_url if backend == "sqlite" else create_pg_database()
    # One second into a minute: the reading two seconds before falls in the minute before.
    now = datetime.now(UTC).replace(second=1, microsecond=0) - timedelta(minutes=1)
    readings = [(now - timedelta(days=10, seconds=s), 60.0 + s) for s in (0, 1, 2)] + [
        (now + timedelta(seconds=s), 70.0 + s) for s in (0, 20)
    ]

    async def fill() -> int:
        engine = create_engine(url)
        try:
            # The schema of revision 0005, written in its own words (today's models have
            # columns it does not).
            async with engine.begin() as connection:
                site_id = (
                    await connection.execute(
                        text(
                            "INSERT INTO sites (code, name, timezone, kill_switch_engaged, "
                            "created_at) VALUES ('old', 'Old', 'UTC', false, :now) RETURNING id"
                        ),
                        {"now": now},
                    )
                ).scalar_one()
                kiosk_id = (
                    await connection.execute(
                        text(
                            "INSERT INTO kiosks (site_id, code, name, token_hash, online, "
                            "created_at) VALUES (:site, 'old-k', 'Old', 'h', false, :now) "
                            "RETURNING id"
                        ),
                        {"site": site_id, "now": now},
                    )
                ).scalar_one()
            async with engine.begin() as connection:
                await connection.execute(
                    insert(TemperatureReading),
                    [
                        {
                            "kiosk_id": kiosk_id,
                            "number": 1,
                            "ts": ts,
                            "temp_c": t,
                            "setpoint_c": 65.0,
                            "heater": True,
                        }
                        for ts, t in readings
                    ],
                )
            return int(kiosk_id)
        finally:
            await engine.dispose()

    async def check(kiosk_id: int) -> None:
        engine = create_engine(url)
        try:
            if backend == "postgres":
                days = await partition_days(engine)
                assert day_of(now - timedelta(days=10)) in days and day_of(now) in days
                assert await rows_in(engine, partition_name(day_of(now - timedelta(days=10)))) == 3
            assert await rows_in(engine, "temperature_readings") == 5
            async with create_sessionmaker(engine)() as session:
                minutes = (
                    await session.scalars(select(TemperatureMinute).order_by("minute"))
                ).all()
            assert [(m.minute, m.temp_min_c, m.temp_max_c, m.readings) for m in minutes] == [
                (minute_of(now - timedelta(days=10, seconds=2)), 62.0, 62.0, 1),
                (minute_of(now - timedelta(days=10)), 60.0, 61.0, 2),
                (minute_of(now), 70.0, 90.0, 2),
            ]
            # The ingest merges into the minutes the migration made: the same key, not a twin.
            await insert_readings(engine, [ReadingRow(kiosk_id, 1, now, 50.0, None, False)])
            async with create_sessionmaker(engine)() as session:
                [last] = await minutes_between(session, kiosk_id, 1, now, now)
            assert (last.temp_min_c, last.readings) == (50.0, 3)
            async with engine.connect() as connection:
                ids = await connection.execute(select(TemperatureReading.id).order_by("id"))
                assert list(ids.scalars()) == [1, 2, 3, 4, 5, 6]  # the same sequence goes on
        finally:
            await engine.dispose()

    try:
        upgrade(url, "0005")
        kiosk_id = asyncio.run(fill())
        upgrade(url)
        asyncio.run(check(kiosk_id))
        command.downgrade(alembic_config(url), "0005")
        assert asyncio.run(count_readings_at(url)) == 6
    finally:
        if backend == "postgres":
            drop_pg_database(url)


async def count_readings_at(url: str) -> int:
    engine = create_engine(url)
    try:
        return await rows_in(engine, "temperature_readings")
    finally:
        await engine.dispose()
