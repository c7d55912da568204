"""couriers: when an operator last lifted the courier's login lockout

A courier locked out after wrong PINs, with the food in his hands, is an operator's alert; the
operator who knows it is him lifts the lockout, and his failures before that no longer count.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("couriers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lockout_lifted_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("couriers", schema=None) as batch_op:
        batch_op.drop_column("lockout_lifted_at")
