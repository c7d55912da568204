"""Food check benchmark: what looking for readings received late costs each order's check.

Every `LOCKER_FOOD_CHECK_S` the timer loop folds a held order's new readings into its watch.
Since ADR 0101 it first counts the compartment's stored timestamps up to the last reading it
folded: more than it folded means some came late (a kiosk's telemetry sent again after a
takeover, ADR 0098), and the food's record is folded again from the drop-off.

What runs: a fresh PostgreSQL database migrated with Alembic; 100 kiosks x 12 compartments,
each with a reading every 10 s for the last 4 hours (the built-in profiles' limit:
1,728,000 readings); then, for compartments picked across the fleet, each timed in the same
run:

- new readings (the baseline): the check's own read of the minute since its last reading, and
  their fold, as every check did before;
- late count: the count of the 4 hours' distinct timestamps that every check adds;
- fold again: the 4 hours' readings read and folded from the start, what a check does once
  after late readings are stored.

    python -m bench.foodsafety.food_check [--kiosks 100] [--compartments 12] [--checks 500]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bench.service.telemetry_ingest import create_database, drop_database
from locker_service.db import create_engine, create_sessionmaker, session_scope
from locker_service.foodsafety import watch
from locker_service.foodsafety.profiles import BUILT_IN
from locker_service.models import Kiosk
from locker_service.sites import service as admin
from locker_service.telemetry import repository as telemetry
from locker_service.telemetry.partitions import DayPartitions, day_of
from migrations import upgrade_async

HELD = timedelta(hours=4)
EVERY_S = 10
CHECK = timedelta(minutes=1)


async def seed(url: str, kiosks: int, compartments: int, now: datetime) -> list[int]:
    engine = create_engine(url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            await admin.create_site(session, "bench", "Bench Tower")
            for k in range(1, kiosks + 1):
                await admin.create_kiosk(
                    session, "bench", f"k{k:03d}", f"Kiosk {k}", f"M:{compartments}"
                )
        # The partitions of the days the 4 hours touch (the migration makes today's on).
        await DayPartitions().cover(engine, {day_of(now - HELD), day_of(now)})
        async with engine.begin() as c:
            steps = int(HELD.total_seconds()) // EVERY_S
            await hot_readings(c, now - HELD, compartments, steps)  # the oldest 4 h ago
            await c.execute(text("ANALYZE temperature_readings"))
        async with engine.connect() as c:
            return list((await c.execute(select(Kiosk.id).order_by(Kiosk.id))).scalars())
    finally:
        await engine.dispose()


async def hot_readings(c: AsyncConnection, start: datetime, compartments: int, steps: int) -> None:
    """Readings around 64 °C every `EVERY_S` from `start`, for compartments 1 to
    `compartments` of every kiosk: `steps` each."""
    await c.execute(
        text(
            "INSERT INTO temperature_readings (kiosk_id, number, ts, temp_c, setpoint_c, "
            "heater) SELECT k.id, n, CAST(:start AS timestamptz) + make_interval(secs => "
            "s * :every), 63.5 + (s % 7) * 0.2, 65.0, s % 2 = 0 "
            "FROM kiosks k, generate_series(1, :c) n, generate_series(0, :steps - 1) s"
        ),
        {"start": start, "every": EVERY_S, "c": compartments, "steps": steps},
    )


async def run(kiosks: int, compartments: int, checks: int) -> dict[str, list[float]]:
    url, name = await create_database()
    try:
        await upgrade_async(url)
        now = datetime.now(UTC).replace(microsecond=0)
        ids = await seed(url, kiosks, compartments, now)
        rules = BUILT_IN["us-fda"]
        deposited = now - HELD
        engine = create_engine(url)
        sessionmaker = create_sessionmaker(engine)
        last = now - CHECK  # the previous check folded up to a minute ago

        async def new_readings(session: AsyncSession, kiosk: int, number: int) -> None:
            rows = await telemetry.readings_between(session, kiosk, number, last, now)
            watch.fold(watch.Watch(last_ts=last), rules, ((r.ts, r.temp_c) for r in rows))

        async def late_count(session: AsyncSession, kiosk: int, number: int) -> None:
            stamps = await telemetry.stamps_after(session, kiosk, number, deposited, last)
            assert stamps == (last - deposited) // timedelta(seconds=EVERY_S)  # none came late

        async def fold_again(session: AsyncSession, kiosk: int, number: int) -> None:
            rows = await telemetry.readings_between(session, kiosk, number, deposited, now)
            seen = watch.Watch(last_ts=deposited)
            assert watch.fold(seen, rules, ((r.ts, r.temp_c) for r in rows)) is None

        steps = {"new readings": new_readings, "late count": late_count, "fold again": fold_again}
        timings: dict[str, list[float]] = {name: [] for name in steps}
        picks = random.Random(7)
        try:
            for _ in range(checks):
                # Each step on a compartment of its own, in a shuffled order: none reads an
                # index range another step has just brought into the cache.
                order = list(steps)
                picks.shuffle(order)
                for name in order:
                    kiosk, number = picks.choice(ids), picks.randint(1, compartments)
                    async with sessionmaker() as session:
                        started = time.perf_counter()
                        await steps[name](session, kiosk, number)
                        timings[name].append(time.perf_counter() - started)
        finally:
            await engine.dispose()
        return timings
    finally:
        await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kiosks", type=int, default=100)
    parser.add_argument("--compartments", type=int, default=12)
    parser.add_argument("--checks", type=int, default=500)
    args = parser.parse_args()
    timings = asyncio.run(run(args.kiosks, args.compartments, args.checks))
    readings = int(HELD.total_seconds()) // EVERY_S
    print(
        f"{args.kiosks} kiosks x {args.compartments} compartments, {readings} readings each "
        f"(4 h at {EVERY_S} s), {args.checks} checks of compartments picked at random"
    )
    base = statistics.mean(timings["new readings"])
    for what, values in timings.items():
        values.sort()
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        mean = statistics.mean(values)
        print(
            f"  {what:<13} mean {mean * 1000:7.2f} ms  p50 {values[len(values) // 2] * 1000:7.2f}"
            f" ms  p99 {p99 * 1000:7.2f} ms  ({mean / base:.1f}x the baseline)"
        )


if __name__ == "__main__":
    main()
