"""Telemetry ingest benchmark: 1,000 simulated compartments publishing over MQTT into PostgreSQL.

Goal (issue 4): 20,000 readings/s sustained into PostgreSQL, publish-to-queryable p99 < 1 s.

What runs: a private Mosquitto; a fresh PostgreSQL database migrated with Alembic and seeded with
N kiosks; in this process the service's real path (KioskLink -> TelemetryIngest -> COPY, with the
hot-holding monitor on); in a child process the kiosks, publishing telemetry batches at a fixed
rate with the publish time as `ts`. Latency is measured per message as (committed - ts), i.e.
publish to queryable, on one machine clock.

Baselines measured in the same run:
- raw COPY: the same rows written straight to the table, no MQTT, no validation (the ceiling),
  and the same COPY with its minute rollups merged in the same transaction (what the service does;
  the difference is the rollups' cost);
- bare MQTT: publish to arrival in the link's callback, before validation (the floor of latency).

Rollup lag: the minutes are merged in the batch's own transaction, so a reading is in its minute
row the moment it is queryable; a sampler checks it while the run goes (the readings counted by
the minutes never differ from the rows stored) and the end checks that they add up exactly.

    python -m bench.service.telemetry_ingest [--compartments 1000] [--rate 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from sqlalchemy import func, select, text

from firmware_bridge import contract
from locker_service.db import create_engine, create_sessionmaker
from locker_service.kiosk_link import KioskLink
from locker_service.kiosk_link.directory import KioskDirectory
from locker_service.live import LiveHub
from locker_service.models import Compartment, Kiosk, Site, TemperatureMinute, TemperatureReading
from locker_service.telemetry.ingest import TelemetryIngest
from locker_service.telemetry.monitor import HoldingMonitor
from locker_service.telemetry.repository import ReadingRow, insert_readings
from migrations import upgrade_async
from tests.support.mosquitto import MosquittoProcess

PG_ADMIN_URL = os.environ.get("LOCKER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
COMPARTMENTS_PER_KIOSK = 40  # 25 kiosks of 40 make the 1,000 compartments of the goal


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


class BenchSettings:
    def __init__(self, url: str) -> None:
        self.mqtt_url = url
        self.mqtt_username: str | None = None
        self.mqtt_password: SecretStr | None = None
        self.mqtt_tls_ca: str | None = None
        self.mqtt_protocol = "auto"
        self.replica_id = f"bench-{uuid.uuid4().hex[:6]}"
        self.mqtt_keepalive_s = 30


class NoStory:
    async def on_status(self, kiosk_id: str, status: contract.KioskStatus) -> None:
        pass

    async def on_snapshot(self, kiosk_id: str, snap: contract.CompartmentSnapshot) -> None:
        pass

    async def on_event(self, kiosk_id: str, event: contract.Event) -> None:
        pass


def publish_kiosks(
    host: str, port: int, kiosks: list[str], per_kiosk: int, rate_hz: float, seconds: float
) -> None:
    """Child process: every kiosk sends one batch of its compartments `rate_hz` times a second."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    period_s = 1.0 / rate_hz
    start = time.monotonic()
    tick = 0
    while True:
        due = start + tick * period_s
        if due - start >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for kiosk in kiosks:
            now = datetime.now(UTC)
            readings = [
                {"n": n, "temp_c": 64.0 + (n + tick) % 3, "setpoint_c": 65.0, "heater": n % 2 == 0}
                for n in range(1, per_kiosk + 1)
            ]
            payload = contract.Telemetry(ts=now, readings=readings)  # type: ignore[arg-type]
            client.publish(f"lockers/v1/{kiosk}/telemetry", payload.to_json(), qos=0)
        tick += 1
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()


async def create_database() -> tuple[str, str]:
    import asyncpg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    name = f"locker_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(
        host=admin.host, port=admin.port or 5432, user=admin.username, database=admin.database
    )
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = admin.set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False), name


async def drop_database(name: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    conn = await asyncpg.connect(
        host=admin.host, port=admin.port or 5432, user=admin.username, database=admin.database
    )
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def run(compartments: int, rate_hz: float, seconds: float) -> dict[str, Any]:
    url, name = await create_database()
    broker = MosquittoProcess(extra_config="max_queued_messages 100000\n").start()
    engine = create_engine(url)
    try:
        await upgrade_async(url)
        sessionmaker = create_sessionmaker(engine)
        kiosk_count = max(1, compartments // COMPARTMENTS_PER_KIOSK)
        per_kiosk = compartments // kiosk_count
        tag = uuid.uuid4().hex[:6]
        codes = [f"bench-{tag}-{i:03d}" for i in range(kiosk_count)]
        async with sessionmaker() as session, session.begin():
            site = Site(code=f"bench-{tag}", name="Bench")
            session.add(site)
            await session.flush()
            kiosks = [Kiosk(site_id=site.id, code=c, name=c) for c in codes]
            session.add_all(kiosks)
            await session.flush()
            session.add_all(
                Compartment(kiosk_id=k.id, number=n, size="M")
                for k in kiosks
                for n in range(1, per_kiosk + 1)
            )
            kiosk_ids = [k.id for k in kiosks]

        # Baseline 1: raw COPY of the same amount of rows, in the same batch size (a flush
        # period's worth: every compartment's readings of 0.2 s), without and with the rollups.
        rows_per_s = compartments * rate_hz
        count = kiosk_count * per_kiosk

        def batch_at(ts: datetime) -> list[ReadingRow]:
            return [
                ReadingRow(kiosk_ids[c // per_kiosk], 1 + c % per_kiosk, ts, 65.0, 65.0, True)
                for i in range(int(rows_per_s * 0.2))
                for c in [i % count]
            ]

        async def copy_rate_of(rollups: bool) -> float:
            started = time.perf_counter()
            rows = 0
            while time.perf_counter() - started < 3.0:
                await insert_readings(engine, batch_at(datetime.now(UTC)), rollups=rollups)
                rows += int(rows_per_s * 0.2)
            return rows / (time.perf_counter() - started)

        copy_rate = await copy_rate_of(rollups=False)
        copy_rollup_rate = await copy_rate_of(rollups=True)
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE temperature_readings, temperature_minutes"))

        # The service path.
        lags: list[float] = []
        arrivals: list[float] = []
        directory = KioskDirectory(sessionmaker)
        ingest = TelemetryIngest(
            engine,
            directory,
            monitor=HoldingMonitor(floor_c=60, ceiling_c=80, grace_s=300),
            lag_observer=lags.append,
        )
        original_submit = ingest.submit

        def timed_submit(kiosk_id: str, telemetry: contract.Telemetry) -> None:
            arrivals.append((datetime.now(UTC) - telemetry.ts).total_seconds())
            original_submit(kiosk_id, telemetry)

        ingest.submit = timed_submit  # type: ignore[method-assign]
        await ingest.start()
        link = KioskLink(BenchSettings(broker.url), NoStory(), LiveHub(), telemetry=ingest)
        await link.start()

        # The sampler: readings counted by the minutes against rows stored, read in one snapshot.
        rollup_gaps: list[int] = []
        sampling = True

        async def sample() -> None:
            while sampling:
                snapshot = engine.execution_options(isolation_level="REPEATABLE READ")
                async with snapshot.connect() as conn:
                    minutes = await conn.scalar(
                        select(func.coalesce(func.sum(TemperatureMinute.readings), 0))
                    )
                    rows = await conn.scalar(select(func.count(TemperatureReading.id)))
                rollup_gaps.append(int(rows or 0) - int(minutes or 0))
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        publisher = multiprocessing.get_context("spawn").Process(
            target=publish_kiosks,
            args=(broker.host, broker.port, codes, per_kiosk, rate_hz, seconds),
        )
        started = time.perf_counter()
        publisher.start()
        await asyncio.to_thread(publisher.join)
        await asyncio.sleep(1.0)  # the last flush
        elapsed = time.perf_counter() - started
        sampling = False
        await sampler
        await link.stop()
        await ingest.stop()
        async with sessionmaker() as session:
            stored = int(await session.scalar(select(func.count(TemperatureReading.id))) or 0)
            rolled = int(
                await session.scalar(select(func.coalesce(func.sum(TemperatureMinute.readings), 0)))
                or 0
            )
            minute_rows = int(
                await session.scalar(select(func.count()).select_from(TemperatureMinute)) or 0
            )
        expected = round(seconds * rate_hz) * kiosk_count * per_kiosk
        return {
            "compartments": kiosk_count * per_kiosk,
            "kiosks": kiosk_count,
            "offered_rate": rows_per_s,
            "expected_rows": expected,
            "stored_rows": stored,
            "sustained_rate": stored / seconds,
            "elapsed_s": elapsed,
            "copy_rate": copy_rate,
            "copy_rollup_rate": copy_rollup_rate,
            "rolled_up": rolled,
            "minute_rows": minute_rows,
            "rollup_samples": len(rollup_gaps),
            "rollup_gap_max": max(rollup_gaps, default=0),
            "lag_p50": percentile(lags, 50),
            "lag_p99": percentile(lags, 99),
            "lag_max": max(lags) if lags else float("nan"),
            "mqtt_p50": percentile(arrivals, 50),
            "mqtt_p99": percentile(arrivals, 99),
            "batches": ingest.counters.batches,
            "dropped": ingest.counters.dropped_overflow,
        }
    finally:
        await engine.dispose()
        broker.__exit__(None, None, None)
        await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compartments", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="readings/s per compartment")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    r = asyncio.run(run(args.compartments, args.rate, args.seconds))
    print(
        f"telemetry ingest, {r['compartments']} compartments in {r['kiosks']} kiosks, "
        f"{r['offered_rate']:.0f} readings/s offered for {args.seconds:g} s "
        f"({os.cpu_count()} CPUs)"
    )
    print(f"  baseline raw COPY (no MQTT)     {r['copy_rate']:>10,.0f} readings/s")
    print(f"  raw COPY + minute rollups       {r['copy_rollup_rate']:>10,.0f} readings/s")
    print(
        f"  service path sustained          {r['sustained_rate']:>10,.0f} readings/s "
        f"({r['stored_rows']:,} of {r['expected_rows']:,} stored, {r['batches']} batches, "
        f"{r['dropped']} dropped)"
    )
    print(
        f"  publish -> queryable            p50 {r['lag_p50'] * 1000:7.1f} ms   "
        f"p99 {r['lag_p99'] * 1000:7.1f} ms   max {r['lag_max'] * 1000:7.1f} ms"
    )
    print(
        f"  baseline publish -> link (MQTT) p50 {r['mqtt_p50'] * 1000:7.1f} ms   "
        f"p99 {r['mqtt_p99'] * 1000:7.1f} ms"
    )
    print(
        f"  rollups                         {r['rolled_up']:,} readings in {r['minute_rows']:,} "
        f"minute rows; lag = publish -> queryable (same transaction); "
        f"{r['rollup_samples']} samples, largest gap {r['rollup_gap_max']} readings"
    )
    goal_rate = r["sustained_rate"] >= 20_000
    goal_lag = r["lag_p99"] < 1.0
    goal_rollups = r["rolled_up"] == r["stored_rows"] and r["rollup_gap_max"] == 0
    print(
        f"  goals: >= 20,000 readings/s {'met' if goal_rate else 'NOT met'}; "
        f"p99 < 1 s {'met' if goal_lag else 'NOT met'}; "
        f"rollups exact {'yes' if goal_rollups else 'NO'}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
