"""A fleet seen at once by the kiosk directory (ADR 0125): every kiosk's status and a snapshot
per compartment, each asking "which kiosk and site is this", all at once, as when a replica
starts, takes the kiosks over or its broker comes back.

In one run, against one fresh PostgreSQL database holding `--kiosks` kiosks:
- baseline: each lookup not in the cache is its own query (the directory before ADR 0125),
  through the service's pool (10 connections and 20 beyond at its defaults; `--pool`);
- the directory: lookups waiting together are one query per 500 kiosks, each kiosk once.

Printed for each: the wall time until every lookup is answered, the queries sent, the lookups
that failed (a pool timeout after 30 s: a live update lost) and this process's CPU.

    python -m bench.fleet.directory [--kiosks 10000] [--messages 13] [--pool 10,20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import event, insert, select

from bench.service.telemetry_ingest import create_database, drop_database
from locker_service.db import create_engine, create_sessionmaker
from locker_service.kiosk_link.directory import KioskDirectory, KioskRef
from locker_service.models import Kiosk, Site
from migrations import upgrade_async


class OneQueryEach:
    """The baseline: a cache, and one query for each lookup it does not answer."""

    def __init__(self, sessionmaker: Any) -> None:
        self._sessionmaker = sessionmaker
        self._cache: dict[str, KioskRef | None] = {}

    async def lookup(self, code: str) -> KioskRef | None:
        if code in self._cache:
            return self._cache[code]
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    select(Kiosk.id, Kiosk.site_id, Site.food_safety_profile)
                    .join(Site, Site.id == Kiosk.site_id)
                    .where(Kiosk.code == code)
                )
            ).first()
        ref = KioskRef(row.id, row.site_id, row.food_safety_profile) if row else None
        self._cache[code] = ref
        return ref


async def measure(
    name: str, lookup: Callable[[str], Awaitable[Any]], codes: list[str], queries: list[int]
) -> None:
    queries[0] = 0
    cpu, wall = time.process_time(), time.perf_counter()
    answers = await asyncio.gather(*(lookup(code) for code in codes), return_exceptions=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    failed = sum(isinstance(a, BaseException) for a in answers)
    found = sum(isinstance(a, KioskRef) for a in answers)
    print(
        f"{name:<22} {wall:8.2f} s {queries[0]:9,} queries {failed:8,} failed "
        f"{found:9,} answered  CPU {cpu:6.2f} s"
    )


async def run(kiosks: int, messages: int, pool: tuple[int, int]) -> None:
    url, name = await create_database()
    engine = create_engine(url, pool_size=pool[0], max_overflow=pool[1])
    try:
        await upgrade_async(url)
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            sites = [Site(code=f"site-{i}", name=f"Site {i}") for i in range(kiosks // 100 + 1)]
            session.add_all(sites)
            await session.flush()
            await session.execute(
                insert(Kiosk),
                [
                    {"site_id": sites[i // 100].id, "code": f"kiosk-{i:05d}", "name": f"K{i}"}
                    for i in range(kiosks)
                ],
            )
        queries = [0]

        def count(*_args: Any) -> None:
            queries[0] += 1

        event.listen(engine.sync_engine, "before_cursor_execute", count)
        # Each kiosk's status and snapshots, interleaved as a fleet connecting sends them.
        codes = [f"kiosk-{i:05d}" for _ in range(messages) for i in range(kiosks)]
        print(
            f"{kiosks:,} kiosks x {messages} messages = {len(codes):,} lookups at once; "
            f"pool {pool[0]} + {pool[1]}"
        )
        await measure("one query each", OneQueryEach(sessionmaker).lookup, codes, queries)
        await measure("directory", KioskDirectory(sessionmaker).lookup, codes, queries)
    finally:
        await engine.dispose()
        await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiosks", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=13, help="per kiosk: status + 12")
    parser.add_argument("--pool", default="10,20", help="pool size, overflow (the defaults)")
    args = parser.parse_args()
    size, overflow = (int(part) for part in args.pool.split(","))
    asyncio.run(run(args.kiosks, args.messages, (size, overflow)))


if __name__ == "__main__":
    main()
