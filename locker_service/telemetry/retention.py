"""Old temperature readings go after `telemetry_retention_days`; their minute rollups stay for
`MINUTES_RETENTION_DAYS`.

1,000 compartments reporting every 5 s make 17 million rows a day; without pruning the table
grows without bound. On PostgreSQL the readings are partitioned by day (`partitions.py`): each
round makes the partitions of the days ahead, moves readings that waited in the default partition
into their day's partition, and drops whole partitions whose day ended before the cutoff. A
dropped partition costs a moment's lock, no row-by-row DELETE and no vacuum. So a reading lives
between `telemetry_retention_days` and a day more.

SQLite keeps the plain table: deletion goes in chunks, each its own short transaction, so it never
holds locks long enough to slow the ingest; several replicas pruning at once only share the work.
The minute rollups are pruned the same way on both, far less often relevant (a year and more).
The marks of the buckets bridges kept while cut off go with the readings they stand for.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from locker_service.background import BackgroundLoop
from locker_service.models import (
    TemperatureBacklogBucket,
    TemperatureMinute,
    TemperatureReading,
    utcnow,
)
from locker_service.telemetry import partitions

log = logging.getLogger(__name__)

PRUNE_CHUNK_ROWS = 20_000  # one chunk takes well under a second on either database
PRUNE_EVERY_S = 3600.0  # readings are kept for days: hourly pruning is precise enough
MINUTES_RETENTION_DAYS = 400.0  # a year of minutes and a month more, for year-on-year charts


async def prune_before(engine: AsyncEngine, cutoff: datetime) -> int:
    """SQLite: delete every reading older than `cutoff`; returns how many went."""
    total = 0
    while True:
        async with engine.begin() as connection:
            oldest = (
                select(TemperatureReading.id)
                .where(TemperatureReading.ts < cutoff)
                .limit(PRUNE_CHUNK_ROWS)
                .scalar_subquery()
            )
            result = await connection.execute(
                delete(TemperatureReading).where(TemperatureReading.id.in_(oldest))
            )
        deleted = int(getattr(result, "rowcount", 0) or 0)
        total += deleted
        if deleted < PRUNE_CHUNK_ROWS:
            return total
        await asyncio.sleep(0)  # let the ingest in between chunks


async def drop_partitions_before(engine: AsyncEngine, cutoff: datetime) -> list[datetime]:
    """PostgreSQL: give the default partition's readings their days' partitions, then drop the
    partitions of the days that ended before `cutoff`; returns the first instants of the days
    dropped."""
    await partitions.ensure_days(engine, await partitions.days_in_default(engine))
    dropped = await partitions.drop_days_before(engine, cutoff)
    return [partitions.day_bounds(day)[0] for day in dropped]


async def prune_minutes_before(engine: AsyncEngine, cutoff: datetime) -> int:
    """Delete the minute rollups older than `cutoff`, in chunks; returns how many went."""
    m = TemperatureMinute
    total = 0
    while True:
        async with engine.begin() as connection:
            oldest = select(m.kiosk_id, m.number, m.minute).where(m.minute < cutoff)
            result = await connection.execute(
                delete(m).where(
                    tuple_(m.kiosk_id, m.number, m.minute).in_(oldest.limit(PRUNE_CHUNK_ROWS))
                )
            )
        deleted = int(getattr(result, "rowcount", 0) or 0)
        total += deleted
        if deleted < PRUNE_CHUNK_ROWS:
            return total
        await asyncio.sleep(0)


async def prune_kept_buckets_before(engine: AsyncEngine, cutoff: datetime) -> int:
    """Forget which kept buckets were stored, for buckets older than `cutoff` (their readings
    are gone by then; a bridge re-sends a bucket only until it was acknowledged)."""
    b = TemperatureBacklogBucket
    async with engine.begin() as connection:
        result = await connection.execute(delete(b).where(b.minute < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


class RetentionLoop:
    def __init__(
        self,
        engine: AsyncEngine,
        retention_days: float,
        *,
        minutes_retention_days: float = MINUTES_RETENTION_DAYS,
    ) -> None:
        self._engine = engine
        self._retention = timedelta(days=retention_days)
        self._minutes_retention = timedelta(days=minutes_retention_days)
        self._loop = BackgroundLoop(
            "telemetry-retention",
            self._round,
            period_s=PRUNE_EVERY_S,
            log=log,
            failure="pruning temperature readings failed",
        )

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run_once(self, now: datetime) -> None:
        """One round at `now`: partitions ahead, old readings out, old minutes out."""
        cutoff = now - self._retention
        if self._engine.dialect.name == "postgresql":
            today = partitions.day_of(now)
            made = await partitions.ensure_days(self._engine, partitions.days_ahead(today))
            if made:
                log.info("made temperature partitions for %s", ", ".join(map(str, made)))
            dropped = await drop_partitions_before(self._engine, cutoff)
            if dropped:
                log.info("dropped temperature partitions of %d days", len(dropped))
        else:
            deleted = await prune_before(self._engine, cutoff)
            if deleted:
                log.info("pruned %d temperature readings", deleted)
        await prune_kept_buckets_before(self._engine, cutoff)
        minutes = await prune_minutes_before(self._engine, now - self._minutes_retention)
        if minutes:
            log.info("pruned %d temperature minutes", minutes)

    async def _round(self) -> bool:
        await self.run_once(utcnow())
        return False  # what is left is younger than the cutoff: look again next period
