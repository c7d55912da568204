"""Old temperature readings are deleted after `telemetry_retention_days`.

1,000 compartments reporting every 5 s make 17 million rows a day; without pruning the table
grows without bound. Deletion goes in chunks, each its own short transaction, so it never holds
locks long enough to slow the ingest; several replicas pruning at once only share the work.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from locker_service.background import BackgroundLoop
from locker_service.models import TemperatureReading, utcnow

log = logging.getLogger(__name__)

PRUNE_CHUNK_ROWS = 20_000  # one chunk takes well under a second on either database
PRUNE_EVERY_S = 3600.0  # readings are kept for days: hourly pruning is precise enough


async def prune_before(engine: AsyncEngine, cutoff: datetime) -> int:
    """Delete every reading older than `cutoff`; returns how many went."""
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


class RetentionLoop:
    def __init__(self, engine: AsyncEngine, retention_days: float) -> None:
        self._engine = engine
        self._retention = timedelta(days=retention_days)
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

    async def _round(self) -> bool:
        deleted = await prune_before(self._engine, utcnow() - self._retention)
        if deleted:
            log.info("pruned %d temperature readings", deleted)
        return False  # what is left is younger than the cutoff: look again next period
