"""Telemetry a kiosk's bridge kept while cut off (`telemetry/minutes`): each bucket lands once in
temperature_readings and temperature_minutes however often it is delivered, the hot-holding
watch judges it by its lowest temperature, and the link acknowledges it only once stored."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from firmware_bridge import contract
from firmware_bridge.contract.backlog import BucketReading
from locker_service.db import create_engine, create_sessionmaker
from locker_service.kiosk_link import KioskLink
from locker_service.kiosk_link.connection import Delivery
from locker_service.kiosk_link.counters import LinkCounters
from locker_service.kiosk_link.directory import KioskDirectory
from locker_service.kiosk_link.lanes import Lanes
from locker_service.kiosk_link.live import LivePublisher
from locker_service.live import LiveHub
from locker_service.models import Alert, TemperatureBacklogBucket, TemperatureMinute
from locker_service.telemetry.alerts import AlertServiceSink
from locker_service.telemetry.ingest import TelemetryIngest
from locker_service.telemetry.repository import readings_between
from locker_service.telemetry.site_monitors import SiteMonitors
from tests.locker_service.conftest import make_settings
from tests.locker_service.test_kiosk_link import LinkTestSettings, RecordingHandler
from tests.locker_service.test_telemetry_ingest import seed, telemetry
from tests.support.mosquitto import MosquittoProcess


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def minute_ago(minutes: int) -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes)


def kept(
    minute: datetime, *readings: BucketReading, seconds: float = 60.0
) -> contract.TelemetryMinutes:
    return contract.TelemetryMinutes(minute=minute, seconds=seconds, readings=list(readings))


def held(n: int, low: float, mean: float, high: float, count: int = 6) -> BucketReading:
    """A compartment holding at 65 °C, its heater on for half the bucket."""
    return BucketReading(
        n=n, min_c=low, mean_c=mean, max_c=high, count=count, setpoint_c=65.0, heater_on=count // 2
    )


async def minute_row(
    engine: AsyncEngine, kiosk_id: int, n: int, minute: datetime
) -> TemperatureMinute:
    async with create_sessionmaker(engine)() as session:
        row = await session.get(TemperatureMinute, (kiosk_id, n, minute))
    assert row is not None
    return row


async def test_a_kept_bucket_lands_once_in_readings_and_minutes_even_delivered_twice(
    engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    m = minute_ago(10)
    # The link came back 45 s into the minute: two live readings of it are stored already.
    for second in (45, 55):
        ingest.submit(seeded.kiosk_code, telemetry(m + timedelta(seconds=second), {1: 65.0}))
    await ingest.flush()
    faulted = BucketReading(
        n=2, min_c=None, mean_c=None, max_c=None, count=0, setpoint_c=65.0, faulted=4
    )
    bucket = kept(m, held(1, 58.5, 61.0, 63.5, count=4), faulted)

    await ingest.store_minutes(seeded.kiosk_code, bucket)
    await ingest.store_minutes(seeded.kiosk_code, bucket)  # redelivered
    restarted = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    await restarted.store_minutes(seeded.kiosk_code, bucket)  # after a restart, or elsewhere
    assert (ingest.counters.kept_buckets_stored, ingest.counters.kept_buckets_repeated) == (1, 1)
    assert restarted.counters.kept_buckets_repeated == 1

    async with sessionmaker() as session:
        one = await readings_between(session, seeded.kiosk_id, 1, m, m + timedelta(minutes=1))
        two = await readings_between(session, seeded.kiosk_id, 2, m, m + timedelta(minutes=1))
        marks = await session.scalar(select(func.count()).select_from(TemperatureBacklogBucket))
    # One reading per compartment at the bucket's start, with its mean: the hole is filled.
    assert [(r.ts, r.temp_c, r.setpoint_c) for r in one] == [
        (m, 61.0, 65.0),
        (m + timedelta(seconds=45), 65.0, 65.0),
        (m + timedelta(seconds=55), 65.0, 65.0),
    ]
    assert [(r.ts, r.temp_c) for r in two] == [(m, None)]
    assert marks == 1
    # The minute has the bucket's real min and max and counts, merged with the live readings.
    row = await minute_row(engine, seeded.kiosk_id, 1, m)
    assert (row.temp_min_c, row.temp_max_c, row.temp_count, row.readings) == (58.5, 65.0, 6, 6)
    assert row.temp_sum_c == pytest.approx(61.0 * 4 + 65.0 * 2)
    assert (row.heater_on, row.setpoint_c) == (2, 65.0)
    row = await minute_row(engine, seeded.kiosk_id, 2, m)
    assert (row.temp_min_c, row.temp_count, row.readings) == (None, 0, 4)

    # Two deliveries at once (a redelivery racing the first, two replicas at a handover).
    later = kept(m + timedelta(minutes=1), held(1, 64.0, 64.5, 65.0))
    await asyncio.gather(
        ingest.store_minutes(seeded.kiosk_code, later),
        restarted.store_minutes(seeded.kiosk_code, later),
    )
    assert ingest.counters.kept_buckets_stored + restarted.counters.kept_buckets_stored == 2
    row = await minute_row(engine, seeded.kiosk_id, 1, m + timedelta(minutes=1))
    assert (row.temp_count, row.temp_min_c) == (6, 64.0)


async def test_a_kept_bucket_stamped_by_a_wrong_clock_is_dropped_not_stored(
    engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    for minute in (minute_ago(-10), minute_ago(60 * 24 * 30)):  # ahead of us; a month old
        await ingest.store_minutes(seeded.kiosk_code, kept(minute, held(1, 60.0, 62.0, 64.0)))
    assert (ingest.counters.kept_buckets_refused, ingest.counters.kept_buckets_stored) == (2, 0)
    async with sessionmaker() as session:
        marks = await session.scalar(select(func.count()).select_from(TemperatureBacklogBucket))
    assert marks == 0


async def test_narrow_buckets_of_a_time_scaled_kiosk_add_up_in_their_minute(
    engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    m = minute_ago(5)
    for i, (low, high) in enumerate([(62.0, 63.0), (59.0, 61.0), (63.0, 66.0)]):
        start = m + timedelta(seconds=3 * i)
        bucket = kept(start, held(1, low, (low + high) / 2, high, count=3), seconds=3.0)
        await ingest.store_minutes(seeded.kiosk_code, bucket)
        await ingest.store_minutes(seeded.kiosk_code, bucket)
    row = await minute_row(engine, seeded.kiosk_id, 1, m)
    assert (row.temp_min_c, row.temp_max_c, row.temp_count) == (59.0, 66.0, 9)
    assert ingest.counters.kept_buckets_repeated == 3


async def test_a_kept_bucket_below_the_site_floor_reaches_the_watch_by_its_minimum(
    engine: AsyncEngine,
) -> None:
    """Means of 62 °C over a floor of 60 °C, but each of three minutes dipped to 55 °C while the
    kiosk was cut off: the alert is raised (by the minimum), then resolved by the live reading
    that is back in range. The live readings resumed before the buckets came, as they do."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    settings = make_settings("sqlite+aiosqlite://", hold_floor_c=60.0, hold_floor_grace_s=60.0)
    ingest = TelemetryIngest(
        engine,
        KioskDirectory(sessionmaker),
        monitor=SiteMonitors(settings),  # the seeded site's profile is the service's own
        alerts=AlertServiceSink(sessionmaker, LiveHub()),
    )

    async def alerts() -> list[tuple[str, str, int | None]]:
        async with sessionmaker() as session:
            rows = await session.scalars(select(Alert).where(Alert.kiosk_id == seeded.kiosk_id))
            return [(a.kind, a.state, a.compartment_id) for a in rows]

    cut_at = minute_ago(10)
    for i in range(0, 60, 10):  # held at 65 °C until the kiosk was cut off
        ingest.submit(
            seeded.kiosk_code, telemetry(cut_at - timedelta(seconds=60 - i), {1: 65.0, 2: 65.0})
        )
    back_at = cut_at + timedelta(minutes=5)
    ingest.submit(seeded.kiosk_code, telemetry(back_at, {1: 64.0, 2: 64.0}))  # live again first
    await ingest.flush()
    assert await alerts() == []

    for i in range(5):  # compartment 1 dipped in minutes 1 to 3; compartment 2 only by its mean
        low = 55.0 if 1 <= i <= 3 else 61.0
        bucket = kept(
            cut_at + timedelta(minutes=i), held(1, low, 62.0, 66.0), held(2, 60.5, 62.0, 63.0)
        )
        await ingest.store_minutes(seeded.kiosk_code, bucket)
    ids = seeded.compartment_ids
    assert await alerts() == [("below_floor", "open", ids[1])]
    async with sessionmaker() as session:
        alert = await session.scalar(select(Alert).where(Alert.kiosk_id == seeded.kiosk_id))
    assert alert is not None
    assert "below the 60 °C floor for 1 min (lowest 55.0 °C while the kiosk was cut off)" in (
        alert.message
    )
    ingest.submit(seeded.kiosk_code, telemetry(back_at + timedelta(seconds=10), {1: 64.0}))
    await ingest.flush()
    assert await alerts() == [("below_floor", "resolved", ids[1])]


class GatedSink:
    """A telemetry sink whose storing of a kept bucket waits until the test lets it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.stored: list[contract.TelemetryMinutes] = []

    def submit(self, kiosk_id: str, telemetry: contract.Telemetry) -> None:
        pass

    async def store_minutes(self, kiosk_id: str, minutes: contract.TelemetryMinutes) -> None:
        await self.release.wait()
        self.stored.append(minutes)

    async def flush(self) -> int:
        return 0


async def test_the_link_acknowledges_a_kept_bucket_only_once_it_is_stored() -> None:
    sink, acked = GatedSink(), []
    lanes = Lanes(
        RecordingHandler(),
        LivePublisher(LiveHub(), None),
        lambda delivery: acked.append(delivery.mid),
        LinkCounters(),
        telemetry=sink,
    )
    bucket = kept(minute_ago(3), held(1, 60.0, 61.0, 62.0))
    try:
        lanes.admit("k1", "minutes", bucket, Delivery(7, 1, object()))
        lanes.admit(
            "k1",
            "event",
            contract.Event(event_id="e1", type="door_opened"),
            Delivery(8, 1, object()),
        )
        deadline = time.monotonic() + 5
        while 8 not in acked:  # the door event is not held up behind the bucket
            assert time.monotonic() < deadline, "the event waited for the kept bucket"
            await asyncio.sleep(0.01)
        assert 7 not in acked and sink.stored == []
        sink.release.set()
        while 7 not in acked:
            assert time.monotonic() < deadline, "never acknowledged"
            await asyncio.sleep(0.01)
        assert sink.stored == [bucket]
    finally:
        await lanes.stop()


@pytest.mark.mosquitto
async def test_a_bucket_published_twice_through_the_broker_is_stored_once(
    engine: AsyncEngine, private_mosquitto: MosquittoProcess
) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    directory = KioskDirectory(sessionmaker)
    ingest = TelemetryIngest(engine, directory)
    link = KioskLink(
        LinkTestSettings(private_mosquitto.url), RecordingHandler(), LiveHub(), telemetry=ingest
    )
    await link.start()
    bridge = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"b-{uuid.uuid4().hex}")
    bridge.connect(private_mosquitto.host, private_mosquitto.port)
    bridge.loop_start()
    m = minute_ago(4)
    bucket = kept(m, held(3, 62.0, 63.0, 64.0))
    try:
        topic = contract.Topics(seeded.kiosk_code).telemetry_minutes
        for _ in range(2):
            bridge.publish(topic, bucket.to_json(), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        counters = ingest.counters
        while counters.kept_buckets_stored + counters.kept_buckets_repeated < 2:
            assert time.monotonic() < deadline, "the buckets never reached the ingest"
            await asyncio.sleep(0.02)
        assert (counters.kept_buckets_stored, counters.kept_buckets_repeated) == (1, 1)
        async with sessionmaker() as session:
            rows = await readings_between(session, seeded.kiosk_id, 3, m, m + timedelta(minutes=1))
        assert [(r.ts, r.temp_c) for r in rows] == [(m, 63.0)]
        assert link.counters.received.get("minutes") == 2
    finally:
        bridge.loop_stop()
        bridge.disconnect()
        await link.stop()
        await ingest.stop()


async def test_the_marks_of_stored_buckets_go_with_the_readings_past_retention(
    engine: AsyncEngine,
) -> None:
    from locker_service.telemetry.retention import RetentionLoop

    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    old, recent = minute_ago(40 * 24 * 60), minute_ago(24 * 60)
    for minute in (old, recent):
        await ingest.store_minutes(seeded.kiosk_code, kept(minute, held(1, 64.0, 65.0, 66.0)))
    await RetentionLoop(engine, retention_days=30).run_once(datetime.now(UTC))
    async with sessionmaker() as session:
        marks = (await session.scalars(select(TemperatureBacklogBucket.minute))).all()
    assert marks == [recent]
