"""HACCP day benchmark: one site's day of 100 kiosks x 12 compartments, a reading every 10 s.

Goal (issue 12): the day built and exported in under 10 s, and under 3x the time to read the
same rows raw.

What runs: a fresh PostgreSQL database migrated with Alembic; one site (UTC) with the kiosks
and compartments; yesterday's minute rollups of every compartment (6 readings a minute, as a
reading every 10 s leaves them: 1,728,000 minutes), made in the database with
generate_series; then, each timed in the same run:

- raw read (the baseline): the same minutes read with one SELECT through the driver (asyncpg),
  nothing done with them;
- build: `haccp.service.gather` (every section) and the day's text;
- seal and export: the seal and the export file's text (what the CSV download sends);
- PDF: one kiosk's day (17,280 minutes, as an inspector would print it), with its page count.

The rollups' own pace under ingest (20,000 readings/s) is `bench.service.telemetry_ingest`'s
"COPY with rollups" figure: the minutes are merged in each batch's transaction.

    python -m bench.foodsafety.haccp_day [--kiosks 100] [--compartments 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from datetime import date, datetime, timedelta
from datetime import time as day_time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text

from bench.service.telemetry_ingest import create_database, drop_database
from locker_service.config import Settings
from locker_service.db import create_engine, create_sessionmaker, session_scope
from locker_service.haccp import pdf, service
from locker_service.haccp.record import SealedDay, export_text, seal
from locker_service.models import Kiosk, Site
from locker_service.sites import service as admin
from migrations import upgrade_async

UTC = ZoneInfo("UTC")


async def seed(url: str, kiosks: int, compartments: int, day: date) -> int:
    engine = create_engine(url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            site = await admin.create_site(session, "bench", "Bench Tower")
            for k in range(1, kiosks + 1):
                await admin.create_kiosk(
                    session, "bench", f"k{k:03d}", f"Kiosk {k}", f"M:{compartments}"
                )
            site_id = site.id
        async with engine.begin() as c:
            start = datetime.combine(day, day_time(), UTC)
            # Six readings a minute around 64.5 °C, a dip below the floor now and then.
            await c.execute(
                text(
                    "INSERT INTO temperature_minutes (kiosk_id, number, minute, temp_min_c, "
                    "temp_max_c, temp_sum_c, temp_count, readings, heater_on, setpoint_c) "
                    "SELECT k.id, n, CAST(:start AS timestamptz) + make_interval(mins => m), "
                    "64.0 - (CASE WHEN m % 997 = 0 THEN 5 ELSE 0 END), 65.1, 6 * 64.5, "
                    "6, 6, 3, 65.0 "
                    "FROM kiosks k, generate_series(1, :c) n, generate_series(0, 1439) m "
                    "WHERE k.site_id = :site"
                ),
                {"site": site_id, "c": compartments, "start": start},
            )
            await c.execute(text("ANALYZE temperature_minutes"))
        return int(site_id)
    finally:
        await engine.dispose()


def timed(results: dict[str, list[float]], name: str, started: float) -> None:
    results.setdefault(name, []).append(time.perf_counter() - started)


async def run(kiosks: int, compartments: int, repeat: int) -> dict[str, Any]:
    url, name = await create_database()
    day = date.today() - timedelta(days=1)
    try:
        await upgrade_async(url)
        t = time.perf_counter()
        site_id = await seed(url, kiosks, compartments, day)
        seeded_s = time.perf_counter() - t
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        settings = Settings(database_url=url, secret_key="bench-" + "x" * 40)
        results: dict[str, list[float]] = {}
        bounds = service.Bounds.of(day, UTC)
        async with sessions() as session:
            kiosk_ids = list(
                await session.scalars(select(Kiosk.id).where(Kiosk.site_id == site_id))
            )
        rows = lines = 0
        size = 0
        for _ in range(repeat):
            async with sessions() as session:
                # The baseline: the same rows straight from the driver, nothing done with them.
                connection = await session.connection()
                driver = (await connection.get_raw_connection()).driver_connection
                assert driver is not None
                t = time.perf_counter()
                raw = await driver.fetch(
                    "SELECT kiosk_id, number, minute, temp_min_c, temp_max_c, temp_sum_c, "
                    "temp_count, setpoint_c, readings FROM temperature_minutes "
                    "WHERE kiosk_id = ANY($1::int[]) AND minute >= $2 AND minute < $3 "
                    "ORDER BY kiosk_id, number, minute",
                    kiosk_ids,
                    bounds.start,
                    bounds.end,
                )
                timed(results, "raw read", t)
                rows = len(raw)
                del raw
            async with sessions() as session:
                site = await session.get(Site, site_id)
                assert site is not None
                t = time.perf_counter()
                record = await service.gather(session, settings, site, day)
                day_text = record.text()
                timed(results, "build", t)
                t = time.perf_counter()
                sealed = SealedDay(day, day_text, "0" * 64, seal("0" * 64, day_text))
                exported = export_text([sealed])
                timed(results, "seal + export", t)
                lines, size = day_text.count("\n"), len(exported.encode())
                del record, day_text, exported
        # One kiosk's day as a PDF: an inspector prints a kiosk, not a whole tower at once.
        one = (
            "\n".join(
                line
                for line in sealed.text.splitlines()
                if ",k001," in line or not line.startswith("reading,")
            )
            + "\n"
        )
        t = time.perf_counter()
        document = pdf.render(
            "Bench Tower", [SealedDay(day, one, sealed.prev, seal(sealed.prev, one))]
        )
        pdf_s = time.perf_counter() - t
        await engine.dispose()
        return {
            "rows": rows,
            "lines": lines,
            "mb": size / 1e6,
            "seeded_s": seeded_s,
            "results": results,
            "pdf_s": pdf_s,
            "pdf_kb": len(document) / 1e3,
            "pdf_pages": document.count(b"/Type /Page") - document.count(b"/Type /Pages"),
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    finally:
        await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kiosks", type=int, default=100)
    parser.add_argument("--compartments", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out = asyncio.run(run(args.kiosks, args.compartments, args.repeat))
    r = out["results"]
    med = {k: statistics.median(v) for k, v in r.items()}
    total = med["build"] + med["seal + export"]
    print(
        f"HACCP day: {args.kiosks} kiosks x {args.compartments} compartments, "
        f"{out['rows']:,} minutes ({out['lines']:,} lines, {out['mb']:.0f} MB of CSV); "
        f"seeded in {out['seeded_s']:.1f} s; median of {args.repeat}"
    )
    for name, values in r.items():
        print(f"  {name:14s} {med[name]:6.2f} s   (runs: {', '.join(f'{v:.2f}' for v in values)})")
    print(
        f"  built and exported in {total:.2f} s (goal < 10 s) = {total / med['raw read']:.2f}x "
        f"the raw read (goal < 3x)"
    )
    print(
        f"  one kiosk's day as PDF: {out['pdf_s']:.2f} s, {out['pdf_pages']} pages, "
        f"{out['pdf_kb']:.0f} kB; peak memory {out['maxrss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
