"""temperature_readings on PostgreSQL: one partition per UTC day, made ahead and on demand.

The table is range-partitioned on `ts` (migration 0006). A day's partition is named
`temperature_readings_pYYYYMMDD` and holds [day 00:00, next day 00:00) UTC. A default partition,
`temperature_readings_default`, catches a reading whose day has no partition yet (a kiosk with a
wild clock, a partition dropped a moment ago), so an insert never fails for lack of one.

Partitions are made three ways: `PARTITIONS_AHEAD_DAYS` ahead by the retention loop; on demand by
the ingest before it copies a batch holding a day it has not seen; and, for a day whose readings
already sit in the default partition, by moving those rows into the new partition as it is
attached (PostgreSQL refuses to attach a range the default partition holds rows of). Every change
runs under one advisory lock, so replicas making the same day at once make it once.

Retention drops whole partitions whose day ended before the cutoff: no row-by-row DELETE, no
vacuum debt. SQLite keeps the plain table (see `retention.py`).

The day arithmetic is pure and tested directly; the DDL needs PostgreSQL.
"""

from __future__ import annotations

import logging
import re
import time as clock
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

PARENT = "temperature_readings"
DEFAULT_PARTITION = f"{PARENT}_default"
PARTITIONS_AHEAD_DAYS = 7  # a week of days made ahead: a retention loop down for days is noticed
PARTITION_LOCK_ID = 0x7E4D05  # arbitrary, fixed: the advisory lock of partition changes
# Dropping or attaching a partition needs a lock on the parent that queues the ingest's COPY
# behind it; give up after this rather than stall the ingest, and try again next round.
DDL_LOCK_TIMEOUT = "2s"
# After a failed attempt the ingest writes to the default partition for this long before trying
# again, rather than wait out the lock timeout on every batch.
RETRY_AFTER_FAILURE_S = 30.0
_NAME = re.compile(rf"^{PARENT}_p(\d{{8}})$")


def day_of(ts: datetime) -> date:
    """The UTC day a timestamp falls in."""
    return ts.astimezone(UTC).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a day's partition, in UTC."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def day_of_partition(name: str) -> date | None:
    """The day a partition holds, or None for the default (or a table not named by us)."""
    match = _NAME.match(name)
    return datetime.strptime(match.group(1), "%Y%m%d").date() if match else None


def days_ahead(today: date, ahead_days: int = PARTITIONS_AHEAD_DAYS) -> list[date]:
    """Today and the `ahead_days` days after it."""
    return [today + timedelta(days=i) for i in range(ahead_days + 1)]


def days_to_drop(days: Iterable[date], cutoff: datetime) -> list[date]:
    """The days whose partitions hold only readings older than `cutoff`: the day has ended by
    then. A day the cutoff falls inside is kept whole until the next day's round."""
    return sorted(day for day in days if day_bounds(day)[1] <= cutoff)


async def existing_days(connection: AsyncConnection) -> set[date]:
    rows = await connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    )
    return {day for (name,) in rows if (day := day_of_partition(name)) is not None}


async def _make_day(connection: AsyncConnection, day: date) -> int:
    """Create, fill from the default partition and attach one day's partition; returns the rows
    moved out of the default partition."""
    start, end = day_bounds(day)
    name = partition_name(day)
    # The default partition is locked first: no reading of this day can land in it between the
    # move and the attach, which would make the attach fail.
    await connection.execute(text(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE"))
    await connection.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING ALL)"))
    moved = await connection.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE ts >= :start AND ts < :end "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ),
        {"start": start, "end": end},
    )
    # Literal bounds: ATTACH takes no parameters. They come from a date, never from input.
    await connection.execute(
        text(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    )
    return int(getattr(moved, "rowcount", 0) or 0)


async def ensure_days(engine: AsyncEngine, days: Iterable[date]) -> list[date]:
    """Make the partitions of `days` that do not exist yet; returns the days made."""
    wanted = set(days)
    if not wanted:
        return []
    async with engine.begin() as connection:
        await connection.execute(text(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:id)"), {"id": PARTITION_LOCK_ID}
        )
        missing = sorted(wanted - await existing_days(connection))
        for day in missing:
            await _make_day(connection, day)
    return missing


async def days_in_default(engine: AsyncEngine) -> set[date]:
    """The days of the readings waiting in the default partition."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                f"SELECT DISTINCT date_trunc('day', ts AT TIME ZONE 'UTC') FROM {DEFAULT_PARTITION}"
            )
        )
        return {day.date() for (day,) in rows}


async def drop_days_before(engine: AsyncEngine, cutoff: datetime) -> list[date]:
    """Drop every partition whose day ended before `cutoff`; returns the days dropped."""
    async with engine.begin() as connection:
        await connection.execute(text(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:id)"), {"id": PARTITION_LOCK_ID}
        )
        old = days_to_drop(await existing_days(connection), cutoff)
        for day in old:
            await connection.execute(text(f"DROP TABLE {partition_name(day)}"))
    return old


class DayPartitions:
    """The ingest's memory of the days that have a partition, so a batch costs a set lookup and
    only a new day a round trip. A day dropped since is harmless: its rows go to the default."""

    def __init__(self) -> None:
        self._known: set[date] = set()
        self._retry_at = 0.0  # monotonic

    async def cover(self, engine: AsyncEngine, days: Iterable[date]) -> None:
        """Make the partitions of `days` not known yet. Best effort: if it fails (a lock held
        past the timeout, say), the batch is written all the same, into the default partition,
        and the retention round gives those rows their day later."""
        new = set(days) - self._known
        if not new or clock.monotonic() < self._retry_at:
            return
        try:
            await ensure_days(engine, new)
        except Exception:
            self._retry_at = clock.monotonic() + RETRY_AFTER_FAILURE_S
            log.exception("could not make temperature partitions for %s", sorted(new))
            return
        self._known |= new
