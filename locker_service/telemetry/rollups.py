"""Per-minute rollups of temperature readings: pure code, no I/O.

A batch of readings is folded into one `MinuteRollup` per (kiosk, compartment, minute), which the
repository merges into temperature_minutes in the same transaction as the batch's raw rows. So a
minute's row always accounts for exactly the readings stored: a batch that failed stored neither,
a restart mid-minute only adds the next batches to the same row, and merging is exact because the
row keeps sums and counts (min of mins, max of maxes, sum of sums), never a mean of means.
Buckets a bridge kept while cut off (`contract.TelemetryMinutes`) come already folded: their
rollups carry the bucket's own min, max and counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from firmware_bridge import contract


class ReadingRow(NamedTuple):
    """One reading as stored, in READING_COLUMNS order (what COPY takes)."""

    kiosk_id: int
    number: int
    ts: datetime
    temp_c: float | None
    setpoint_c: float | None
    heater: bool


def minute_of(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


@dataclass(slots=True)
class MinuteRollup:
    kiosk_id: int
    number: int
    minute: datetime
    temp_min_c: float | None = None
    temp_max_c: float | None = None
    temp_sum_c: float = 0.0
    temp_count: int = 0
    readings: int = 0
    heater_on: int = 0
    setpoint_c: float | None = None

    @property
    def temp_mean_c(self) -> float | None:
        return self.temp_sum_c / self.temp_count if self.temp_count else None

    @property
    def heater_share(self) -> float:
        return self.heater_on / self.readings if self.readings else 0.0

    def add(self, temp_c: float | None, setpoint_c: float | None, heater: bool) -> None:
        self.readings += 1
        self.heater_on += heater
        if temp_c is not None:
            self.temp_count += 1
            self.temp_sum_c += temp_c
            self.temp_min_c = temp_c if self.temp_min_c is None else min(self.temp_min_c, temp_c)
            self.temp_max_c = temp_c if self.temp_max_c is None else max(self.temp_max_c, temp_c)
        if setpoint_c is not None:
            self.setpoint_c = (
                setpoint_c if self.setpoint_c is None else max(self.setpoint_c, setpoint_c)
            )


def roll_up(rows: Iterable[ReadingRow]) -> list[MinuteRollup]:
    """One rollup per (kiosk, compartment, minute) of `rows`, in key order: concurrent writers
    that merge the same keys then lock them in the same order and cannot deadlock."""
    minutes: dict[tuple[int, int, datetime], MinuteRollup] = {}
    # The readings of one message share its timestamp: its minute is worked out once.
    last_ts: datetime | None = None
    minute = datetime.min
    for row in rows:
        if row.ts is not last_ts:
            last_ts, minute = row.ts, minute_of(row.ts)
        key = (row.kiosk_id, row.number, minute)
        rollup = minutes.get(key)
        if rollup is None:
            rollup = minutes[key] = MinuteRollup(*key)
        rollup.add(row.temp_c, row.setpoint_c, row.heater)
    return [minutes[key] for key in sorted(minutes)]


def kept_bucket_rows(
    kiosk_id: int, bucket: contract.TelemetryMinutes
) -> tuple[list[ReadingRow], list[MinuteRollup]]:
    """A bucket a bridge kept while cut off, as stored: one reading per compartment at the
    bucket's start with its mean (so the record has no hole), and the minute rollups with its
    real min, max, sum and counts. A 60 s bucket starts on the minute and is that minute; a
    narrower one (a kiosk run with a time scale) adds to the minute it starts in."""
    start = bucket.minute.astimezone(UTC)
    minute = minute_of(start)
    rows: list[ReadingRow] = []
    minutes: list[MinuteRollup] = []
    for r in sorted(bucket.readings, key=lambda r: r.n):
        readings = r.count + r.faulted
        rows.append(
            ReadingRow(kiosk_id, r.n, start, r.mean_c, r.setpoint_c, 2 * r.heater_on > readings)
        )
        minutes.append(
            MinuteRollup(
                kiosk_id,
                r.n,
                minute,
                temp_min_c=r.min_c,
                temp_max_c=r.max_c,
                temp_sum_c=(r.mean_c or 0.0) * r.count,
                temp_count=r.count,
                readings=readings,
                heater_on=r.heater_on,
                setpoint_c=r.setpoint_c,
            )
        )
    return rows, minutes
