"""food safety: a profile per site, a clock and a watch per order

Sites keep today's behaviour (`custom`: the service's settings) until an operator chooses a
jurisdiction's profile (`lockerctl set-food-profile`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases (SQLite 3.35+ drops columns in place): a batch copy
    # of `sites` would drop a table other tables point at.
    op.add_column(
        "sites",
        sa.Column("food_safety_profile", sa.String(16), nullable=False, server_default="custom"),
    )
    op.add_column("orders", sa.Column("cooked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("orders", sa.Column("food_deadline", sa.DateTime(timezone=True), nullable=True))
    op.add_column("orders", sa.Column("food_unsafe_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("orders", sa.Column("food_watch", sa.JSON(), nullable=True))


def downgrade() -> None:
    for column in ("food_watch", "food_unsafe_at", "food_deadline", "cooked_at"):
        op.drop_column("orders", column)
    op.drop_column("sites", "food_safety_profile")
