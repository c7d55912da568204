"""temperature_readings partitioned by day (PostgreSQL); temperature_minutes rollups (both)

PostgreSQL: the plain table is renamed aside, a table range-partitioned on `ts` takes its name
(primary key (id, ts): a partitioned table's keys must hold the partition key), with the same
sequence for `id`, a default partition, and one partition per day from the oldest reading's day
to a week ahead; the rows are copied over and the old table dropped. The minutes of the rows kept
are rolled up into temperature_minutes, so the long-range chart has the history from the start.
SQLite keeps the plain table and only gains temperature_minutes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AHEAD_DAYS = 7  # as locker_service.telemetry.partitions.PARTITIONS_AHEAD_DAYS at this revision

ROLLUP_SELECT = """
SELECT kiosk_id, number, {minute} AS minute,
       min(temp_c), max(temp_c), coalesce(sum(temp_c), 0), count(temp_c), count(*),
       sum(CASE WHEN heater THEN 1 ELSE 0 END), max(setpoint_c)
FROM temperature_readings GROUP BY kiosk_id, number, {minute}
"""
ROLLUP_COLUMNS = (
    "kiosk_id, number, minute, temp_min_c, temp_max_c, temp_sum_c, temp_count, readings, "
    "heater_on, setpoint_c"
)


def _bounds(day: date) -> tuple[str, str]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start.isoformat(), (start + timedelta(days=1)).isoformat()


def _partition_readings() -> None:
    op.execute("ALTER TABLE temperature_readings RENAME TO temperature_readings_unpartitioned")
    op.execute(
        "ALTER TABLE temperature_readings_unpartitioned "
        "RENAME CONSTRAINT pk_temperature_readings TO pk_temperature_readings_unpartitioned"
    )
    op.execute(
        "ALTER TABLE temperature_readings_unpartitioned RENAME CONSTRAINT "
        "fk_temperature_readings_kiosk_id_kiosks TO fk_temperature_readings_unpartitioned_kiosk"
    )
    op.execute(
        "ALTER INDEX ix_temperature_readings_kiosk_number_ts "
        "RENAME TO ix_temperature_readings_unpartitioned"
    )
    op.execute(
        """
        CREATE TABLE temperature_readings (
            id BIGINT NOT NULL DEFAULT nextval('temperature_readings_id_seq'),
            kiosk_id INTEGER NOT NULL,
            number INTEGER NOT NULL,
            ts TIMESTAMP WITH TIME ZONE NOT NULL,
            temp_c DOUBLE PRECISION,
            setpoint_c DOUBLE PRECISION,
            heater BOOLEAN NOT NULL,
            CONSTRAINT pk_temperature_readings PRIMARY KEY (id, ts),
            CONSTRAINT fk_temperature_readings_kiosk_id_kiosks
                FOREIGN KEY (kiosk_id) REFERENCES kiosks (id)
        ) PARTITION BY RANGE (ts)
        """
    )
    op.execute("ALTER SEQUENCE temperature_readings_id_seq OWNED BY temperature_readings.id")
    op.execute(
        "CREATE INDEX ix_temperature_readings_kiosk_number_ts "
        "ON temperature_readings (kiosk_id, number, ts)"
    )
    op.execute(
        "CREATE TABLE temperature_readings_default PARTITION OF temperature_readings DEFAULT"
    )
    bind = op.get_bind()
    oldest = bind.execute(
        sa.text("SELECT min(ts) FROM temperature_readings_unpartitioned")
    ).scalar_one()
    today = datetime.now(UTC).date()
    first = min(oldest.astimezone(UTC).date(), today) if oldest is not None else today
    day = first
    while day <= today + timedelta(days=AHEAD_DAYS):
        start, end = _bounds(day)
        op.execute(
            f"CREATE TABLE temperature_readings_p{day:%Y%m%d} PARTITION OF temperature_readings "
            f"FOR VALUES FROM ('{start}') TO ('{end}')"
        )
        day += timedelta(days=1)
    op.execute(
        "INSERT INTO temperature_readings (id, kiosk_id, number, ts, temp_c, setpoint_c, heater) "
        "SELECT id, kiosk_id, number, ts, temp_c, setpoint_c, heater "
        "FROM temperature_readings_unpartitioned"
    )
    op.execute("DROP TABLE temperature_readings_unpartitioned")


def upgrade() -> None:
    op.create_table(
        "temperature_minutes",
        sa.Column("kiosk_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("temp_min_c", sa.Double(), nullable=True),
        sa.Column("temp_max_c", sa.Double(), nullable=True),
        sa.Column("temp_sum_c", sa.Double(), nullable=False),
        sa.Column("temp_count", sa.Integer(), nullable=False),
        sa.Column("readings", sa.Integer(), nullable=False),
        sa.Column("heater_on", sa.Integer(), nullable=False),
        sa.Column("setpoint_c", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["kiosk_id"], ["kiosks.id"], name=op.f("fk_temperature_minutes_kiosk_id_kiosks")
        ),
        sa.PrimaryKeyConstraint(
            "kiosk_id", "number", "minute", name=op.f("pk_temperature_minutes")
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        # A minute's row is rewritten with every batch while its minute lasts (some 300 times at
        # a flush every 0.2 s): room left on each page keeps those updates HOT, on the same page
        # and without a new index entry each.
        op.execute("ALTER TABLE temperature_minutes SET (fillfactor = 50)")
        _partition_readings()
        minute = "date_trunc('minute', ts)"
    else:
        # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff': the minute is the same text, seconds zeroed.
        minute = "strftime('%Y-%m-%d %H:%M:00.000000', ts)"
    op.execute(
        f"INSERT INTO temperature_minutes ({ROLLUP_COLUMNS}) " + ROLLUP_SELECT.format(minute=minute)
    )


def downgrade() -> None:
    op.drop_table("temperature_minutes")
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE temperature_readings RENAME TO temperature_readings_partitioned")
    op.execute(
        "ALTER TABLE temperature_readings_partitioned "
        "RENAME CONSTRAINT pk_temperature_readings TO pk_temperature_readings_partitioned"
    )
    op.execute(
        "ALTER TABLE temperature_readings_partitioned RENAME CONSTRAINT "
        "fk_temperature_readings_kiosk_id_kiosks TO fk_temperature_readings_partitioned_kiosk"
    )
    op.execute(
        "ALTER INDEX ix_temperature_readings_kiosk_number_ts "
        "RENAME TO ix_temperature_readings_partitioned"
    )
    op.execute(
        """
        CREATE TABLE temperature_readings (
            id BIGINT NOT NULL DEFAULT nextval('temperature_readings_id_seq'),
            kiosk_id INTEGER NOT NULL,
            number INTEGER NOT NULL,
            ts TIMESTAMP WITH TIME ZONE NOT NULL,
            temp_c DOUBLE PRECISION,
            setpoint_c DOUBLE PRECISION,
            heater BOOLEAN NOT NULL,
            CONSTRAINT pk_temperature_readings PRIMARY KEY (id),
            CONSTRAINT fk_temperature_readings_kiosk_id_kiosks
                FOREIGN KEY (kiosk_id) REFERENCES kiosks (id)
        )
        """
    )
    op.execute("ALTER SEQUENCE temperature_readings_id_seq OWNED BY temperature_readings.id")
    op.execute(
        "CREATE INDEX ix_temperature_readings_kiosk_number_ts "
        "ON temperature_readings (kiosk_id, number, ts)"
    )
    op.execute(
        "INSERT INTO temperature_readings SELECT id, kiosk_id, number, ts, temp_c, setpoint_c, "
        "heater FROM temperature_readings_partitioned"
    )
    op.execute("DROP TABLE temperature_readings_partitioned")
