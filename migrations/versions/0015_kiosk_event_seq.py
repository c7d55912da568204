"""kiosk_events: the bridge's number of each event, and a kiosk's events newest first

A replica that takes a kiosk's lease reads how far the kiosk's record goes (ADR 0080): the `seq`
of the kiosk's newest rows, through an index on (kiosk_id, id) that replaces the one on kiosk_id
alone. Rows written before this revision have no number: a lease taken over them finds nothing
recorded and judges nothing stale, as before.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("kiosk_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch_op.create_index("ix_kiosk_events_kiosk_id_id", ["kiosk_id", "id"], unique=False)
        batch_op.drop_index(batch_op.f("ix_kiosk_events_kiosk_id"))


def downgrade() -> None:
    with op.batch_alter_table("kiosk_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kiosk_events_kiosk_id"), ["kiosk_id"], unique=False)
        batch_op.drop_index("ix_kiosk_events_kiosk_id_id")
        batch_op.drop_column("seq")
