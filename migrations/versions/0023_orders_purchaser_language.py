"""orders: the language the purchaser reads her messages in

The merchant says it with the order (`purchaser_language`, ADR 0122): English or Simplified
Chinese. Orders written before it read English, as every message was.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "purchaser_language", sa.String(length=8), nullable=False, server_default="en"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("purchaser_language")
