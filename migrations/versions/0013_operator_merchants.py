"""operator_merchants: operators for merchants, who see and act on those merchants' orders only

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operator_merchants",
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_operator_merchants_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_operator_merchants_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("operator_id", "merchant_id", name=op.f("pk_operator_merchants")),
    )


def downgrade() -> None:
    op.drop_table("operator_merchants")
