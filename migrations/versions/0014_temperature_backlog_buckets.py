"""temperature_backlog_buckets: which buckets of kept telemetry a kiosk's bridge sent are stored

A bridge cut off from the service keeps its readings folded into buckets and sends each once it
is back (`telemetry/minutes`, QoS 1, at least once). One row per bucket stored, written in the
same transaction as the bucket's readings and minutes: a bucket that comes again finds its row
and is not stored twice.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "temperature_backlog_buckets",
        sa.Column("kiosk_id", sa.Integer(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["kiosk_id"], ["kiosks.id"], name=op.f("fk_temperature_backlog_buckets_kiosk_id_kiosks")
        ),
        sa.PrimaryKeyConstraint(
            "kiosk_id", "minute", "seconds", name=op.f("pk_temperature_backlog_buckets")
        ),
    )


def downgrade() -> None:
    op.drop_table("temperature_backlog_buckets")
