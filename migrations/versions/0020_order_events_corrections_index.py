"""order_events: an index of the outcomes corrected (picked up before the end), by time

A HACCP day records the corrections made within it (ADR 0118); they are a few rows among every
order's events, found by a partial index instead of a scan.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CORRECTED = sa.text("action = 'picked_up_before_end'")


def upgrade() -> None:
    op.create_index(
        "ix_order_events_corrections",
        "order_events",
        ["at"],
        sqlite_where=CORRECTED,
        postgresql_where=CORRECTED,
    )


def downgrade() -> None:
    op.drop_index("ix_order_events_corrections", table_name="order_events")
