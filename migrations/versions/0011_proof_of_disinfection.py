"""proof of disinfection: each cycle's lamp record and dose, each compartment's lamp hours

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOUBLE = sa.Double()
REASON_LENGTH = 500  # locker_service.models.site.REASON_COLUMN_LENGTH when this was written


def upgrade() -> None:
    with op.batch_alter_table("disinfection_cycles") as batch:
        batch.add_column(sa.Column("commanded_s", DOUBLE, nullable=True))
        batch.add_column(sa.Column("lamp", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("dose_mj_cm2", DOUBLE, nullable=True))
        batch.add_column(sa.Column("dose_required_mj_cm2", DOUBLE, nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
    with op.batch_alter_table("compartments") as batch:
        batch.add_column(sa.Column("lamp_on_s", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lamp_fitted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lamp_fitted_by", sa.String(REASON_LENGTH), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("compartments") as batch:
        batch.drop_column("lamp_fitted_by")
        batch.drop_column("lamp_fitted_at")
        batch.drop_column("lamp_on_s")
    with op.batch_alter_table("disinfection_cycles") as batch:
        for column in ("outcome", "dose_required_mj_cm2", "dose_mj_cm2", "lamp", "commanded_s"):
            batch.drop_column(column)
