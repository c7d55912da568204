"""Per-minute rollups: folded from a batch (pure), merged into temperature_minutes with the batch on
SQLite and PostgreSQL, equal to what the raw readings give, never counting a reading twice across
a restart mid-minute or a failed write; the long-range chart is drawn from them and outlives the
raw readings."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from locker_service.context import ServiceContext
from locker_service.db import create_engine, create_sessionmaker
from locker_service.kiosk_link.directory import KioskDirectory
from locker_service.models import TemperatureMinute
from locker_service.telemetry.ingest import TelemetryIngest
from locker_service.telemetry.repository import minutes_between, readings_between
from locker_service.telemetry.retention import RetentionLoop
from locker_service.telemetry.rollups import ReadingRow, minute_of, roll_up
from tests.locker_service.test_telemetry_ingest import seed, telemetry

# Both backends in the everyday selection too (tests/conftest.py, ADR 0127): the subject is
# SQL written per backend, the buckets read back for a window.
POSTGRES_EVERY_DAY = True

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def test_a_batch_folds_into_one_rollup_per_compartment_and_minute() -> None:
    rows = [
        ReadingRow(7, 1, T0 + timedelta(seconds=5), 64.0, 65.0, True),
        ReadingRow(7, 1, T0 + timedelta(seconds=50), 66.0, 65.0, False),
        ReadingRow(7, 1, T0 + timedelta(seconds=55), None, 70.0, True),  # sensor faulted
        ReadingRow(7, 1, T0 + timedelta(seconds=60), 61.0, 65.0, False),  # the next minute
        ReadingRow(7, 2, T0 + timedelta(seconds=1), 20.0, None, False),
    ]
    first, second, other = roll_up(reversed(rows))
    assert (first.kiosk_id, first.number, first.minute) == (7, 1, T0)
    assert (first.temp_min_c, first.temp_max_c, first.temp_mean_c) == (64.0, 66.0, 65.0)
    assert (first.readings, first.temp_count, first.heater_on) == (3, 2, 2)
    assert first.heater_share == pytest.approx(2 / 3) and first.setpoint_c == 70.0
    assert (second.minute, second.readings, second.temp_mean_c) == (
        T0 + timedelta(minutes=1),
        1,
        61.0,
    )
    assert (other.number, other.setpoint_c, other.heater_share) == (2, None, 0.0)


def test_a_minute_of_faulted_readings_has_no_temperature() -> None:
    [only] = roll_up([ReadingRow(1, 1, T0, None, 65.0, False)] * 4)
    assert (only.temp_min_c, only.temp_max_c, only.temp_mean_c, only.readings) == (
        None,
        None,
        None,
        4,
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def expected_minutes(rows: Sequence[ReadingRow]) -> dict[datetime, tuple[object, ...]]:
    """Min, mean, max, count and heater share per minute, straight from the raw rows."""
    by_minute: dict[datetime, list[ReadingRow]] = defaultdict(list)
    for row in rows:
        by_minute[minute_of(row.ts)].append(row)
    result: dict[datetime, tuple[object, ...]] = {}
    for minute, group in by_minute.items():
        temps = [r.temp_c for r in group if r.temp_c is not None]
        result[minute] = (
            min(temps) if temps else None,
            pytest.approx(statistics.fmean(temps)) if temps else None,
            max(temps) if temps else None,
            len(group),
            pytest.approx(sum(r.heater for r in group) / len(group)),
        )
    return result


def stored_minutes(minutes: Sequence[TemperatureMinute]) -> dict[datetime, tuple[object, ...]]:
    return {
        m.minute: (
            m.temp_min_c,
            m.temp_sum_c / m.temp_count if m.temp_count else None,
            m.temp_max_c,
            m.readings,
            m.heater_on / m.readings,
        )
        for m in minutes
    }


async def test_the_minutes_equal_what_the_raw_readings_give(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker), batch_rows=10**9)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    for i in range(0, 240, 3):  # four minutes, a reading every 3 s, flushed in uneven batches
        temp = None if i % 27 == 0 else 60.0 + (i * 7 % 11) * 0.5
        ingest.submit(seeded.kiosk_code, telemetry(start + timedelta(seconds=i), {1: temp}))
        if i % 21 == 0:
            await ingest.flush()
    await ingest.flush()
    end = start + timedelta(minutes=4)
    async with sessionmaker() as session:
        raw = await readings_between(session, seeded.kiosk_id, 1, start, end)
        minutes = await minutes_between(session, seeded.kiosk_id, 1, start, end)
    assert len(raw) == 80 and len(minutes) == 4
    assert stored_minutes(minutes) == expected_minutes(raw)


async def test_a_restart_mid_minute_counts_nothing_twice(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    before = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    for s in range(0, 30, 5):
        before.submit(seeded.kiosk_code, telemetry(minute + timedelta(seconds=s), {1: 60.0 + s}))
    await before.flush()
    before.submit(seeded.kiosk_code, telemetry(minute + timedelta(seconds=30), {1: 90.0}))
    await before.stop()  # the service stops mid-minute: what it holds is written
    after = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    for s in range(35, 60, 5):
        after.submit(seeded.kiosk_code, telemetry(minute + timedelta(seconds=s), {1: 50.0 + s}))
    await after.flush()
    async with sessionmaker() as session:
        raw = await readings_between(
            session, seeded.kiosk_id, 1, minute, minute + timedelta(minutes=1)
        )
        [stored] = await minutes_between(session, seeded.kiosk_id, 1, minute, minute)
    assert len(raw) == 12 and stored.readings == 12
    assert stored_minutes([stored]) == expected_minutes(raw)
    assert (stored.temp_min_c, stored.temp_max_c) == (60.0, 105.0)


async def test_a_write_that_fails_after_the_copy_stores_neither_readings_nor_minutes(
    engine: AsyncEngine,
) -> None:
    """The minutes' merge fails inside the batch's transaction (a trigger refuses it once): the
    readings copied before it are rolled back too, and the retry counts them once."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE refuse_minutes (armed INTEGER)"))
        await connection.execute(text("INSERT INTO refuse_minutes VALUES (1)"))
        if engine.dialect.name == "postgresql":
            await connection.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF EXISTS (SELECT 1 FROM refuse_minutes) THEN "
                    "RAISE EXCEPTION 'minutes refused'; END IF; RETURN NEW; END $$"
                )
            )
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON temperature_minutes "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
        else:
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON temperature_minutes "
                    "WHEN EXISTS (SELECT 1 FROM refuse_minutes) "
                    "BEGIN SELECT RAISE(ABORT, 'minutes refused'); END"
                )
            )
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    for s in range(0, 60, 10):
        ingest.submit(seeded.kiosk_code, telemetry(minute + timedelta(seconds=s), {2: 61.0 + s}))
    with pytest.raises(Exception, match="minutes refused"):
        await ingest.flush()
    async with sessionmaker() as session:
        end = minute + timedelta(minutes=1)
        assert await readings_between(session, seeded.kiosk_id, 2, minute, end) == []
        assert await minutes_between(session, seeded.kiosk_id, 2, minute, end) == []
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM refuse_minutes"))
    assert ingest.buffered_rows == 6
    assert await ingest.flush() == 6
    async with sessionmaker() as session:
        raw = await readings_between(session, seeded.kiosk_id, 2, minute, end)
        [stored] = await minutes_between(session, seeded.kiosk_id, 2, minute, minute)
    assert len(raw) == 6 and stored.readings == 6
    assert stored_minutes([stored]) == expected_minutes(raw)


async def test_retention_prunes_readings_and_keeps_minutes(engine: AsyncEngine) -> None:
    """On both backends: the raw readings past retention go, their minutes stay (PostgreSQL's
    partition drop is tested on its own in test_telemetry_partitions)."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    now = datetime.now(UTC)
    old = now - timedelta(days=40)
    ingest.submit(seeded.kiosk_code, telemetry(old, {1: 62.0}))
    ingest.submit(seeded.kiosk_code, telemetry(now, {1: 66.0}))
    await ingest.flush()
    await RetentionLoop(engine, retention_days=30).run_once(now)
    async with sessionmaker() as session:
        raw = await readings_between(session, seeded.kiosk_id, 1, old - timedelta(days=1), now)
        minutes = await minutes_between(session, seeded.kiosk_id, 1, old - timedelta(days=1), now)
    assert [r.temp_c for r in raw] == [66.0]
    assert [(m.minute, m.temp_max_c) for m in minutes] == [
        (minute_of(old), 62.0),
        (minute_of(now), 66.0),
    ]
    # Minutes past their own (longer) retention go as well.
    await RetentionLoop(engine, retention_days=30, minutes_retention_days=35).run_once(now)
    async with sessionmaker() as session:
        minutes = await minutes_between(session, seeded.kiosk_id, 1, old - timedelta(days=1), now)
    assert [m.minute for m in minutes] == [minute_of(now)]


async def test_a_chart_of_a_day_is_drawn_from_the_minutes(
    app_client: httpx.AsyncClient, service: ServiceContext
) -> None:
    ctx = service
    seeded = await seed(ctx.sessionmaker)
    ingest = TelemetryIngest(ctx.engine, KioskDirectory(ctx.sessionmaker))
    now = datetime.now(UTC)
    for i in range(600):  # ten hours, a reading a minute
        ts = now - timedelta(minutes=599 - i)
        ingest.submit(seeded.kiosk_code, telemetry(ts, {2: 60.0 + i % 10}))
    await ingest.flush()
    # The raw readings are gone: only the minutes can draw this chart.
    async with ctx.engine.begin() as connection:
        await connection.execute(text("DELETE FROM temperature_readings"))
    url = f"/api/v1/operator/compartments/{seeded.compartment_ids[2]}/temperatures"
    auth = {"Authorization": f"Bearer {seeded.operator_token}"}

    answer = await app_client.get(url, params={"hours": 12, "max_points": 1000}, headers=auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["readings_total"] == 600 and len(body["points"]) == 600
    assert [p["temp_c"] for p in body["points"][:12]] == [60.0 + i % 10 for i in range(12)]

    answer = await app_client.get(url, params={"hours": 12, "max_points": 61}, headers=auth)
    body = answer.json()
    assert body["readings_total"] == 600 and 50 <= len(body["points"]) <= 61
    # Whole slices hold 12 minutes of the 60..69 cycle: their means lie within 63.8..65.2.
    temps = [p["temp_c"] for p in body["points"]]
    assert all(63.8 <= t <= 65.2 for t in temps[1:-1])
    stamps = [p["ts"] for p in body["points"]]
    assert stamps == sorted(stamps)
    assert datetime.fromisoformat(stamps[-1]) == minute_of(now)

    # Six hours and less still come from the raw readings, which are gone here.
    answer = await app_client.get(url, params={"hours": 6}, headers=auth)
    assert answer.json()["readings_total"] == 0
