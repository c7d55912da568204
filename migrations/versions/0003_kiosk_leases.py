"""kiosk leases and service replicas: one replica handles each kiosk (ADR 0044)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_replicas",
        sa.Column("replica_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replica_id", name=op.f("pk_service_replicas")),
    )
    op.create_table(
        "kiosk_leases",
        sa.Column("kiosk_code", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("standby", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["kiosk_code"],
            ["kiosks.code"],
            name=op.f("fk_kiosk_leases_kiosk_code_kiosks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("kiosk_code", name=op.f("pk_kiosk_leases")),
    )


def downgrade() -> None:
    op.drop_table("kiosk_leases")
    op.drop_table("service_replicas")
