"""disinfection_cycles: when the board first showed a hold cycle running

The cycle watchdog completes a hold cycle from an idle snapshot only if the board showed that
cycle running (its start event, a snapshot with the lamp on, or its completion): the same
snapshot is what a start that never reached the board looks like (ADR 0113).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("disinfection_cycles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
    # A hold cycle running at the upgrade whose order the board's word moved to `disinfecting`
    # since the cycle began was shown running (perhaps by a snapshot with the lamp on, which
    # left no other trace); one run again after an abort keeps its order's older move.
    op.execute(
        "UPDATE disinfection_cycles SET confirmed_at = started_at "
        "WHERE state = 'running' AND kind = 'hold' AND EXISTS (SELECT 1 FROM orders "
        "WHERE orders.id = disinfection_cycles.order_id AND orders.state = 'disinfecting' "
        "AND orders.disinfecting_at >= disinfection_cycles.started_at)"
    )


def downgrade() -> None:
    with op.batch_alter_table("disinfection_cycles", schema=None) as batch_op:
        batch_op.drop_column("confirmed_at")
