"""merchant_sites: the sites each merchant may order into (contracts)

Every merchant there is may order into every site there is, as before this revision; merchants
made from now on order only where they are allowed (`lockerctl allow-site`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "merchant_sites",
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_merchant_sites_merchant_id_merchants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_merchant_sites_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("merchant_id", "site_id", name=op.f("pk_merchant_sites")),
    )
    op.execute(
        "INSERT INTO merchant_sites (merchant_id, site_id) "
        "SELECT merchants.id, sites.id FROM merchants CROSS JOIN sites"
    )


def downgrade() -> None:
    op.drop_table("merchant_sites")
