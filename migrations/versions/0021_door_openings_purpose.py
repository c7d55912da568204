"""door_openings: what an operator opened a compartment for (hand over, discard, inspect)

An operator's remote opening says what it is for (ADR 0120): handing the food to the purchaser,
taking it out to discard it, or looking in and shutting it again. The door's closing on an empty
compartment then ends the order as the operator said, not as the service guessed from the
compartment's fault. NULL for every other opening, and for an operator's opening made before
the column existed or through the API without one (the service infers it as before).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("door_openings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purpose", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("door_openings", schema=None) as batch_op:
        batch_op.drop_column("purpose")
